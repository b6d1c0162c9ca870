"""Small generated experiments shared by the training tests."""

import os

import numpy as np

from shrewd_tf.data import pipelines as inputs
from shrewd_tf.semantics import wordnet_corpus
from tests.support.records import write_shards

# Four classes: two pairs of near neighbours (0~1, 2~3), far across pairs.
CLASS_DISTANCES = np.array(
    [
        [0.0, 0.2, 0.8, 0.8],
        [0.2, 0.0, 0.8, 0.8],
        [0.8, 0.8, 0.0, 0.2],
        [0.8, 0.8, 0.2, 0.0],
    ]
)


def make_data(train=256, test=96, size=12, channels=1, seed=0):
    """Images whose class is a bright quadrant, plus noise (uint8)."""
    rng = np.random.default_rng(seed)

    def split(count):
        labels = rng.integers(0, 4, count)
        images = rng.integers(0, 60, (count, size, size, channels))
        half = size // 2
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] += 180
        return images.astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = split(train)
    test_x, test_y = split(test)
    mean = train_x.reshape(-1, channels).mean(0).astype(np.float32)
    std = train_x.reshape(-1, channels).std(0).astype(np.float32)
    return inputs.ExperimentData.from_arrays(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        mean=mean,
        std=std,
        class_names=["a", "b", "c", "d"],
        class_distances=CLASS_DISTANCES,
    )


def numpy_target_distances(embeddings, metric):
    """Reference pairwise target distances: 1 - cos or Euclidean, zero diagonal."""
    embeddings = np.asarray(embeddings, np.float64)
    if metric == "cosine":
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        targets = 1.0 - unit @ unit.T
    else:
        targets = np.linalg.norm(
            embeddings[:, None] - embeddings[None], axis=-1
        )
    np.fill_diagonal(targets, 0.0)
    return targets


def make_fake_source(directory, skip=()):
    """Tiny stand-ins for the Debian WordNet files (the build does not parse
    them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in wordnet_corpus.WORDNET_DATA_FILES:
        if name not in skip:
            (directory / name).write_text(f"fake {name}\n")
    return directory


# === TFRecord directories (the make_tfrecords layout) ===


def class_images(labels, size, channels, rng):
    """uint8 [N, size, size, C]: a bright quadrant per class (4 classes)
    over noise, like `make_data`."""
    images = rng.integers(0, 60, (len(labels), size, size, channels))
    half = size // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label) % 4, 2)
        images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] += 180
    return images.astype(np.uint8)


def fake_caption_embeddings(labels, dim=16, noise=0.3, seed=0):
    """Cheap deterministic caption embeddings: a fixed random unit vector
    per class plus Gaussian noise, L2-normalised (float32 [N, dim])."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(max(labels) + 1, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def write_tfrecord_dir(
    directory, train=128, test=64, size=8, channels=1,
    class_names=("a", "b", "c", "d"), labelled=True, embedding_dim=16,
    source="", shards=2, seed=0,
):
    """Writes a tiny `make_tfrecords`-style directory and returns its
    content as numpy arrays, {split: {images, labels, ids, captions,
    embeddings}} in shard order.

    Images show their class as a bright quadrant; captions name the class
    and a variant; embeddings are `fake_caption_embeddings` (None with
    embedding_dim=None). Unlabelled records (labelled=False) keep their
    hidden class in images and captions but are written with label -1,
    no label name, and the directory has no class names.
    """
    from shrewd_tf.data import records as data_lib

    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    written = {}
    for split_index, (split, count) in enumerate(
        (("train", train), ("test", test))
    ):
        classes = rng.integers(0, num_classes, count)
        images = class_images(classes, size, channels, rng)
        embeddings = None
        if embedding_dim:
            embeddings = fake_caption_embeddings(
                classes, embedding_dim, seed=seed + 10 + split_index
            )
        ids = np.asarray([f"{split}/{i:05d}" for i in range(count)])
        captions = np.asarray(
            [f"a picture of {class_names[c]} number {i}"
             for i, c in enumerate(classes)] if embedding_dim
            else [""] * count
        )
        labels = classes if labelled else np.full(count, data_lib.NO_LABEL)
        bounds = np.linspace(0, count, shards + 1).astype(int)
        records = [
            data_lib.ImageRecord(
                id=str(ids[i]),
                image=data_lib.encode_png(images[i]),
                label=int(labels[i]),
                label_name=class_names[classes[i]] if labelled else "",
                caption=str(captions[i]),
                caption_embedding=(
                    None if embeddings is None else embeddings[i]
                ),
            )
            for i in range(count)
        ]
        write_shards(
            directory, split,
            [records[bounds[s]:bounds[s + 1]] for s in range(shards)],
        )
        written[split] = {
            "images": images, "labels": labels.astype(np.int64), "ids": ids,
            "captions": captions, "embeddings": embeddings, "classes": classes,
        }
    data_lib.DatasetInfo(
        image_shape=(size, size, channels),
        class_names=tuple(class_names) if labelled else (),
        splits={"train": train, "test": test},
        embedding_dim=embedding_dim,
        text_encoder="fake" if embedding_dim else "",
        source=source,
    ).save(directory)
    return written


# === Reading an experiment's streams back (small data only) ===


def train_arrays(data):
    """The training stream of `inputs.ExperimentData`, unshuffled, as
    {"images": uint8 [N, H, W, C], "labels": int64 [N] or None,
    "embeddings": float32 [N, E] or None} (held-out classes removed)."""
    images, labels, embeddings = [], [], []
    for image, targets in data.train_examples(shuffle=False).as_numpy_iterator():
        images.append(image)
        if isinstance(targets, dict):
            embeddings.append(targets[inputs.EMBEDDING_TARGETS])
            if inputs.LABEL_TARGETS in targets:
                labels.append(targets[inputs.LABEL_TARGETS])
        else:
            labels.append(targets)
    return {
        "images": np.stack(images),
        "labels": np.asarray(labels, np.int64) if labels else None,
        "embeddings": np.stack(embeddings) if embeddings else None,
    }


def split_test_images(data):
    """uint8 [M, H, W, C]: the test stream of `inputs.ExperimentData`."""
    return np.stack([e["image"] for e in data.test.examples().as_numpy_iterator()])

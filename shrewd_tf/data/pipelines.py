"""From a `DataConfig` to what training and evaluation consume.

`load_experiment_data` returns the training `tf.data` pipeline, the
evaluation images/labels (queries = database, query excluded, as in Barz &
Denzler), the class names and the C x C class-distance matrix that the
similarity loss and mAHP use; for TFRecord directories with captions also
the caption embeddings (targets of the caption losses and of the
caption-supervised metrics).

Sources: Fashion-MNIST IDX files, prepared tfds builders, and TFRecord
directories written by `python -m pipeline.make_tfrecords`
(`dataset="tfrecords"`, `data_dir` = the directory). Every source is
materialised into memory (fine up to CIFAR scale, ~50k small images);
streaming ImageNet-scale TFRecords straight into `fit` is not done here.
"""

import dataclasses
import logging
import re

import numpy as np

from shrewd_tf.data import preprocess
from shrewd_tf.data import records as data_lib
from shrewd_tf.data import tfds_sources as datasets

log = logging.getLogger(__name__)

TFRECORDS = "tfrecords"
CAPTIONS = "captions"
# Keys of the target dict `ExperimentData.train_dataset` yields with captions.
LABEL_TARGETS = "labels"
EMBEDDING_TARGETS = "embeddings"
# A WordNet synset name: lemma.pos.nn, e.g. "dog.n.01", "gym_shoe.n.01".
SYNSET_NAME = re.compile(r"^\S+\.[nvasr]\.\d+$")


@dataclasses.dataclass
class ExperimentData:
    """Arrays and pipelines of one experiment.

    Attributes:
        train_images: uint8 [N, H, W, C] training images (held-out classes
            removed).
        train_labels: int64 [N]; all `data.NO_LABEL` (-1) when unlabelled.
        test_images: uint8 [M, H, W, C], the query/database set.
        test_labels: int64 [M]; all -1 when unlabelled.
        mean, std: float32 [C] training channel statistics (pixel units).
        class_names: list of C names, in label order ([] when unlabelled).
        class_distances: float64 [C, C], zero diagonal, in [0, 1] for
            WUP/LCS, in [0, 2] for "bert" (1 - cos); None for semantics="captions" (the similarity loss
            then compares caption embeddings).
        train_embeddings: float32 [N, E] caption embeddings, or None.
        test_embeddings: float32 [M, E], or None.
        test_ids: str [M] record ids (TFRecords), or None.
        test_captions: str [M] captions (TFRecords), or None.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    class_distances: np.ndarray | None
    train_embeddings: np.ndarray | None = None
    test_embeddings: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    test_captions: np.ndarray | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        return tuple(self.train_images.shape[1:])

    @property
    def labelled(self):
        """Whether every image has a class (class losses/metrics possible)."""
        return bool(self.class_names) and bool(
            np.all(self.train_labels >= 0) and np.all(self.test_labels >= 0)
        )

    @property
    def embedding_dim(self):
        """Caption embedding size E, or None without captions."""
        if self.train_embeddings is None:
            return None
        return int(self.train_embeddings.shape[1])

    @property
    def caption_targets(self):
        """Whether the similarity loss targets caption embeddings (no class
        distances) rather than class distances of labels."""
        return self.class_distances is None

    def train_dataset(self, global_batch_size, seed=0, augment=False):
        """Shuffled, (optionally) augmented batches; drops the remainder.

        Yields (images float32 [B, H, W, C], targets): targets are the int64
        labels [B] without caption embeddings (the class-label path), and
        with them a dict {"embeddings": float32 [B, E]} plus "labels"
        int64 [B] when the data is labelled.
        """
        if self.train_embeddings is None:
            return datasets.make_image_dataset(
                self.train_images,
                self.train_labels,
                global_batch_size=global_batch_size,
                training=True,
                mean=self.mean,
                std=self.std,
                augment=augment,
                seed=seed,
            )
        import tensorflow as tf

        # The pipeline carries row indices (shuffled with the images) and
        # the targets are gathered per batch: make_image_dataset takes one
        # target array, not a dict.
        targets = {
            EMBEDDING_TARGETS: tf.constant(self.train_embeddings, tf.float32)
        }
        if self.labelled:
            targets[LABEL_TARGETS] = tf.constant(self.train_labels, tf.int64)
        rows = np.arange(len(self.train_images), dtype=np.int64)
        dataset = datasets.make_image_dataset(
            self.train_images,
            rows,
            global_batch_size=global_batch_size,
            training=True,
            mean=self.mean,
            std=self.std,
            augment=augment,
            seed=seed,
        )
        return dataset.map(
            lambda images, batch_rows: (
                images,
                {
                    name: tf.gather(values, batch_rows)
                    for name, values in targets.items()
                },
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def eval_dataset(self, images, batch_size=512):
        """Standardised images in order, no labels needed downstream."""
        return datasets.make_image_dataset(
            images,
            np.zeros(len(images), np.int64),
            global_batch_size=batch_size,
            training=False,
            mean=self.mean,
            std=self.std,
        )


def _subset(images, labels, count):
    if count is None or count >= len(labels):
        return images, labels
    return images[:count], labels[:count]


def load_arrays(data_config):
    """Loads (train_images, train_labels, test_images, test_labels, names).

    Fashion-MNIST comes from the Debian IDX files; cifar100 and imagenet2012
    from tfds under `data_dir` (prepared by the user, never downloaded);
    "tfrecords" from a `make_tfrecords` directory (`load_tfrecord_splits`,
    which also gives captions and embeddings). With `data.image_size`,
    images go through `preprocess.preprocess_image` (the exported model's
    preprocessing) to that size. All are materialised into
    memory, which suits CIFAR-100; ImageNet-scale data would need a
    streaming pipeline, which is not implemented.
    """
    name = data_config.dataset
    if name == TFRECORDS:
        info, train, test = load_tfrecord_splits(data_config)
        return (train["images"], train["labels"], test["images"],
                test["labels"], list(info.class_names))
    if name == "fashion_mnist":
        kwargs = {}
        if data_config.data_dir:
            kwargs["data_dir"] = data_config.data_dir
        train, test = (
            datasets.load_fashion_mnist(split, **kwargs)
            for split in ("train", "test")
        )
        if data_config.image_size is not None:
            train, test = (
                (_preprocess_arrays(images, data_config.image_size), labels)
                for images, labels in (train, test)
            )
        names = list(datasets.FASHION_MNIST_CLASS_NAMES)
    elif name in ("cifar100", "imagenet2012"):
        if not data_config.data_dir:
            raise ValueError(
                f"dataset {name!r} needs data.data_dir (a prepared tfds "
                "data_dir; nothing is downloaded). Received: data_dir=None"
            )
        train = _materialise(
            datasets.load_tfds(name, "train", data_config.data_dir),
            data_config.image_size,
        )
        split = "test" if name == "cifar100" else "validation"
        test = _materialise(
            datasets.load_tfds(name, split, data_config.data_dir),
            data_config.image_size,
        )
        from shrewd_tf.semantics import class_synsets

        names = (
            list(class_synsets.CIFAR100_CLASSES)
            if name == "cifar100"
            else class_synsets.imagenet_wnids()
        )
    else:
        raise ValueError(
            "Unknown dataset; expected fashion_mnist, cifar100, "
            f"imagenet2012 or tfrecords. Received: dataset={name!r}"
        )
    train_images, train_labels = _subset(*train, data_config.train_subset)
    test_images, test_labels = _subset(*test, data_config.test_subset)
    return train_images, train_labels, test_images, test_labels, names


def _materialise(dataset, image_size):
    """(image, label) pairs -> uint8 [N, H, W, C], int64 [N]; with
    `image_size`, every image goes through `preprocess.preprocess_image`."""
    if image_size is not None:
        channels = dataset.element_spec[0].shape[-1]
        shape = (*(int(s) for s in image_size), int(channels))
        dataset = dataset.map(
            lambda image, label: (
                preprocess.preprocess_image(image, shape),
                label,
            )
        )
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def _preprocess_arrays(images, image_size, batch_size=1024):
    """uint8 [N, h, w, C] -> uint8 [N, H, W, C] by
    `preprocess.preprocess_image`, a batch at a time."""
    shape = (*(int(s) for s in image_size), int(images.shape[-1]))
    if tuple(images.shape[1:]) == shape:
        return images
    parts = [
        preprocess.preprocess_image(
            images[start : start + batch_size], shape
        ).numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *shape), np.uint8)


def load_tfrecord_splits(data_config):
    """Reads the "train" and "test" splits of a `make_tfrecords` directory.

    Both are materialised with `data.load_split_arrays` (shard order) and
    cut to `train_subset`/`test_subset`. With `image_size`, each stored
    image is decoded straight to that size (`preprocess.preprocess_image`,
    one resize). Records that `make_tfrecords` already resized to another
    size are then resized twice, which the exported model, resizing a
    client's original image once, does not repeat: write the records at
    the training size.

    Returns:
        (info, train, test): the `data.DatasetInfo` and two dicts of
        `load_split_arrays` arrays (images, labels, ids, captions,
        embeddings or None).

    Raises:
        ValueError: no `data_dir`, `tfrecord_pattern` set, or a split
            missing from `dataset_info.json`.
        FileNotFoundError: no `dataset_info.json` or no shards.
    """
    directory = data_config.data_dir
    if data_config.tfrecord_pattern:
        raise ValueError(
            "data.tfrecord_pattern is not read: dataset='tfrecords' reads "
            "the shards described by dataset_info.json in data.data_dir. "
            f"Received: tfrecord_pattern={data_config.tfrecord_pattern!r}"
        )
    if not directory:
        raise ValueError(
            "dataset='tfrecords' needs data.data_dir, a directory written by "
            "`python -m pipeline.make_tfrecords`. Received: data_dir=None"
        )
    info = data_lib.DatasetInfo.load(directory)
    missing = [s for s in ("train", "test") if s not in info.splits]
    if missing:
        raise ValueError(
            f"{directory}: dataset_info.json lacks splits {missing}; training "
            f"needs 'train' and 'test'. Received: splits={sorted(info.splits)}"
        )
    subsets = {
        "train": data_config.train_subset, "test": data_config.test_subset
    }
    image_shape = tuple(info.image_shape)
    if data_config.image_size is not None:
        image_shape = (*(int(s) for s in data_config.image_size),
                       image_shape[2])
        if image_shape != tuple(info.image_shape):
            log.warning(
                "%s: data.image_size %s differs from the records' image "
                "shape %s: images stored resized are resized again, so "
                "served codes of original images may differ slightly from "
                "evaluation codes; write the records at the training size",
                directory, tuple(data_config.image_size),
                tuple(info.image_shape),
            )
    splits = []
    for split, count in subsets.items():
        arrays = data_lib.load_split_arrays(
            directory, split, info, image_shape=image_shape
        )
        if count is not None:
            arrays = {
                key: None if value is None else value[:count]
                for key, value in arrays.items()
            }
        splits.append(arrays)
    log.info(
        "read %s: %d train, %d test records, %d classes, embedding size %s",
        directory, len(splits[0]["labels"]), len(splits[1]["labels"]),
        len(info.class_names), info.embedding_dim,
    )
    return info, splits[0], splits[1]


def _labelled(directory, class_names, train_labels, test_labels):
    """Whether a TFRecord directory's splits are fully labelled.

    Labels outside [-1, C) are an error; records with label -1 among
    labelled ones, or labels without class names, make the data
    unlabelled (with a warning): the class losses and metrics are then off.
    """
    labels = np.concatenate([train_labels, test_labels])
    if class_names and labels.max() >= len(class_names):
        raise ValueError(
            f"{directory}: labels must be in [-1, {len(class_names)}) for "
            f"the {len(class_names)} class names of dataset_info.json. "
            f"Received: max label {int(labels.max())}"
        )
    unlabelled = int(np.sum(labels == data_lib.NO_LABEL))
    if class_names and unlabelled:
        log.warning(
            "%s: %d of %d records have no label (-1): the data is treated "
            "as unlabelled (no class losses or class metrics)",
            directory, unlabelled, labels.size,
        )
    elif not class_names and unlabelled < labels.size:
        log.warning(
            "%s: labels without class names in dataset_info.json are "
            "ignored", directory,
        )
    return bool(class_names) and not unlabelled


def _read_synsets_file(path, class_names):
    with open(path) as f:
        synsets = [
            line.strip() for line in f
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if len(synsets) != len(class_names):
        raise ValueError(
            f"{path}: expected one synset per class ({len(class_names)}). "
            f"Received: {len(synsets)} synsets"
        )
    return synsets


def known_dataset(source):
    """The `class_synsets.DATASET_NAMES` entry a source string names.

    Matches whole words, "-" read as "_": "fashion_mnist",
    "tfds:cifar100", "/usr/share/datasets/fashion-mnist" all name a
    dataset. Returns None if none does.
    """
    from shrewd_tf.semantics import class_synsets

    words = re.split(r"[^a-z0-9_]+", str(source).lower().replace("-", "_"))
    return next((w for w in words if w in class_synsets.DATASET_NAMES), None)


def _known_class_names(dataset):
    from shrewd_tf.semantics import class_synsets

    if dataset == "fashion_mnist":
        return list(class_synsets.FASHION_MNIST_CLASSES)
    if dataset == "cifar100":
        return list(class_synsets.CIFAR100_CLASSES)
    return class_synsets.imagenet_wnids()


def class_synsets_for(data_config, class_names, source=""):
    """One WordNet synset name per class, in label order.

    Resolution, first match wins:

    1. `data_config.class_synsets_file` (one synset per line);
    2. `data_config.dataset` is a known dataset (fashion_mnist, cifar100,
       imagenet2012): its curated synsets;
    3. `source` (a TFRecord directory's `DatasetInfo.source`) names a known
       dataset: its synsets, looked up by class name (so a subset or
       reordering of its classes works; an unknown name is an error);
    4. every class name is a synset name ("dog.n.01"): the names.

    Raises:
        ValueError: nothing matches (the message says what to give).
    """
    from shrewd_tf.semantics import class_synsets

    if data_config.class_synsets_file:
        return _read_synsets_file(data_config.class_synsets_file, class_names)
    if data_config.dataset in class_synsets.DATASET_NAMES:
        return class_synsets.synsets_for(data_config.dataset)
    dataset = known_dataset(source)
    if dataset is not None:
        known = _known_class_names(dataset)
        unknown = [n for n in class_names if n not in known]
        if unknown:
            raise ValueError(
                f"dataset_info.json source {source!r} names {dataset!r}, but "
                f"classes {unknown[:5]} are not among its class names; give "
                "data.class_synsets_file (one synset per line, label order). "
                f"Received: class_names={list(class_names)[:5]}"
            )
        synsets = class_synsets.synsets_for(dataset)
        return [synsets[known.index(n)] for n in class_names]
    if class_names and all(SYNSET_NAME.match(n) for n in class_names):
        return list(class_names)
    raise ValueError(
        f"semantics={data_config.semantics!r} needs a WordNet synset per "
        f"class, but the source ({source!r}) names no known dataset "
        f"({', '.join(class_synsets.DATASET_NAMES)}) and the class names "
        "are not synset names (like 'dog.n.01'). Give "
        "data.class_synsets_file (one synset per line, in label order) or "
        "train on the captions with semantics='captions'. Received: "
        f"class_names={list(class_names)[:5]}"
    )


def _load_class_distances(path, num_classes):
    """A precomputed [C, C] matrix, checked (square, C, finite, >= 0)."""
    matrix = np.load(path)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"{path}: expected a [{num_classes}, {num_classes}] class-distance "
            f"matrix for the {num_classes} classes. Received: shape={matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError(f"{path}: class distances must be finite and >= 0")
    return matrix.astype(np.float64)


def class_distance_matrix(data_config, class_names, source=""):
    """The C x C target distances named by `data_config.semantics`.

    "wup": 1 - Wu-Palmer similarity of each class's WordNet synset
    (`class_synsets_for`); "lcs": LCS height on `hierarchy_file` with
    `class_names_file`; "bert": cosine distance between sentence embeddings
    of the synsets' WordNet definitions (the paper's BERT variant, here
    with the default sentence encoder); "captions": None (the similarity
    loss compares caption embeddings instead).

    Args:
        data_config: `config.DataConfig`.
        class_names: C names in label order.
        source: `DatasetInfo.source` of a TFRecord directory ("" otherwise).
    """
    from shrewd_tf.semantics import distances as semantics

    kind = data_config.semantics
    if kind == CAPTIONS:
        return None
    if data_config.class_distances_file:
        return _load_class_distances(data_config.class_distances_file, len(class_names))
    if kind in ("wup", "bert"):
        synsets = class_synsets_for(data_config, class_names, source)
        if kind == "wup":
            return semantics.wup_distance_matrix(synsets)
        from shrewd_tf.text import encoder as text

        definitions = semantics.synset_definitions(synsets)
        embeddings = text.SentenceEncoder().encode(definitions)
        return semantics.embedding_distance_matrix(embeddings, "cosine")
    if kind == "lcs":
        if not (data_config.hierarchy_file and data_config.class_names_file):
            raise ValueError(
                "semantics='lcs' needs data.hierarchy_file and "
                "data.class_names_file. Received: "
                f"hierarchy_file={data_config.hierarchy_file!r}, "
                f"class_names_file={data_config.class_names_file!r}"
            )
        edges = semantics.read_parent_child_edges(data_config.hierarchy_file)
        ids = _class_ids_in_label_order(data_config.class_names_file, class_names)
        return semantics.lcs_height_distance_matrix(edges, ids)
    raise ValueError(
        "Unknown semantics; expected wup, lcs, bert or captions. "
        f"Received: semantics={kind!r}"
    )


def _class_ids_in_label_order(path, class_names):
    """Maps `id name` lines to the tree node ids of `class_names`."""
    by_name = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(
                    f"{path}:{line_number}: expected 'id name'. "
                    f"Received: {line.rstrip()!r}"
                )
            by_name[parts[1]] = parts[0]
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ValueError(f"{path}: no node id for classes {missing[:5]}")
    return [by_name[n] for n in class_names]


def _load_splits(data_config):
    """(train, test, class names, source, labelled); splits are dicts of
    arrays with None for what the source lacks."""
    if data_config.dataset == TFRECORDS:
        info, train, test = load_tfrecord_splits(data_config)
        names = list(info.class_names)
        labelled = _labelled(
            data_config.data_dir, names, train["labels"], test["labels"]
        )
        if not labelled:
            names = []
            for split in (train, test):
                split["labels"] = np.full_like(
                    split["labels"], data_lib.NO_LABEL
                )
        return train, test, names, info.source, labelled
    train_x, train_y, test_x, test_y, names = load_arrays(data_config)
    train = {"images": train_x, "labels": train_y, "embeddings": None}
    test = {"images": test_x, "labels": test_y, "embeddings": None,
            "ids": None, "captions": None}
    return train, test, names, "", True


def load_experiment_data(data_config):
    """Loads arrays, removes held-out classes, computes statistics/distances.

    Held-out classes (zero-shot) are removed from the training set only; the
    test set keeps them so they can be retrieved.

    Raises:
        ValueError: semantics that the data cannot give (class semantics on
            unlabelled records, "captions" without caption embeddings),
            held-out classes out of range or on unlabelled data.
    """
    train, test, names, source, labelled = _load_splits(data_config)
    kind = data_config.semantics
    if kind == CAPTIONS and train["embeddings"] is None:
        raise ValueError(
            "semantics='captions' needs caption embeddings: a TFRecord "
            "directory (dataset='tfrecords') written with captions and a "
            f"text encoder. Received: dataset={data_config.dataset!r} "
            "without caption embeddings"
        )
    if kind != CAPTIONS and not labelled:
        raise ValueError(
            f"The records in {data_config.data_dir} are unlabelled (label "
            f"-1, no class names), so semantics={kind!r} has no classes to "
            "compare; use semantics='captions' (targets from the caption "
            "embeddings)."
        )
    holdout = tuple(int(c) for c in data_config.holdout_classes)
    bad = [c for c in holdout if not 0 <= c < len(names)]
    if bad:
        raise ValueError(
            f"holdout_classes must be class ids in [0, {len(names)}) "
            f"(labelled data). Received: holdout_classes={holdout}"
        )
    if holdout:
        keep = ~np.isin(train["labels"], holdout)
        train = {k: None if v is None else v[keep] for k, v in train.items()}
        log.info(
            "held out classes %s: %d training images left",
            holdout, len(train["labels"]),
        )
    mean, std = datasets.channel_statistics(train["images"])
    distances = class_distance_matrix(data_config, names, source)
    return ExperimentData(
        train_images=train["images"],
        train_labels=train["labels"],
        test_images=test["images"],
        test_labels=test["labels"],
        mean=mean,
        std=std,
        class_names=names,
        class_distances=distances,
        train_embeddings=train["embeddings"],
        test_embeddings=test["embeddings"],
        test_ids=test["ids"],
        test_captions=test["captions"],
    )

"""From a `DataConfig` to what training and evaluation consume.

`load_experiment_data` returns the training `tf.data` pipeline, the
evaluation images/labels (queries = database, query excluded, as in Barz &
Denzler), the class names and the C x C class-distance matrix that the
similarity loss and mAHP use; for TFRecord directories with captions also
the caption embeddings (targets of the caption losses and of the
caption-supervised metrics).

Sources: Fashion-MNIST IDX files and prepared tfds builders
(`tfds_sources`), and TFRecord directories written by `python -m
pipeline.make_tfrecords` (`tfrecord_splits`). Every source is materialised
into memory (fine up to CIFAR scale, ~50k small images); streaming
ImageNet-scale TFRecords straight into `fit` is not done here. The class
distances come from `class_semantics`, the `tf.data` pipelines from
`image_dataset.make_image_dataset`.
"""

import dataclasses
import logging

import numpy as np

from shrewd_tf.data import class_semantics
from shrewd_tf.data import image_dataset
from shrewd_tf.data import preprocess
from shrewd_tf.data import records as data_lib
from shrewd_tf.data import tfds_sources as datasets
from shrewd_tf.data.tfrecord_splits import labelled_splits
from shrewd_tf.data.tfrecord_splits import load_tfrecord_splits

log = logging.getLogger(__name__)

TFRECORDS = "tfrecords"
CAPTIONS = class_semantics.CAPTIONS
# Keys of the target dict `ExperimentData.train_dataset` yields with captions.
LABEL_TARGETS = "labels"
EMBEDDING_TARGETS = "embeddings"


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
            WUP/LCS, in [0, 2] for "bert" (1 - cos); None for
            semantics="captions" (the similarity loss then compares
            caption embeddings).
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
            return image_dataset.make_image_dataset(
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
        dataset = image_dataset.make_image_dataset(
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
        return image_dataset.make_image_dataset(
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


def _load_splits(data_config):
    """(train, test, class names, source, labelled); splits are dicts of
    arrays with None for what the source lacks."""
    if data_config.dataset == TFRECORDS:
        info, train, test = load_tfrecord_splits(data_config)
        names = list(info.class_names)
        labelled = labelled_splits(
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
    mean, std = image_dataset.channel_statistics(train["images"])
    distances = class_semantics.class_distance_matrix(
        data_config, names, source)
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


"""From a `DataConfig` to what training and evaluation consume.

`load_experiment_data` returns the training `tf.data` pipeline, the
evaluation images/labels (queries = database, query excluded, as in Barz &
Denzler), the class names and the C x C class-distance matrix that the
similarity loss and mAHP use.
"""

import dataclasses
import logging

import numpy as np

from shrewd_tf import datasets

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExperimentData:
    """Arrays and pipelines of one experiment.

    Attributes:
        train_images: uint8 [N, H, W, C] training images (held-out classes
            removed).
        train_labels: int64 [N].
        test_images: uint8 [M, H, W, C], the query/database set.
        test_labels: int64 [M].
        mean, std: float32 [C] training channel statistics.
        class_names: list of C names, in label order.
        class_distances: float64 [C, C], zero diagonal, in [0, 1] for
            WUP/LCS.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    class_distances: np.ndarray

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        return tuple(self.train_images.shape[1:])

    def train_dataset(self, global_batch_size, seed=0, augment=False):
        """Shuffled, (optionally) augmented batches; drops the remainder."""
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
    from tfds under `data_dir` (prepared by the user, never downloaded) —
    these are materialised into memory, which suits CIFAR-100; ImageNet
    should go through TFRecords and the streaming pipeline instead.
    """
    name = data_config.dataset
    if name == "fashion_mnist":
        kwargs = {}
        if data_config.data_dir:
            kwargs["data_dir"] = data_config.data_dir
        train = datasets.load_fashion_mnist("train", **kwargs)
        test = datasets.load_fashion_mnist("test", **kwargs)
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
        from shrewd_tf import class_synsets

        names = (
            list(class_synsets.CIFAR100_CLASSES)
            if name == "cifar100"
            else class_synsets.imagenet_wnids()
        )
    else:
        raise ValueError(
            "Unknown dataset; expected fashion_mnist, cifar100 or "
            f"imagenet2012. Received: dataset={name!r}"
        )
    train_images, train_labels = _subset(*train, data_config.train_subset)
    test_images, test_labels = _subset(*test, data_config.test_subset)
    return train_images, train_labels, test_images, test_labels, names


def _materialise(dataset, image_size):
    import tensorflow as tf

    if image_size is not None:
        size = tuple(image_size)
        dataset = dataset.map(
            lambda image, label: (
                tf.cast(tf.image.resize(image, size), tf.uint8),
                label,
            )
        )
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def class_distance_matrix(data_config, class_names):
    """The C x C target distances named by `data_config.semantics`.

    "wup": 1 - Wu-Palmer similarity of each class's curated WordNet synset;
    "lcs": LCS height on `hierarchy_file` with `class_names_file`;
    "bert": cosine distance between sentence embeddings of the synsets'
    WordNet definitions (the paper's BERT variant, here with the default
    sentence encoder).
    """
    from shrewd_tf import semantics

    kind = data_config.semantics
    if kind in ("wup", "bert"):
        from shrewd_tf import class_synsets

        synsets = class_synsets.synsets_for(data_config.dataset)
        if kind == "wup":
            return semantics.wup_distance_matrix(synsets)
        from shrewd_tf import text

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
        "Unknown semantics; expected wup, lcs or bert. "
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


def load_experiment_data(data_config):
    """Loads arrays, removes held-out classes, computes statistics/distances.

    Held-out classes (zero-shot) are removed from the training set only; the
    test set keeps them so they can be retrieved.
    """
    train_x, train_y, test_x, test_y, names = load_arrays(data_config)
    holdout = tuple(int(c) for c in data_config.holdout_classes)
    bad = [c for c in holdout if not 0 <= c < len(names)]
    if bad:
        raise ValueError(
            f"holdout_classes must be class ids in [0, {len(names)}). "
            f"Received: holdout_classes={holdout}"
        )
    if holdout:
        keep = ~np.isin(train_y, holdout)
        train_x, train_y = train_x[keep], train_y[keep]
        log.info("held out classes %s: %d training images left", holdout, len(train_y))
    mean, std = datasets.channel_statistics(train_x)
    distances = class_distance_matrix(data_config, names)
    return ExperimentData(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        mean=mean,
        std=std,
        class_names=names,
        class_distances=distances,
    )

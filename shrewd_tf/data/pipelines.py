"""From a `DataConfig` to what training and evaluation consume.

`load_experiment_data` returns an `ExperimentData`: the train and test
splits as streams (`sources.SplitSource`: TFRecord shards, a tfds builder,
or in-memory arrays), the training channel statistics, the class names
and the C x C class-distance matrix that the similarity loss and mAHP use,
and the test split's per-record metadata (labels, caption embeddings, ids,
captions), which evaluation keeps beside the codes. No split's images are
held in memory (except sources that are arrays already): training batches
and evaluation batches are streamed, decoded in the graph by the one
preprocessing function.

Sources: Fashion-MNIST IDX files (`tfds_sources.load_fashion_mnist`,
arrays), prepared tfds builders (`tfds_sources.TfdsSource`) and TFRecord
directories written by `python -m pipeline.make_tfrecords`
(`tfrecord_splits.record_sources`). The class distances come from
`class_semantics`, the batches from `image_dataset.make_image_dataset`.
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from shrewd_tf.data import class_semantics
from shrewd_tf.data import image_dataset
from shrewd_tf.data import records as data_lib
from shrewd_tf.data import sources as sources_lib
from shrewd_tf.data import tfds_sources as datasets
from shrewd_tf.data.tfrecord_splits import labelled_splits
from shrewd_tf.data.tfrecord_splits import record_sources

log = logging.getLogger(__name__)

TFRECORDS = "tfrecords"
CAPTIONS = class_semantics.CAPTIONS
# Keys of the target dict `ExperimentData.train_dataset` yields with captions.
LABEL_TARGETS = "labels"
EMBEDDING_TARGETS = "embeddings"
EVAL_BATCH = 512


@dataclasses.dataclass
class ExperimentData:
    """The splits and targets of one experiment.

    Attributes:
        train: the training split (`sources.SplitSource`); the
            `holdout_classes` are filtered out of its stream.
        test: the test split, the query/database set.
        train_count: training records per epoch (held-out classes removed).
        test_labels: int64 [M]; all `data.NO_LABEL` (-1) when unlabelled.
        mean, std: float32 [C] training channel statistics (pixel units).
        class_names: list of C names, in label order ([] when unlabelled).
        class_distances: float64 [C, C], zero diagonal, in [0, 1] for
            WUP/LCS, in [0, 2] for "bert" (1 - cos); None for
            semantics="captions" (the similarity loss then compares
            caption embeddings).
        labelled: whether every image has a class (class losses/metrics
            possible).
        holdout_classes: class ids removed from training (zero-shot).
        test_embeddings: float32 [M, E] caption embeddings, or None.
        test_ids: str [M] record ids (TFRecords), or None.
        test_captions: str [M] captions (TFRecords), or None.
    """

    train: sources_lib.SplitSource
    test: sources_lib.SplitSource
    train_count: int
    test_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    class_distances: np.ndarray | None
    labelled: bool = True
    holdout_classes: tuple = ()
    test_embeddings: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    test_captions: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, train_images, train_labels, test_images,
                    test_labels, mean, std, class_names, class_distances,
                    train_embeddings=None, test_embeddings=None,
                    test_ids=None, test_captions=None, labelled=None):
        """An experiment over in-memory arrays (`sources.ArraySource`)."""
        train_labels = np.asarray(train_labels, np.int64)
        test_labels = np.asarray(test_labels, np.int64)
        if labelled is None:
            labelled = bool(class_names) and bool(
                np.all(train_labels >= 0) and np.all(test_labels >= 0))
        return cls(
            train=sources_lib.ArraySource(train_images, train_labels,
                                          embeddings=train_embeddings),
            test=sources_lib.ArraySource(
                test_images, test_labels, embeddings=test_embeddings,
                ids=test_ids, captions=test_captions),
            train_count=len(train_labels), test_labels=test_labels,
            mean=np.asarray(mean, np.float32),
            std=np.asarray(std, np.float32), class_names=list(class_names),
            class_distances=class_distances, labelled=labelled,
            test_embeddings=test_embeddings, test_ids=test_ids,
            test_captions=test_captions,
        )

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        return tuple(self.train.image_shape)

    @property
    def embedding_dim(self):
        """Caption embedding size E, or None without captions."""
        return self.train.embedding_dim

    @property
    def caption_targets(self):
        """Whether the similarity loss targets caption embeddings (no class
        distances) rather than class distances of labels."""
        return self.class_distances is None

    def _targets(self, example):
        if self.embedding_dim is None:
            return example[sources_lib.LABEL]
        targets = {EMBEDDING_TARGETS: example[sources_lib.EMBEDDING]}
        if self.labelled:
            targets[LABEL_TARGETS] = example[sources_lib.LABEL]
        return targets

    def train_examples(self, shuffle=True, seed=0, input_context=None,
                       shuffle_buffer=None, shard_batch=1):
        """(image uint8, targets) pairs of the training stream, held-out
        classes removed (see `sources.SplitSource.examples`)."""
        examples = self.train.examples(
            shuffle=shuffle, seed=seed, input_context=input_context,
            shuffle_buffer=shuffle_buffer, shard_batch=shard_batch,
            exclude_labels=self.holdout_classes)
        return examples.map(lambda e: (e[sources_lib.IMAGE],
                                       self._targets(e)))

    def train_dataset(self, global_batch_size, seed=0, augment=False,
                      input_context=None, shuffle_buffer=None):
        """Shuffled, (optionally) augmented batches, epoch after epoch
        without end (see `sources.SplitSource.examples`).

        Yields (images float32 [B, H, W, C], targets): targets are the int64
        labels [B] without caption embeddings (the class-label path), and
        with them a dict {"embeddings": float32 [B, E]} plus "labels"
        int64 [B] when the data is labelled. With an `input_context`
        (`strategy.distribute_datasets_from_function`), this input
        pipeline's shard in batches of
        `input_context.get_per_replica_batch_size(global_batch_size)`.
        """
        batch = global_batch_size
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(
                global_batch_size)
        return image_dataset.make_image_dataset(
            self.train_examples(True, seed, input_context, shuffle_buffer,
                                shard_batch=batch),
            global_batch_size=batch,
            training=True,
            shuffle=False,  # the source shuffled before decoding
            mean=self.mean,
            std=self.std,
            augment=augment,
            seed=seed,
            redraw_each_iteration=False,  # an endless stream
        )

    def eval_dataset(self, limit=None, batch_size=EVAL_BATCH):
        """Standardised test images in order (the first `limit`), batched;
        targets are dummies."""
        count = len(self.test_labels)
        examples = self.test.examples()
        if limit is not None:
            count = min(count, int(limit))
            examples = examples.take(int(limit))
        # A known length: Keras' predict then ends without an "input ran
        # out of data" warning (a stream's cardinality is unknown).
        examples = examples.apply(
            tf.data.experimental.assert_cardinality(count))
        return image_dataset.make_image_dataset(
            examples.map(lambda e: (e[sources_lib.IMAGE],
                                    tf.zeros([], tf.int64))),
            global_batch_size=batch_size,
            training=False,
            mean=self.mean,
            std=self.std,
        )

    def test_images_at(self, indices):
        """uint8 [K, H, W, C]: the test images at these positions (only
        those are decoded)."""
        return self.test.images_at(indices)


def _image_shape(data_config, native_shape):
    if data_config.image_size is None:
        return tuple(native_shape)
    return (*(int(v) for v in data_config.image_size), int(native_shape[2]))


def split_sources(data_config):
    """(train source, test source, class names, source name) of a config.

    Fashion-MNIST comes from the Debian IDX files (arrays); cifar100 and
    imagenet2012 stream from tfds under `data_dir` (prepared by the user,
    never downloaded); "tfrecords" streams a `make_tfrecords` directory
    (`record_sources`, which also gives captions and embeddings). With
    `data.image_size`, images go through `preprocess.preprocess_image`
    (the exported model's preprocessing) to that size, in the stream.
    `train_subset` / `test_subset` keep the first records of a split.
    """
    name = data_config.dataset
    limits = data_config.train_subset, data_config.test_subset
    if name == TFRECORDS:
        info, train, test = record_sources(data_config)
        return train, test, list(info.class_names), info.source
    if name == "fashion_mnist":
        kwargs = {}
        if data_config.data_dir:
            kwargs["data_dir"] = data_config.data_dir
        splits = []
        for split, limit in zip(("train", "test"), limits):
            images, labels = datasets.load_fashion_mnist(split, **kwargs)
            splits.append(sources_lib.ArraySource(
                images, labels, _image_shape(data_config, images.shape[1:]),
                limit=limit))
        return (*splits, list(datasets.FASHION_MNIST_CLASS_NAMES), "")
    if name in ("cifar100", "imagenet2012"):
        if not data_config.data_dir:
            raise ValueError(
                f"dataset {name!r} needs data.data_dir (a prepared tfds "
                "data_dir; nothing is downloaded). Received: data_dir=None"
            )
        native = (32, 32, 3) if name == "cifar100" else None
        if native is None and data_config.image_size is None:
            raise ValueError(
                "dataset 'imagenet2012' has images of many sizes: set "
                "data.image_size (the paper uses [224, 224]). Received: "
                "image_size=None"
            )
        shape = _image_shape(data_config, native or (0, 0, 3))
        test_split = "test" if name == "cifar100" else "validation"
        train, test = (
            datasets.TfdsSource(name, split, data_config.data_dir, shape,
                                   limit=limit)
            for split, limit in zip(("train", test_split), limits)
        )
        from shrewd_tf.semantics import class_synsets

        names = (
            list(class_synsets.CIFAR100_CLASSES)
            if name == "cifar100"
            else class_synsets.imagenet_wnids()
        )
        return train, test, names, ""
    raise ValueError(
        "Unknown dataset; expected fashion_mnist, cifar100, "
        f"imagenet2012 or tfrecords. Received: dataset={name!r}"
    )


def load_experiment_data(data_config):
    """Opens the splits, reads the test metadata, the training statistics
    and the class distances; no images are read into memory.

    Held-out classes (zero-shot) are filtered out of the training stream
    only; the test set keeps them so they can be retrieved.

    Raises:
        ValueError: semantics that the data cannot give (class semantics on
            unlabelled records, "captions" without caption embeddings),
            held-out classes out of range or on unlabelled data.
    """
    train, test, names, source = split_sources(data_config)
    labelled = True
    if data_config.dataset == TFRECORDS:
        counts = dict(train.label_counts())
        for label, n in test.label_counts().items():
            counts[label] = counts.get(label, 0) + n
        labelled = labelled_splits(data_config.data_dir, names, counts)
        if not labelled:
            names = []
    kind = data_config.semantics
    if kind == CAPTIONS and train.embedding_dim is None:
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
        train_count = sum(n for label, n in train.label_counts().items()
                          if label not in holdout)
        log.info("held out classes %s: %d training images left", holdout,
                 train_count)
    else:
        train_count = train.num_records()
    metadata = test.metadata()
    test_labels = metadata["labels"]
    if not labelled:
        test_labels = np.full_like(test_labels, data_lib.NO_LABEL)
    mean, std = train.channel_statistics()
    log.info("channel statistics: mean=%s std=%s", mean, std)
    distances = class_semantics.class_distance_matrix(
        data_config, names, source)
    return ExperimentData(
        train=train,
        test=test,
        train_count=int(train_count),
        test_labels=test_labels,
        mean=mean,
        std=std,
        class_names=names,
        class_distances=distances,
        labelled=labelled,
        holdout_classes=holdout,
        test_embeddings=metadata["embeddings"],
        test_ids=metadata["ids"],
        test_captions=metadata["captions"],
    )

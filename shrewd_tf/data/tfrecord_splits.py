"""A `make_tfrecords` directory as the train and test splits of training.

`record_sources(data_config)` opens the "train" and "test" splits of a
directory written by `python -m pipeline.make_tfrecords`
(`dataset="tfrecords"`, `data_dir` = the directory, on any file system) as
streams (`sources.RecordSource`). `RecordSource` is one such split; `labelled_splits` decides from the
splits' label counts whether they are labelled (every record has a class)
or not.
"""

import logging

import numpy as np
import tensorflow as tf

from shrewd_tf import io as io_lib
from shrewd_tf.data import records as data_lib
from shrewd_tf.data import sources

log = logging.getLogger(__name__)


def record_sources(data_config):
    """Opens the "train" and "test" splits of a `make_tfrecords` directory.

    Both stream in shard order and are cut to `train_subset` /
    `test_subset`. With `image_size`, each stored image is decoded straight
    to that size (`preprocess.preprocess_image`, one resize). Records that
    `make_tfrecords` already resized to another size are then resized
    twice, which the exported model, resizing a client's original image
    once, does not repeat: write the records at the training size.

    Returns:
        (info, train, test): the `data.DatasetInfo` and two
        `sources.RecordSource`s.

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
    train, test = (
        RecordSource(directory, split, info, image_shape, limit)
        for split, limit in (("train", data_config.train_subset),
                             ("test", data_config.test_subset))
    )
    log.info(
        "opened %s: %d train, %d test records, %d classes, embedding size "
        "%s", directory, info.splits["train"], info.splits["test"],
        len(info.class_names), info.embedding_dim,
    )
    return info, train, test


def labelled_splits(directory, class_names, label_counts):
    """Whether a TFRecord directory's splits are fully labelled.

    Args:
        directory: for messages.
        class_names: the names of dataset_info.json.
        label_counts: {label: records} over the splits.

    Labels outside [-1, C) are an error; records with label -1 among
    labelled ones, or labels without class names, make the data
    unlabelled (with a warning): the class losses and metrics are then off.
    """
    total = sum(label_counts.values())
    top = max(label_counts) if label_counts else data_lib.NO_LABEL
    if class_names and top >= len(class_names):
        raise ValueError(
            f"{directory}: labels must be in [-1, {len(class_names)}) for "
            f"the {len(class_names)} class names of dataset_info.json. "
            f"Received: max label {int(top)}"
        )
    unlabelled = int(label_counts.get(data_lib.NO_LABEL, 0))
    if class_names and unlabelled:
        log.warning(
            "%s: %d of %d records have no label (-1): the data is treated "
            "as unlabelled (no class losses or class metrics)",
            directory, unlabelled, total,
        )
    elif not class_names and unlabelled < total:
        log.warning(
            "%s: labels without class names in dataset_info.json are "
            "ignored", directory,
        )
    return bool(class_names) and not unlabelled


# === TFRecord shards (make_tfrecords directories) ===


class RecordSource(sources.SplitSource):
    """A split of a `make_tfrecords` directory, on any file system.

    Args:
        directory: the directory (local path or `scheme://...`).
        split: a split of its `dataset_info.json`.
        info: its `records.DatasetInfo`.
        image_shape: (H, W, C) to decode to (default: the records').
        limit: first records only (see the module docs).
    """

    def __init__(self, directory, split, info, image_shape=None, limit=None):
        self.directory, self.split, self.info = directory, split, info
        self.image_shape = tuple(image_shape or info.image_shape)
        self.embedding_dim = info.embedding_dim or None
        self.limit = limit
        self.files = io_lib.glob(info.file_pattern(split, directory))
        if not self.files:
            raise FileNotFoundError(
                f"No TFRecord shards of split {split!r} in {directory}; "
                "write them with `python -m pipeline.make_tfrecords`."
            )

    def num_records(self):
        count = int(self.info.splits.get(self.split, 0))
        if not count:
            count = len(self.metadata()["labels"])
        return count if self.limit is None else min(count, self.limit)

    def _serialized(self, shuffle, seed, input_context):
        files = tf.data.Dataset.from_tensor_slices(self.files)
        pipelines = (input_context.num_input_pipelines if input_context
                     else 1)
        by_files = (pipelines > 1 and self.limit is None
                    and len(self.files) >= pipelines)
        if by_files:
            files = files.shard(pipelines, input_context.input_pipeline_id)
        if shuffle and self.limit is None:
            files = files.batch(len(self.files)).map(
                lambda names: tf.gather(names, sources.stateless_permutation(
                    len(self.files), seed))).unbatch()
        # Unshuffled (evaluation, subsets): file after file, the order the
        # records were written in. Shuffled: sources.PARALLEL_READS files at once.
        parallel = shuffle and self.limit is None
        dataset = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(self.files), sources.PARALLEL_READS) if parallel
            else 1,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if self.limit is not None:
            dataset = dataset.take(self.limit)
        return dataset, by_files

    def _raw_label(self, serialized):
        return tf.io.parse_single_example(
            serialized, {"label": data_lib.feature_spec()["label"]}
        )["label"]

    def _decode(self, serialized):
        features = data_lib.parse_example(
            serialized, self.image_shape, self.embedding_dim
        )
        example = {sources.IMAGE: features["image"], sources.LABEL: features["label"]}
        if self.embedding_dim:
            example[sources.EMBEDDING] = features["caption_embedding"]
        return example

    def _metadata_spec(self):
        spec = data_lib.feature_spec(self.embedding_dim)
        spec.pop("image")
        return spec

    def metadata(self):
        parts = {"labels": [], "ids": [], "captions": [], "embeddings": []}
        spec = self._metadata_spec()
        batches = (self._raw().batch(sources.METADATA_BATCH)
                   .map(lambda b: tf.io.parse_example(b, spec)))
        for batch in batches.as_numpy_iterator():
            parts["labels"].append(batch["label"])
            parts["ids"].extend(v.decode("utf-8") for v in batch["id"])
            parts["captions"].extend(
                v.decode("utf-8") for v in batch["caption"])
            if self.embedding_dim:
                parts["embeddings"].append(batch["caption_embedding"])
        if not parts["labels"]:
            raise ValueError(
                f"{self.directory}: split {self.split!r} has no records")
        return {
            "labels": np.concatenate(parts["labels"]).astype(np.int64),
            "ids": np.asarray(parts["ids"]),
            "captions": np.asarray(parts["captions"]),
            "embeddings": (
                np.concatenate(parts["embeddings"]).astype(np.float32)
                if self.embedding_dim else None),
        }

    def _stored(self):
        """Statistics of `dataset_info.json` that apply (all records)."""
        return None if self.limit is not None else self.info

    def label_counts(self):
        stored = self._stored() and self.info.label_counts(self.split)
        return stored if stored else super().label_counts()

    def channel_statistics(self):
        stored = self._stored() and self.info.channel_statistics(self.split)
        if stored:
            if tuple(self.image_shape) != tuple(self.info.image_shape):
                log.info(
                    "%s: channel statistics of the stored %s images are "
                    "used for training at %s", self.directory,
                    tuple(self.info.image_shape), tuple(self.image_shape))
            return stored
        log.info(
            "%s: dataset_info.json has no channel statistics of split %r "
            "(written before they were stored): one streaming pass; rerun "
            "`python -m pipeline.make_tfrecords` to store them",
            self.directory, self.split)
        return super().channel_statistics()

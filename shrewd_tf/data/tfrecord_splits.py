"""A `make_tfrecords` directory as the train and test splits of training.

`record_sources(data_config)` opens the "train" and "test" splits of a
directory written by `python -m pipeline.make_tfrecords`
(`dataset="tfrecords"`, `data_dir` = the directory, on any file system) as
streams (`sources.RecordSource`). `labelled_splits` decides from the
splits' label counts whether they are labelled (every record has a class)
or not.
"""

import logging

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
        sources.RecordSource(directory, split, info, image_shape, limit)
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

"""Writing test records in `make_tfrecords`' layout: the one shard writer
behind every fixture that builds a TFRecord directory."""

import os

import tensorflow as tf

from shrewd_tf.data import records as data


def write_shards(directory, split, shards):
    """Writes `<split>-SSSSS-of-NNNNN.tfrecord`, one file per list.

    Args:
        directory: the output directory (created if missing).
        split: the split name.
        shards: a list of shards, each a list of `ImageRecord`s, or of
            bytes written as they are (malformed records for tests).
    """
    os.makedirs(directory, exist_ok=True)
    for index, records in enumerate(shards):
        name = f"{split}-{index:05d}-of-{len(shards):05d}.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for record in records:
                writer.write(
                    record if isinstance(record, bytes)
                    else data.serialize(record)
                )

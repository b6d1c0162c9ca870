"""One split of a dataset as a stream: what training and evaluation read.

A `SplitSource` yields the split's examples as a `tf.data` pipeline of
{"image": uint8 [H, W, C], "label": int64 [], ["embedding": float32 [E]]},
images already through THE preprocessing (`preprocess.preprocess_image`:
decoded, channels set, resized to `image_shape`). Nothing here holds a
split's images in memory, except `ArraySource`, whose images are already
an array (the Fashion-MNIST IDX files, tests):

* `tfrecord_splits.RecordSource`: TFRecord shards of a `make_tfrecords`
  directory, on any file system `tf.io.gfile` reads (local, `gs://`,
  `s3://`, `hdfs://`).
* `tfds_sources.TfdsSource`: a prepared tfds builder under a user's
  `data_dir`; images are decoded by the one preprocessing function, not
  by tfds.
* `ArraySource` (here): in-memory arrays.

Streams (`examples`): with an `input_context` (from
`strategy.distribute_datasets_from_function`), each input pipeline reads
its own shard, by files when the split has at least one file per pipeline,
else by records. Unshuffled, files are read one after the other (the
written order); with `shuffle`, `PARALLEL_READS` files at a time,
interleaved, their order shuffled each epoch (seeded), and serialized
records are shuffled in blocks of `shuffle_buffer` before decoding, so the
buffer holds encoded images, not decoded ones. Shuffles are stateless,
seeded by (seed, epoch): the same seed gives the same stream in every
process, whatever else it has iterated. With `limit` (the `train_subset` /
`test_subset` of a config) the first `limit` records in the unshuffled
order are used, the same records every epoch.

`metadata` reads what evaluation keeps per record (labels, ids, captions,
caption embeddings) without decoding an image; `images_at` decodes only the
records it is asked for (report grids).
"""

import abc
import logging

import numpy as np
import tensorflow as tf

from shrewd_tf.data import preprocess

log = logging.getLogger(__name__)

PARALLEL_READS = 8  # TFRecord files read at once per input pipeline
DEFAULT_SHUFFLE_BUFFER = 10_000  # serialized records
EPOCHS = 2**40  # a shuffled stream repeats "for ever"
METADATA_BATCH = 1024
STATISTICS_BATCH = 256

IMAGE = "image"
LABEL = "label"
EMBEDDING = "embedding"


class SplitSource(abc.ABC):
    """One split, streamed. Subclasses implement `_serialized`, `_decode`,
    `_metadata_batch` (or override `metadata`) and `num_records`.

    Attributes:
        image_shape: (H, W, C) of the yielded images.
        embedding_dim: E when examples carry caption embeddings, else None.
        limit: use only the first `limit` records (None: all).
    """

    image_shape = None
    embedding_dim = None
    limit = None

    # --- What subclasses provide ---

    @abc.abstractmethod
    def _serialized(self, shuffle, seed, input_context):
        """(raw elements, by_files): the raw elements (serialized records,
        tfds dicts, array rows), limited and file-shuffled, and whether
        they are already this input pipeline's file shard."""

    @abc.abstractmethod
    def _raw_label(self, element):
        """The label of a raw element, without decoding its image."""

    @abc.abstractmethod
    def _decode(self, element):
        """A raw element -> the example dict (image preprocessed)."""

    @abc.abstractmethod
    def num_records(self):
        """Records of the split (after `limit`)."""

    # --- Shared ---

    def examples(self, shuffle=False, seed=None, input_context=None,
                 shuffle_buffer=None, shard_batch=1, exclude_labels=()):
        """The split's examples as a `tf.data.Dataset` (unbatched).

        Args:
            shuffle: shuffle files and records, differently each epoch;
                the shuffled stream repeats endlessly (epoch after epoch).
            seed: seeds the shuffles (same seed, same order).
            input_context: `tf.distribute.InputContext`: yield only this
                input pipeline's shard.
            shuffle_buffer: records in the shuffle buffer (before decoding;
                default `DEFAULT_SHUFFLE_BUFFER`).
            shard_batch: when records (not files) are sharded, pipeline i
                takes the i-th of every `num_input_pipelines` groups of
                `shard_batch` records of the common (same-seed) order: with
                the per-replica batch, the replicas of a step see the same
                records as one process with that many replicas would (as
                tf.data's DATA auto-sharding does). Only the pipeline's
                own records are decoded.
            exclude_labels: labels whose records are skipped (held-out
                classes), before shuffling and sharding.

        Returns:
            dicts {"image": uint8 [H, W, C], "label": int64 [],
            ["embedding": float32 [E]]}, in a fixed order without
            `shuffle`.
        """
        pipelines = input_context.num_input_pipelines if input_context else 1

        def one_epoch(epoch_seed):
            dataset, by_files = self._serialized(shuffle, epoch_seed,
                                                 input_context)
            if exclude_labels:
                excluded = tf.constant(tuple(exclude_labels), tf.int64)
                dataset = dataset.filter(
                    lambda e: tf.logical_not(tf.reduce_any(tf.equal(
                        tf.cast(self._raw_label(e), tf.int64), excluded))))
            if shuffle:
                dataset = block_shuffle(
                    dataset, shuffle_buffer or self._shuffle_buffer(),
                    epoch_seed)
            if pipelines > 1 and not by_files:
                dataset = (dataset.batch(int(shard_batch))
                           .shard(pipelines, input_context.input_pipeline_id)
                           .unbatch())
            return dataset

        if shuffle:
            # Endless epochs, each shuffled by stateless ops seeded with
            # (seed, epoch): the order depends on the seed only, not on the
            # global seed or on how many iterators were made before (Keras
            # makes one more to build the model under some strategies).
            base = int(seed or 0)
            dataset = tf.data.Dataset.range(EPOCHS).flat_map(
                lambda epoch: one_epoch(tf.stack(
                    [tf.constant(base, tf.int64), epoch])))
        else:
            dataset = one_epoch(None)
        shape = tuple(self.image_shape)

        def decode(element):
            example = self._decode(element)
            example[IMAGE] = tf.ensure_shape(example[IMAGE], shape)
            example[LABEL] = tf.cast(example[LABEL], tf.int64)
            return example

        return dataset.map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    def _shuffle_buffer(self):
        return DEFAULT_SHUFFLE_BUFFER

    def _raw(self):
        """All raw elements in the fixed order (no shuffle, no shard)."""
        return self._serialized(False, None, None)[0]

    def metadata(self):
        """Per-record metadata in `examples()` order, images not decoded.

        Returns:
            {"labels": int64 [N], "ids": str [N] or None, "captions": str
            [N] or None, "embeddings": float32 [N, E] or None}.
        """
        return {"labels": self._labels(), "ids": None, "captions": None,
                "embeddings": None}

    def _labels(self):
        labels = list(
            self._raw().map(self._raw_label).batch(METADATA_BATCH)
            .as_numpy_iterator()
        )
        return (np.concatenate(labels).astype(np.int64) if labels
                else np.zeros(0, np.int64))

    def label_counts(self):
        """{label: records} of the split (a label pass when not stored)."""
        values, counts = np.unique(self.metadata()["labels"],
                                   return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def channel_statistics(self):
        """(mean float32 [C], std float32 [C]) of the split's images in
        uint8 pixel units; a streaming pass unless stored."""
        return streaming_channel_statistics(self.examples())

    def images_at(self, indices):
        """uint8 [len(indices), H, W, C]: the images at these positions of
        `examples()` order; only those are decoded."""
        indices = np.asarray(indices, np.int64)
        if indices.size == 0:
            return np.zeros((0, *self.image_shape), np.uint8)
        wanted = tf.constant(np.unique(indices))
        raw = self._raw().take(int(indices.max()) + 1)
        picked = (
            tf.data.Dataset.zip((tf.data.Dataset.range(2**62), raw))
            .filter(lambda i, _: tf.reduce_any(tf.equal(i, wanted)))
            .map(lambda i, element: (i, self._decode(element)[IMAGE]))
        )
        found = {int(i): image for i, image in picked.as_numpy_iterator()}
        return np.stack([found[int(i)] for i in indices])


def stateless_permutation(size, seed):
    """A permutation of range(size) determined by `seed` (int64 [2])."""
    keys = tf.random.stateless_uniform([size], seed=seed)
    return tf.argsort(keys, stable=True)


def block_shuffle(dataset, block, seed):
    """Shuffles a stream within consecutive blocks of `block` elements.

    Each block is permuted by `stateless_permutation` seeded with (seed
    folded with the block's index), so the order is a function of `seed`
    alone. Memory: one block of (serialized) elements.
    """
    seed = tf.cast(seed, tf.int64)

    def permute(index, elements):
        size = tf.shape(tf.nest.flatten(elements)[0])[0]
        order = stateless_permutation(
            size, tf.stack([seed[0] * 7919 + index, seed[1]]))
        return tf.nest.map_structure(lambda t: tf.gather(t, order),
                                     elements)

    return dataset.batch(int(block)).enumerate().map(permute).unbatch()


def streaming_channel_statistics(examples):
    """Per-channel mean and population std of a stream of example dicts,
    with float64 sums reduced in the graph, a batch at a time."""

    def sums(images):
        pixels = tf.cast(images, tf.float64)
        pixels = tf.reshape(pixels, [-1, tf.shape(pixels)[-1]])
        return (tf.reduce_sum(pixels, 0), tf.reduce_sum(pixels**2, 0),
                tf.cast(tf.shape(pixels)[0], tf.float64))

    total = total_sq = None
    count = 0.0
    batches = examples.map(lambda e: e[IMAGE]).batch(STATISTICS_BATCH)
    for s, sq, n in batches.map(sums).as_numpy_iterator():
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += n
    if not count:
        raise ValueError("channel statistics need at least one image")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


# === In-memory arrays ===


class ArraySource(SplitSource):
    """Arrays already in memory (Fashion-MNIST IDX files, tests).

    Args:
        images: uint8 [N, h, w, C]; resized to `image_shape` on the fly.
        labels: int [N].
        image_shape: (H, W, C) (default: the arrays').
        embeddings: float32 [N, E] or None.
        ids, captions: str [N] or None.
        limit: first records only.
    """

    def __init__(self, images, labels, image_shape=None, embeddings=None,
                 ids=None, captions=None, limit=None):
        end = None if limit is None else int(limit)
        self.images = np.asarray(images)[:end]
        self.labels = np.asarray(labels, np.int64)[:end]
        self.embeddings = None if embeddings is None else np.asarray(
            embeddings, np.float32)[:end]
        self.ids = None if ids is None else np.asarray(ids)[:end]
        self.captions = None if captions is None else np.asarray(
            captions)[:end]
        self.image_shape = tuple(image_shape or self.images.shape[1:])
        self.embedding_dim = (None if self.embeddings is None
                              else int(self.embeddings.shape[1]))

    def num_records(self):
        return len(self.labels)

    def _shuffle_buffer(self):
        return max(len(self.labels), 1)  # in memory anyway: a full shuffle

    def _serialized(self, shuffle, seed, input_context):
        columns = {IMAGE: self.images, LABEL: self.labels}
        if self.embeddings is not None:
            columns[EMBEDDING] = self.embeddings
        return tf.data.Dataset.from_tensor_slices(columns), False

    def _raw_label(self, element):
        return element[LABEL]

    def _decode(self, element):
        example = dict(element)
        example[IMAGE] = preprocess.preprocess_image(element[IMAGE],
                                                     self.image_shape)
        return example

    def metadata(self):
        return {"labels": self.labels, "ids": self.ids,
                "captions": self.captions, "embeddings": self.embeddings}

    def images_at(self, indices):
        chosen = self.images[np.asarray(indices, np.int64)]
        if tuple(chosen.shape[1:]) == tuple(self.image_shape):
            return chosen
        return preprocess.preprocess_image(chosen, self.image_shape).numpy()

    def channel_statistics(self):
        if tuple(self.images.shape[1:]) == tuple(self.image_shape):
            from shrewd_tf.data.image_dataset import channel_statistics

            return channel_statistics(self.images)
        return super().channel_statistics()

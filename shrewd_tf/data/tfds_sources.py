"""Image data sources: Fashion-MNIST IDX files and prepared TFDS builders.

* Fashion-MNIST from the IDX files of the Debian package
  `dataset-fashion-mnist` (parsed here with NumPy, no download).
* TFDS builders (`cifar100`, `imagenet2012`, `fashion_mnist`) read from a
  user-given, already prepared `data_dir`; nothing is ever downloaded.

`TfdsSource` streams a prepared builder's split into training and
evaluation (a `sources.SplitSource`); the batches are made by
`image_dataset.make_image_dataset`.
"""

import gzip
import json
import logging
import os

import numpy as np
import tensorflow as tf

from shrewd_tf import io as io_lib
from shrewd_tf.data import preprocess
from shrewd_tf.data import sources
from shrewd_tf.semantics import class_synsets

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Label order of the IDX files; one table shared with the synset mapping.
FASHION_MNIST_CLASS_NAMES = class_synsets.FASHION_MNIST_CLASSES
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
TFDS_NAMES = ("cifar100", "imagenet2012", "fashion_mnist")
# Cached per-split statistics of a tfds builder, beside its data.
TFDS_STATISTICS_DIR = "shrewd_statistics"
# Images a tfds split's channel statistics are estimated from (ImageNet:
# 50k of 1.28M; the estimate's error is far below what training notices).
STATISTICS_SAMPLE = 50_000

# IDX type codes (third magic byte) -> big-endian NumPy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# === Fashion-MNIST (IDX files) ===


def _read_file_bytes(path):
    """Returns the (gunzipped when the file is gzip) bytes of `path`."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Missing data file {path}. Install the Fashion-MNIST files with "
            "`sudo apt-get install dataset-fashion-mnist` (or `make install`),"
            " or pass the directory that holds them as data_dir."
        )
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ValueError(
            f"Corrupt gzip file {path}: {e}. The file is truncated or damaged;"
            " reinstall it with `sudo apt-get install --reinstall "
            "dataset-fashion-mnist`."
        ) from e


def read_idx(path, expected_magic=None):
    """Reads an IDX file (optionally gzip-compressed) into a NumPy array.

    IDX layout: a 4-byte big-endian magic number (two zero bytes, a type code,
    the number of dimensions), one big-endian int32 per dimension, then the
    data in row-major order.

    Args:
        path: path to a `.idx*-ubyte` or `.gz` file.
        expected_magic: int or None. When given (e.g. 2051 for images, 2049
            for labels), the magic number must equal it.

    Returns:
        np.ndarray with the file's shape and native-endian dtype (uint8 for
        the Fashion-MNIST files).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: bad magic number, unknown type code, or a data size that
            does not match the header (truncated or padded file).
    """
    data = _read_file_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"Corrupt IDX file {path}: {len(data)} bytes, too short for the "
            "4-byte magic number."
        )
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"Corrupt IDX file {path}: magic number {magic}, expected "
            f"{expected_magic}."
        )
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"Corrupt IDX file {path}: invalid magic number {magic} "
            f"(0x{magic:08x})."
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"Corrupt IDX file {path}: truncated header ({len(data)} bytes, "
            f"{ndim} dimensions need {header_size})."
        )
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = _IDX_DTYPES[type_code]
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_size:
        kind = "truncated" if len(data) < expected_size else "trailing bytes"
        raise ValueError(
            f"Corrupt IDX file {path}: {kind}; header says shape {shape} "
            f"({expected_size} bytes) but the data has {len(data)} bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(split="train", data_dir=FASHION_MNIST_DIR):
    """Loads a Fashion-MNIST split from the IDX files in `data_dir`.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000 images).
        data_dir: directory holding the four `*-ubyte.gz` files; defaults to
            the Debian package `dataset-fashion-mnist`'s location.

    Returns:
        (images, labels): uint8 array [N, 28, 28, 1] (pixels 0..255) and
        int64 array [N] of class ids 0..9 (see `FASHION_MNIST_CLASS_NAMES`).

    Raises:
        ValueError: unknown split, or a corrupt file (bad magic number, bad
            dimensions, size mismatch, image/label count mismatch, labels
            outside 0..9); the message names the file.
        FileNotFoundError: a file is missing (the message says how to
            install the Debian package).
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(
            f"split must be one of {sorted(FASHION_MNIST_FILES)}. "
            f"Received: split={split!r}"
        )
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images_path = os.path.join(data_dir, images_name)
    labels_path = os.path.join(data_dir, labels_name)
    images = read_idx(images_path, expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(
            f"Corrupt IDX file {images_path}: images are {images.shape[1:]}, "
            "expected 28x28."
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Image/label count mismatch: {images_path} holds "
            f"{images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels."
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASS_NAMES):
        raise ValueError(
            f"Corrupt IDX file {labels_path}: label {int(labels.max())} is "
            f"outside 0..{len(FASHION_MNIST_CLASS_NAMES) - 1}."
        )
    return images[..., np.newaxis], labels.astype(np.int64)


# === TFDS builders (prepared data only) ===


def check_tfds_dir(name, data_dir):
    """Raises unless `name` is a known builder and `data_dir` exists.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: `data_dir` does not exist.
    """
    if name not in TFDS_NAMES:
        raise ValueError(
            f"name must be one of {TFDS_NAMES}. Received: name={name!r}"
        )
    from shrewd_tf import io as io_lib

    if data_dir is None or not io_lib.isdir(data_dir):
        raise FileNotFoundError(
            f"TFDS data_dir {data_dir!r} does not exist. Prepare the dataset "
            f"there first (`tfds build {name} --data_dir=DIR`); shrewd_tf "
            "never downloads datasets."
        )


def as_dataset(builder, name, data_dir, split, **kwargs):
    """`builder.as_dataset(split, **kwargs)` with a clear error when the
    data is not prepared in `data_dir` (FileNotFoundError)."""
    try:
        return builder.as_dataset(split=split, **kwargs)
    except AssertionError as e:  # TFDS reports unprepared data this way
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}."
            f" Prepare it first (`tfds build {name} --data_dir={data_dir}`);"
            " shrewd_tf never downloads datasets."
        ) from e


def load_tfds(name, split, data_dir, shuffle_files=False):
    """Reads a prepared TFDS dataset as `(image, label)` pairs; never downloads.

    Args:
        name: one of `TFDS_NAMES`: `"cifar100"` (fine 100-class `label`),
            `"imagenet2012"`, `"fashion_mnist"`.
        split: a TFDS split string, e.g. `"train"`, `"test"`,
            `"validation"`, `"train[:90%]"`.
        data_dir: the TFDS data directory where the dataset was prepared
            (`tfds build <name> --data_dir=...`; ImageNet needs its manual
            download first, see the TFDS catalogue).
        shuffle_files: bool, shuffle the order of the record files.

    Returns:
        tf.data.Dataset of (image uint8 [H, W, C], label int64 []); H and W
        vary between ImageNet images. (Training streams through
        `sources.TfdsSource`, which decodes with the one preprocessing
        function.)

    Raises:
        ValueError: unknown name.
        FileNotFoundError: `data_dir` does not exist or the dataset is not
            prepared in it.
    """
    import tensorflow_datasets as tfds  # heavy import, only when used

    check_tfds_dir(name, data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    dataset = as_dataset(builder, name, data_dir, split,
                         shuffle_files=shuffle_files)
    return dataset.map(
        lambda example: (
            example["image"],
            tf.cast(example["label"], tf.int64),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


# === Prepared tfds builders ===


class TfdsSource(sources.SplitSource):
    """A split of a prepared tfds builder (never downloaded).

    Images are read encoded (`tfds.decode.SkipDecoding`) and decoded by
    `preprocess.preprocess_image`, as the exported model decodes a
    client's bytes. Files are sharded per input pipeline through
    `tfds.ReadConfig(input_context=...)` when the split has enough files
    (else records are). The record count comes from the builder's info;
    label counts (needed for held-out classes) take one pass over the
    labels, channel statistics one over the first `STATISTICS_SAMPLE`
    images; both are cached in `<data_dir>/shrewd_statistics/` when it is
    writable.
    """

    def __init__(self, name, split, data_dir, image_shape, limit=None):
        import tensorflow_datasets as tfds

        check_tfds_dir(name, data_dir)
        self.name, self.split, self.data_dir = name, split, data_dir
        self.image_shape = tuple(int(s) for s in image_shape)
        self.limit = limit
        self.builder = tfds.builder(name, data_dir=data_dir)

    def _file_shards(self):
        try:
            return int(self.builder.info.splits[self.split].num_shards)
        except (KeyError, TypeError):  # unknown (mocked builders)
            return None

    def _serialized(self, shuffle, seed, input_context):
        import tensorflow_datasets as tfds

        pipelines = (input_context.num_input_pipelines if input_context
                     else 1)
        shards = self._file_shards()
        by_files = (pipelines > 1 and self.limit is None and shards
                    and shards >= pipelines)
        read_config = tfds.ReadConfig(
            # tfds wants an int; the records are reshuffled per epoch by
            # the seeded buffer after this.
            shuffle_seed=0,
            input_context=input_context if by_files else None,
            interleave_cycle_length=sources.PARALLEL_READS,
            try_autocache=False,
        )
        dataset = as_dataset(
            self.builder, self.name, self.data_dir, self.split,
            shuffle_files=bool(shuffle and self.limit is None),
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        dataset = dataset.map(
            lambda e: {sources.IMAGE: e["image"], sources.LABEL: e["label"]})
        if self.limit is not None:
            dataset = dataset.take(self.limit)
        return dataset, bool(by_files)

    def _raw_label(self, element):
        return element[sources.LABEL]

    def _decode(self, element):
        return {sources.IMAGE: preprocess.preprocess_image(element[sources.IMAGE],
                                                   self.image_shape),
                sources.LABEL: element[sources.LABEL]}

    def _cached(self, kind, compute):
        """A JSON value cached beside the data (when writable)."""
        shape = "x".join(str(s) for s in self.image_shape)
        limit = "" if self.limit is None else f"-first{self.limit}"
        path = os.path.join(
            self.data_dir, TFDS_STATISTICS_DIR,
            f"{self.name}-{self.split}-{shape}{limit}-{kind}.json")
        if io_lib.exists(path):
            return json.loads(io_lib.read_text(path))
        value = compute()
        try:
            io_lib.write_json_atomically(path, value)
        except OSError as error:  # a read-only data_dir: not cached
            log.warning("could not cache %s at %s: %s", kind, path, error)
        return value

    def num_records(self):
        try:
            count = int(self.builder.info.splits[self.split].num_examples)
        except (KeyError, TypeError):  # unknown (mocked builders)
            return int(sum(self.label_counts().values()))
        return count if self.limit is None else min(count, self.limit)

    def label_counts(self):
        """One pass over the labels (images skipped), cached."""

        def count():
            log.info("%s %s: one pass over the labels", self.name,
                     self.split)
            values, counts = np.unique(super(TfdsSource, self).metadata()
                                       ["labels"], return_counts=True)
            return {str(int(v)): int(c) for v, c in zip(values, counts)}

        return {int(k): int(v)
                for k, v in self._cached("label_counts", count).items()}

    def channel_statistics(self):
        """Mean and std of the first `STATISTICS_SAMPLE` images (in the
        builder's file order, which tfds shuffled when it prepared the
        data), cached."""

        def compute():
            log.info("%s %s: channel statistics of the first %d images",
                     self.name, self.split, STATISTICS_SAMPLE)
            mean, std = sources.streaming_channel_statistics(
                self.examples().take(STATISTICS_SAMPLE))
            return {"mean": mean.tolist(), "std": std.tolist(),
                    "images": STATISTICS_SAMPLE}

        stats = self._cached("channels", compute)
        return (np.asarray(stats["mean"], np.float32),
                np.asarray(stats["std"], np.float32))

"""Image data sources: Fashion-MNIST IDX files and prepared TFDS builders.

* Fashion-MNIST from the IDX files of the Debian package
  `dataset-fashion-mnist` (parsed here with NumPy, no download).
* TFDS builders (`cifar100`, `imagenet2012`, `fashion_mnist`) read from a
  user-given, already prepared `data_dir`; nothing is ever downloaded.

The batches training and evaluation read are made from them by
`image_dataset.make_image_dataset`.
"""

import gzip
import os

import numpy as np
import tensorflow as tf

from shrewd_tf.semantics import class_synsets

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

"""Tests for shrewd_tf.data.tfds_sources: IDX parsing and TFDS sources."""

import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import tfds_sources as datasets

# === IDX files written independently with struct ===


def write_idx(path, array, magic=None, compress=True, extra=b"", cut=0):
    """Writes uint8 `array` as an IDX file (header by hand, big-endian)."""
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = 0x0800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    payload = header + array.tobytes() + extra
    if cut:
        payload = payload[:-cut]
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def write_split(directory, images, labels, split="train", **kwargs):
    images_name, labels_name = datasets.FASHION_MNIST_FILES[split]
    write_idx(os.path.join(directory, images_name), images)
    write_idx(os.path.join(directory, labels_name), labels, **kwargs)


@pytest.fixture
def small_fashion(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 5, 2], np.uint8)
    write_split(tmp_path, images, labels, split="test")
    return tmp_path, images, labels


def test_load_fashion_mnist_round_trip(small_fashion):
    data_dir, images, labels = small_fashion
    got_images, got_labels = datasets.load_fashion_mnist("test", data_dir)
    assert got_images.shape == (7, 28, 28, 1)
    assert got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images[..., 0], images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_uncompressed(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x.idx3-ubyte", array, compress=False)
    np.testing.assert_array_equal(datasets.read_idx(str(path)), array)


def test_wrong_magic_names_file(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.zeros((2, 28, 28)), magic=2049)
    with pytest.raises(ValueError, match=r"a\.gz.*magic number 2049"):
        datasets.read_idx(str(path), expected_magic=2051)


@pytest.mark.parametrize("cut", [1, 100])
def test_truncated_data_names_file(tmp_path, cut):
    path = write_idx(tmp_path / "t.gz", np.zeros((3, 28, 28)), cut=cut)
    with pytest.raises(ValueError, match=r"t\.gz.*truncated"):
        datasets.read_idx(str(path))


def test_trailing_bytes_rejected(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((3, 2)), extra=b"\x00")
    with pytest.raises(ValueError, match=r"t\.gz.*trailing"):
        datasets.read_idx(str(path))


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "g.gz", np.ones((50, 28, 28)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"g\.gz"):
        datasets.read_idx(str(path))


def test_count_mismatch(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    write_split(tmp_path, images, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="4 images.*3 labels"):
        datasets.load_fashion_mnist("train", tmp_path)


def test_label_out_of_range(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    write_split(tmp_path, images, np.array([1, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10"):
        datasets.load_fashion_mnist("train", tmp_path)


def test_wrong_image_size(tmp_path):
    write_split(tmp_path, np.zeros((2, 8, 8)), np.zeros(2))
    with pytest.raises(ValueError, match="28x28"):
        datasets.load_fashion_mnist("train", tmp_path)


def test_missing_file_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist("train", tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_unknown_split():
    with pytest.raises(ValueError, match="split='val'"):
        datasets.load_fashion_mnist("val")


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST_DIR),
    reason="Debian package dataset-fashion-mnist not installed",
)
@pytest.mark.parametrize("split,count", [("train", 60_000), ("test", 10_000)])
def test_real_fashion_mnist(split, count):
    images, labels = datasets.load_fashion_mnist(split)
    assert images.shape == (count, 28, 28, 1)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    np.testing.assert_array_equal(np.bincount(labels), [count // 10] * 10)
    # Real photos, not a constant: background black, some bright pixels.
    assert images.min() == 0 and images.max() == 255


# === TFDS sources (mocked, offline) ===


@pytest.mark.parametrize(
    "name,shape,num_classes",
    [
        ("cifar100", (32, 32, 3), 100),
        ("fashion_mnist", (28, 28, 1), 10),
        ("imagenet2012", (None, None, 3), 1000),
    ],
)
def test_load_tfds_mocked(tmp_path, name, shape, num_classes):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        dataset = datasets.load_tfds(name, "train", data_dir=str(tmp_path))
        elements = list(dataset.as_numpy_iterator())
    assert dataset.element_spec[0].shape.as_list() == list(shape)
    assert dataset.element_spec[0].dtype == tf.uint8
    assert dataset.element_spec[1].dtype == tf.int64
    assert len(elements) == 5
    for image, label in elements:
        assert image.ndim == 3 and image.shape[-1] == shape[-1]
        assert 0 <= label < num_classes


def test_load_tfds_cifar100_uses_fine_label(tmp_path):
    import tensorflow_datasets as tfds

    examples = [
        {
            "id": f"train_{i}",
            "image": np.full((32, 32, 3), i, np.uint8),
            "label": 50 + i,
            "coarse_label": i,
        }
        for i in range(3)
    ]

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature={
                "id": tf.TensorSpec([], tf.string),
                "image": tf.TensorSpec([32, 32, 3], tf.uint8),
                "label": tf.TensorSpec([], tf.int64),
                "coarse_label": tf.TensorSpec([], tf.int64),
            },
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset = datasets.load_tfds("cifar100", "test", str(tmp_path))
        labels = [int(label) for _, label in dataset.as_numpy_iterator()]
    assert labels == [50, 51, 52]


def test_load_tfds_unprepared_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        datasets.load_tfds("fashion_mnist", "train", data_dir=str(tmp_path))


def test_load_tfds_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        datasets.load_tfds("cifar100", "train", str(tmp_path / "absent"))


def test_load_tfds_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="name='mnist'"):
        datasets.load_tfds("mnist", "train", str(tmp_path))

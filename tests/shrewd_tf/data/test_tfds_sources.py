"""Tests for shrewd_tf.data.tfds_sources: IDX parsing, TFDS sources, input pipeline."""

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


# === Channel statistics ===


def test_channel_statistics_matches_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(37, 5, 6, 3)).astype(np.uint8)
    images[..., 2] //= 4  # channels with different statistics
    mean, std = datasets.channel_statistics(images, chunk_size=8)
    as_float = images.astype(np.float64)
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(37)))
    ds_mean, ds_std = datasets.channel_statistics(ds)
    np.testing.assert_allclose(ds_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds_std, std, rtol=1e-6)


def test_channel_statistics_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"images.shape=\(4, 4\)"):
        datasets.channel_statistics(np.zeros((4, 4)))


# === Input pipeline ===


def make_images(n=24, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, channels))
    scale = np.array([1.0, 0.5, 0.25][:channels])
    return (images * scale).astype(np.uint8), np.arange(n) % 4


def collect(dataset):
    batches = list(dataset.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    return batches, images, labels


def test_normalisation_zero_mean_unit_std():
    images, labels = make_images(n=40)
    mean, std = datasets.channel_statistics(images)
    dataset = datasets.make_image_dataset(
        images, labels, global_batch_size=16, training=False, mean=mean,
        std=std,
    )
    _, out, out_labels = collect(dataset)
    assert out.dtype == np.float32 and out.shape == (40, 8, 8, 3)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out_labels, labels)  # no shuffle in eval
    expected = (images.astype(np.float64) - images.mean((0, 1, 2))) / (
        images.std((0, 1, 2))
    )
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_training_computes_statistics_and_shuffles():
    images, labels = make_images(n=32)
    dataset = datasets.make_image_dataset(
        images, labels, global_batch_size=8, training=True, augment=False,
        seed=3,
    )
    _, out, out_labels = collect(dataset)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    assert out_labels.dtype == np.int64
    assert sorted(out_labels.tolist()) == sorted(labels.tolist())
    assert out_labels.tolist() != labels.tolist()


def test_evaluation_requires_statistics():
    images, labels = make_images()
    with pytest.raises(ValueError, match="training=False"):
        datasets.make_image_dataset(
            images, labels, global_batch_size=4, training=False
        )


def eval_view(images):
    """Standardised images, as the pipeline computes them before augmenting."""
    mean, std = datasets.channel_statistics(images)
    return (images.astype(np.float32) - mean) / std, mean, std


def test_flip_only_flips():
    images, labels = make_images(n=32)
    reference, mean, std = eval_view(images)
    dataset = datasets.make_image_dataset(
        images, np.arange(32), global_batch_size=32, training=True,
        mean=mean, std=std, shift_fraction=0.0, seed=5,
    )
    _, out, order = collect(dataset)
    assert out.shape == images.shape
    flipped = 0
    for image, index in zip(out, order):
        original = reference[index]
        if np.allclose(image, original[:, ::-1], atol=1e-5):
            flipped += 1
        else:
            np.testing.assert_allclose(image, original, atol=1e-5)
    assert 0 < flipped < 32  # both outcomes occur (p ~ 2**-31 to fail)


def shifted(image, dy, dx):
    """Reference shift with zero fill: out[i, j] = image[i - dy, j - dx]."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = image[i - dy, j - dx]
    return out


def test_shift_is_a_bounded_translation():
    images, _ = make_images(n=16, size=20)
    reference, mean, std = eval_view(images)
    dataset = datasets.make_image_dataset(
        images, np.arange(16), global_batch_size=16, training=True,
        mean=mean, std=std, flip=False, shift_fraction=0.15, seed=7,
    )
    _, out, order = collect(dataset)
    assert out.shape == images.shape
    max_shift = 3  # round(0.15 * 20)
    shifts = []
    for image, index in zip(out, order):
        matches = [
            (dy, dx)
            for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)
            if np.allclose(image, shifted(reference[index], dy, dx), atol=1e-5)
        ]
        assert matches, "output is not a shift of at most 15 %"
        shifts.append(matches[0])
    assert any(s != (0, 0) for s in shifts)
    assert len(set(shifts)) > 2


def test_seed_makes_pipeline_deterministic():
    images, labels = make_images(n=20)

    def build(seed):
        return datasets.make_image_dataset(
            images, labels, global_batch_size=5, training=True, seed=seed
        )

    _, first, first_labels = collect(build(11))
    _, second, second_labels = collect(build(11))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first_labels, second_labels)
    _, other, _ = collect(build(12))
    assert not np.array_equal(first, other)
    # A second pass (epoch) over the same dataset reshuffles and re-augments.
    dataset = build(11)
    _, epoch1, _ = collect(dataset)
    _, epoch2, _ = collect(dataset)
    assert not np.array_equal(epoch1, epoch2)


@pytest.mark.parametrize(
    "training,sizes", [(True, [4, 4]), (False, [4, 4, 2])]
)
def test_batch_size_and_drop_remainder(training, sizes):
    images, labels = make_images(n=10)
    mean, std = datasets.channel_statistics(images)
    dataset = datasets.make_image_dataset(
        images, labels, global_batch_size=4, training=training, mean=mean,
        std=std, seed=0,
    )
    batches, _, _ = collect(dataset)
    assert [len(b[1]) for b in batches] == sizes
    static_batch = dataset.element_spec[0].shape[0]
    assert static_batch == (4 if training else None)


def test_resize_and_grayscale_to_rgb_from_dataset():
    images, labels = make_images(n=6, size=28, channels=1)
    source = tf.data.Dataset.from_tensor_slices((images, labels.astype("i4")))
    dataset = datasets.make_image_dataset(
        source, global_batch_size=3, training=False, mean=[100.0],
        std=[50.0], image_size=(32, 32), num_channels=3,
    )
    _, out, out_labels = collect(dataset)
    assert out.shape == (6, 32, 32, 3)
    assert out_labels.dtype == np.int64
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # Upscaling: antialiasing changes nothing, so plain bilinear is the
    # reference; the pipeline then rounds to whole pixels (the stored form),
    # where float noise can flip a value sitting on .5.
    resized = tf.image.resize(images.astype(np.float32), (32, 32)).numpy()
    pixels = out[..., :1] * 50 + 100
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
    assert np.abs(pixels - resized).max() <= 0.5 + 1e-4
    assert np.mean(np.abs(pixels - np.round(resized)) > 1e-4) < 0.01


def test_float_targets_pass_through():
    images, _ = make_images(n=4)
    targets = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    mean, std = datasets.channel_statistics(images)
    dataset = datasets.make_image_dataset(
        images, targets, global_batch_size=4, training=False, mean=mean,
        std=std,
    )
    _, _, out = collect(dataset)
    np.testing.assert_array_equal(out, targets)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"global_batch_size": 0}, "global_batch_size=0"),
        ({"shift_fraction": 1.5}, "shift_fraction=1.5"),
        ({"num_channels": 2}, "num_channels=2"),
        ({"std": [0.0, 1.0, 1.0], "mean": [0, 0, 0]}, "std="),
        ({"image_size": (0, 4)}, r"image_size=\(0, 4\)"),
    ],
)
def test_invalid_pipeline_arguments(kwargs, match):
    images, labels = make_images(n=4)
    arguments = {"global_batch_size": 2, "training": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        datasets.make_image_dataset(images, labels, **arguments)

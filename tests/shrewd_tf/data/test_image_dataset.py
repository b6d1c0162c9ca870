"""Tests for shrewd_tf.data.image_dataset: channel statistics and the
tf.data input pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import image_dataset


# === Channel statistics ===


def test_channel_statistics_matches_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(37, 5, 6, 3)).astype(np.uint8)
    images[..., 2] //= 4  # channels with different statistics
    mean, std = image_dataset.channel_statistics(images, chunk_size=8)
    as_float = images.astype(np.float64)
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(37)))
    ds_mean, ds_std = image_dataset.channel_statistics(ds)
    np.testing.assert_allclose(ds_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds_std, std, rtol=1e-6)


def test_channel_statistics_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"images.shape=\(4, 4\)"):
        image_dataset.channel_statistics(np.zeros((4, 4)))


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
    mean, std = image_dataset.channel_statistics(images)
    dataset = image_dataset.make_image_dataset(
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
    dataset = image_dataset.make_image_dataset(
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
        image_dataset.make_image_dataset(
            images, labels, global_batch_size=4, training=False
        )


def eval_view(images):
    """Standardised images, as the pipeline computes them before augmenting."""
    mean, std = image_dataset.channel_statistics(images)
    return (images.astype(np.float32) - mean) / std, mean, std


def test_flip_only_flips():
    images, labels = make_images(n=32)
    reference, mean, std = eval_view(images)
    dataset = image_dataset.make_image_dataset(
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
    dataset = image_dataset.make_image_dataset(
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
        return image_dataset.make_image_dataset(
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
    mean, std = image_dataset.channel_statistics(images)
    dataset = image_dataset.make_image_dataset(
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
    dataset = image_dataset.make_image_dataset(
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
    mean, std = image_dataset.channel_statistics(images)
    dataset = image_dataset.make_image_dataset(
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
        image_dataset.make_image_dataset(images, labels, **arguments)

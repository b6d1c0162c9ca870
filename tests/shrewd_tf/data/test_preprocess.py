"""Tests for shrewd_tf.data.preprocess, the one image preprocessing."""

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import preprocess
from shrewd_tf.data import records as data
from tests.support.image_sources import pixels
from tests.support.image_sources import reference_halving

GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


def encoded_images():
    """{name: bytes}: PNGs of 1 to 4 channels, non-square, and a JPEG."""
    return {
        "grey": data.encode_png(pixels(10, 17, 1, seed=1)),
        "grey_alpha": data.encode_png(pixels(13, 9, 2, seed=2)),
        "rgb": data.encode_png(pixels(20, 14, 3, seed=3)),
        "rgba": data.encode_png(pixels(9, 9, 4, seed=4)),
        "jpeg": tf.io.encode_jpeg(pixels(18, 30, 3, seed=5)).numpy(),
    }


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_eager_graph_dataset_and_batch_agree(channels):
    shape = (12, 12, channels)
    in_graph = tf.function(lambda b: preprocess.preprocess_image(b, shape))
    for name, encoded in encoded_images().items():
        eager = preprocess.preprocess_image(encoded, shape).numpy()
        assert eager.dtype == np.uint8 and eager.shape == shape, name
        # In a graph the decoded channel count is known only at run time.
        np.testing.assert_array_equal(in_graph(tf.constant(encoded)), eager)
        mapped = tf.data.Dataset.from_tensors(encoded).map(
            lambda b: preprocess.preprocess_image(b, shape)
        )
        np.testing.assert_array_equal(next(iter(mapped)), eager)
        decoded = tf.io.decode_image(encoded, expand_animations=False)
        if decoded.shape[-1] != 2:  # pixel input: 1, 3 or 4 channels
            batch = preprocess.preprocess_image(decoded[None], shape)
            np.testing.assert_array_equal(batch[0], eager, err_msg=name)


def test_downscale_is_antialiased_and_rounded():
    image = pixels(16, 12, 3, seed=4)
    out = preprocess.preprocess_image(image, (8, 6, 3)).numpy()
    assert np.abs(out.astype(int) - reference_halving(image)).max() <= 1
    # Rounded, not truncated: the 2x2 block mean 0.75 becomes 1.
    block = np.array([[0, 0], [0, 3]], np.uint8)[..., None]
    assert preprocess.preprocess_image(block, (1, 1, 1)).numpy().item() == 1


def test_upscale_of_constant_image_is_constant():
    image = np.full((8, 8, 3), 77, np.uint8)
    out = preprocess.preprocess_image(image, (20, 13, 3)).numpy()
    assert out.shape == (20, 13, 3) and np.all(out == 77)


def test_channel_conversions():
    grey = pixels(6, 5, 1, seed=1)
    np.testing.assert_array_equal(
        preprocess.preprocess_image(grey, (6, 5, 3)),
        np.repeat(grey, 3, axis=-1),
    )
    rgba = pixels(6, 5, 4, seed=2)
    np.testing.assert_array_equal(
        preprocess.preprocess_image(rgba, (6, 5, 3)), rgba[..., :3]
    )
    rgb = pixels(6, 5, 3, seed=3)
    expected = np.round(rgb.astype(np.float64) @ GREY_WEIGHTS)[..., None]
    got = preprocess.preprocess_image(rgb, (6, 5, 1)).numpy()
    assert np.abs(got.astype(int) - expected).max() <= 1
    opaque = preprocess.preprocess_image(grey, (6, 5, 4)).numpy()
    np.testing.assert_array_equal(opaque[..., :3], np.repeat(grey, 3, -1))
    assert np.all(opaque[..., 3] == 255)


def test_decode_image_keeps_or_converts_channels():
    encoded = data.encode_png(pixels(7, 5, 4, seed=6))
    assert preprocess.decode_image(encoded).shape == (7, 5, 4)
    rgb = preprocess.decode_image(encoded, channels=3)
    assert rgb.dtype == tf.uint8
    np.testing.assert_array_equal(rgb, pixels(7, 5, 4, seed=6)[..., :3])


def test_stored_pixels_pass_through_and_standardise():
    image = pixels(6, 5, 3, seed=7)
    np.testing.assert_array_equal(
        preprocess.preprocess_image(image, (6, 5, 3)), image
    )
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    out = preprocess.preprocess_image(image, (6, 5, 3), mean, std).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (image - np.array(mean)) / std, rtol=1e-6)


def test_float_pixels_are_rounded_and_clipped():
    values = np.array([[[-3.0], [0.4], [254.6], [300.0]]], np.float32)
    out = preprocess.preprocess_image(values, (1, 4, 1)).numpy()
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 255, 255])


def test_errors():
    image = pixels(4, 4, 3)
    with pytest.raises(ValueError, match=r"image_shape=\(4, 4\)"):
        preprocess.preprocess_image(image, (4, 4))
    with pytest.raises(ValueError, match=r"image_shape=\(4, 4, 2\)"):
        preprocess.preprocess_image(image, (4, 4, 2))
    with pytest.raises(ValueError, match="both mean and std"):
        preprocess.preprocess_image(image, (4, 4, 3), mean=[0.0])
    with pytest.raises(ValueError, match="1 to 4 channels"):
        preprocess.preprocess_image(np.zeros((4, 4, 5), np.uint8), (4, 4, 3))
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess.preprocess_image(b"not an image", (4, 4, 3))

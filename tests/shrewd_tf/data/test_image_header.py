"""Tests for shrewd_tf.data.image_header: sizes read from headers of images
written by real encoders (Pillow, tf.io), checked against the decoded
image and, for GIF frames, against a plain-Python walk of the blocks."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shrewd_tf.data import image_header
from tests.support import image_bombs

SIZES = [(1, 1), (21, 37), (300, 7), (7, 300)]  # (height, width)


def pil_bytes(height, width, mode, fmt, **options):
    rng = np.random.default_rng(height * 1000 + width)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 1)
    values = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(values[..., 0] if channels == 1 else values,
                            {1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if mode in ("P", "1"):
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


ENCODINGS = {
    "png_grey": ("L", "PNG", {}),
    "png_rgb": ("RGB", "PNG", {}),
    "png_rgba": ("RGBA", "PNG", {}),
    "png_palette": ("P", "PNG", {}),
    "png_1bit": ("1", "PNG", {}),
    "jpeg_grey": ("L", "JPEG", {}),
    "jpeg_rgb": ("RGB", "JPEG", {"quality": 80}),
    "jpeg_progressive": ("RGB", "JPEG", {"progressive": True}),
    "gif": ("P", "GIF", {}),
    "bmp_rgb": ("RGB", "BMP", {}),
    "bmp_grey": ("L", "BMP", {}),
    "webp_lossy": ("RGB", "WEBP", {}),
    "webp_lossless": ("RGB", "WEBP", {"lossless": True}),
    "webp_alpha": ("RGBA", "WEBP", {}),  # VP8X
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_sizes_of_pillow_images_match_the_decoder(name, size):
    mode, fmt, options = ENCODINGS[name]
    encoded = pil_bytes(*size, mode, fmt, **options)
    height, width, pixels = image_header.image_size(encoded).numpy()
    assert (height, width) == size
    assert pixels == size[0] * size[1]
    decoded = tf.io.decode_image(encoded, expand_animations=False)
    assert tuple(decoded.shape[:2]) == size


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sizes_of_tf_encoded_images(channels):
    values = np.zeros((19, 45, channels), np.uint8)
    png = tf.io.encode_png(values)
    np.testing.assert_array_equal(
        image_header.image_size(png), [19, 45, 19 * 45]
    )
    if channels != 4:
        jpeg = tf.io.encode_jpeg(values)
        np.testing.assert_array_equal(
            image_header.image_size(jpeg), [19, 45, 19 * 45]
        )


def test_bmp_top_down_and_large_values():
    bottom_up = pil_bytes(21, 37, "RGB", "BMP")
    height = struct.unpack_from("<i", bottom_up, 22)[0]
    top_down = bottom_up[:22] + struct.pack("<i", -height) + bottom_up[26:]
    assert tf.io.decode_image(top_down).shape[:2] == (21, 37)
    np.testing.assert_array_equal(
        image_header.image_size(top_down), [21, 37, 777]
    )
    np.testing.assert_array_equal(
        image_header.image_size(image_bombs.header_bomb("bmp", 30000, 40000)),
        [40000, 30000, 1_200_000_000],
    )


def reference_gif_size(data):
    """Plain-Python walk of a GIF's blocks: (height, width, pixels)."""
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    area = 0
    while pos < len(data):
        if data[pos] == 0x21:
            pos += 2
        elif data[pos] == 0x2C:
            left, top, w, h, local = struct.unpack_from("<HHHHB", data,
                                                        pos + 1)
            height, width = max(height, top + h), max(width, left + w)
            area += w * h
            pos += 11 + (3 * (2 << (local & 7)) if local & 0x80 else 0)
        else:
            break
        while pos < len(data) and data[pos]:  # data sub-blocks
            pos += 1 + data[pos]
        pos += 1
    return height, width, max(height * width, area)


def animated_gif(sizes, loop=True):
    """A Pillow animated GIF whose frames differ (so none is dropped)."""
    rng = np.random.default_rng(len(sizes))
    frames = [
        Image.fromarray(rng.integers(0, 256, (*sizes[0], 3), np.uint8))
        .convert("P")
        for _ in sizes
    ]
    buffer = io.BytesIO()
    options = {"loop": 0} if loop else {}
    frames[0].save(buffer, format="GIF", save_all=True,
                   append_images=frames[1:], comment=b"c" * 600, **options)
    return buffer.getvalue()


def test_gif_frames_are_summed_like_the_reference_walk():
    encoded = animated_gif([(40, 30)] * 5)  # extensions, comments, frames
    assert Image.open(io.BytesIO(encoded)).n_frames == 5
    expected = reference_gif_size(encoded)
    assert expected == (40, 30, 5 * 40 * 30)
    np.testing.assert_array_equal(image_header.image_size(encoded), expected)
    # In a graph too (the serving signature's case).
    in_graph = tf.function(image_header.image_size)
    np.testing.assert_array_equal(in_graph(tf.constant(encoded)), expected)


def test_gif_frames_past_the_screen_widen_the_size():
    encoded = image_bombs.gif_bytes((4, 4), [(0, 0, 2, 2), (10, 3, 100, 50)])
    expected = (53, 110, 53 * 110)
    assert reference_gif_size(encoded) == expected
    np.testing.assert_array_equal(image_header.image_size(encoded), expected)
    many = image_bombs.gif_bytes((8, 8), [(0, 0, 8, 8)] * 300)
    assert reference_gif_size(many) == (8, 8, 300 * 64)
    np.testing.assert_array_equal(
        image_header.image_size(many), [8, 8, 300 * 64]
    )


@pytest.mark.parametrize(
    "encoded",
    [b"", b"x", b"not an image at all", b"\x89PN", b"RIFF\0\0\0\0WAVE",
     b"\0" * 64],
)
def test_unknown_bytes_are_left_to_the_decoder(encoded):
    np.testing.assert_array_equal(
        image_header.image_size(encoded), [image_header.UNKNOWN] * 3
    )


def test_truncated_headers_read_as_zero_not_past_the_end():
    png = pil_bytes(21, 37, "RGB", "PNG")
    np.testing.assert_array_equal(image_header.image_size(png[:18]),
                                  [0, 0, 0])
    np.testing.assert_array_equal(image_header.image_size(b"GIF89a\x05"),
                                  [0, 5, 0])


def test_corrupt_jpeg_markers_raise_invalid_argument():
    with pytest.raises(tf.errors.InvalidArgumentError):
        image_header.image_size(b"\xff\xd8\xff" + b"\x00" * 20)


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5, True, None, "10"])
def test_cap_must_be_a_positive_int(max_pixels):
    with pytest.raises(ValueError, match="max_image_pixels="):
        image_header.assert_within(b"x", max_pixels)


def test_cap_checks_each_side_before_the_product():
    # 2**32 - 1 squared wraps int64; each side is over the cap on its own.
    encoded = image_bombs.png_bomb(2**32 - 1, 2**32 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="4294967295 x 4294967295"):
        image_header.assert_within(encoded, 2**31 - 1)


def test_gifs_of_tiny_blocks_by_the_hundred_thousand_are_refused():
    # 1-byte sub-blocks: 2 bytes a step of the walk, a CPU bomb.
    # Up to the LZW code size byte (no data, no trailer).
    frame = image_bombs.gif_bytes((8, 8), [(0, 0, 8, 8)])[:-5]
    assert frame.endswith(b"\xff\xff\xff\x02")
    tiny = frame + b"\x01\x00" * image_header.MAX_GIF_STEPS + b"\x00\x3b"
    assert image_header.image_size(tiny).numpy()[2] == (
        image_header.TOO_COMPLEX
    )
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="GIF has more blocks than 65536 steps"):
        image_header.assert_within(tiny, 10**6)
    # The descriptor, MAX - 3 sub-blocks and the trailer: MAX - 1 steps.
    fits = frame + b"\x01\x00" * (image_header.MAX_GIF_STEPS - 3) + (
        b"\x00\x3b"
    )
    np.testing.assert_array_equal(image_header.image_size(fits), [8, 8, 64])


def test_animated_webp_is_refused_before_the_decoder_sees_it():
    # TF 2.20's decoder corrupts the heap on it (the process aborts), so
    # this test never calls it.
    animated = image_bombs.animated_webp()
    assert animated[12:16] == b"VP8X"
    height, width, pixels = image_header.image_size(animated).numpy()
    assert (height, width) == (20, 30)
    assert pixels == image_header.ANIMATED_WEBP
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="animated WebP is not supported"):
        image_header.assert_within(animated, 10**6)

    @tf.function
    def in_graph(encoded):
        with tf.control_dependencies(
            [image_header.assert_within(encoded, 10**6)]
        ):
            return tf.identity(encoded)

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="animated WebP is not supported"):
        in_graph(tf.constant(animated))


def test_the_eager_png_reader_agrees_with_the_graph():
    import tensorflow as tf

    from shrewd_tf.data.image_header import _png_size
    from shrewd_tf.data.image_header import image_size

    for height, width in ((1, 1), (28, 28), (3, 40), (40, 3)):
        png = tf.io.encode_png(
            tf.zeros((height, width, 1), tf.uint8)
        ).numpy()
        assert _png_size(png) == (height, width)
        assert tuple(image_size(png).numpy()[:2]) == (height, width)
    assert _png_size(b"\x89PNG\r\n\x1a\n") is None  # too short for IHDR
    assert _png_size(b"GIF89a" + bytes(30)) is None

"""An encoded image's size, read from its header inside the graph.

A decoder allocates what the header declares before it reads a pixel,
and an image of zeros compresses about 1,000:1 (PNG's deflate, GIF's LZW),
so a request of a few hundred kilobytes can declare a 20000 x 20000 image:
half a gigabyte decoded, gigabytes more once `preprocess` converts it to
float32. `image_size` reads the declared size from the header bytes, with
core TensorFlow ops only (so it runs eagerly, in `tf.data`, in Beam and
inside an exported SavedModel), and `assert_within` refuses an image over
a pixel cap before `tf.io.decode_image` runs.

Formats are recognised by the magic bytes `tf.io.decode_image` looks at:

* PNG: width and height of the IHDR chunk (big-endian, bytes 16..24);
* JPEG: `tf.io.extract_jpeg_shape` (libjpeg reads the markers up to the
  SOF, nothing is decoded);
* GIF: the logical screen (little-endian, bytes 6..10) and every frame's
  image descriptor, found by walking the blocks. The decoder (giflib's
  `DGifSlurp`) keeps every frame's raster, so a GIF's pixel count is the
  larger of its screen and the sum of its frame areas;
* BMP: int32 width and height at bytes 18 and 22 (negative height: rows
  top-down), read as `tf.io.decode_bmp` reads them;
* WebP: the VP8X canvas, or the VP8L or VP8 frame header. An animated
  WebP (VP8X animation flag) is refused whatever its size: TensorFlow
  2.20's WebP decoder corrupts the heap on one (`free(): invalid next
  size`, the process aborts), even with `expand_animations=False`.

Other bytes give UNKNOWN (-1) and are left to the decoder, which refuses
them (or decodes a format added to it later).

Example:
    height, width, pixels = image_size(png_bytes)  # int64 scalars
    with tf.control_dependencies([assert_within(png_bytes, 2**26)]):
        image = tf.io.decode_image(png_bytes)
"""

import tensorflow as tf

UNKNOWN = -1
TOO_COMPLEX = -2  # pixels of a GIF that needs over MAX_GIF_STEPS steps
ANIMATED_WEBP = -3  # pixels of an animated WebP: never decoded
_WEBP_ANIMATION = 0x02  # in the VP8X flags byte
# Steps of the GIF block walk: a 8 MiB GIF of full 255-byte sub-blocks
# needs 33,000, so this leaves room for 30,000 frames and extensions;
# a GIF of 1-byte sub-blocks reaches it in about 1.4 s (~20 us a step,
# 2 shared cores).
MAX_GIF_STEPS = 2**16
HEAD_BYTES = 32  # every header field read below lies in the first 32 bytes
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_GIF = b"GIF8"
_BMP = b"BM"
_GIF_EXTENSION, _GIF_IMAGE = 0x21, 0x2C


def _starts_with(head, magic, offset=0):
    expected = tf.constant(list(magic), tf.int64)
    return tf.reduce_all(tf.equal(head[offset:offset + len(magic)], expected))


def _unsigned(values, start, count, big_endian=False):
    """The unsigned integer of `values[start:start + count]` (int64)."""
    places = range(count - 1, -1, -1) if big_endian else range(count)
    total = tf.constant(0, tf.int64)
    for offset, place in enumerate(places):
        total += tf.bitwise.left_shift(values[start + offset], 8 * place)
    return total


def _int32(values, start):
    """A little-endian signed int32 (as int64)."""
    value = _unsigned(values, start, 4)
    return tf.where(value >= 2**31, value - 2**32, value)


def _head(encoded):
    """The first HEAD_BYTES bytes as int64 [HEAD_BYTES], zero-padded."""
    padded = tf.strings.join(
        [tf.strings.substr(encoded, 0, HEAD_BYTES), b"\0" * HEAD_BYTES]
    )
    head = tf.io.decode_raw(tf.strings.substr(padded, 0, HEAD_BYTES),
                            tf.uint8)
    return tf.cast(tf.reshape(head, [HEAD_BYTES]), tf.int64)


def _colours(flags):
    """Colours in a GIF colour table whose packed field is `flags`."""
    return tf.bitwise.left_shift(
        tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7)
    )


def _sizes(height, width):
    return tf.stack([height, width, height * width])


def _webp(head):
    """(height, width, pixels) of a WebP: VP8X canvas, VP8L or VP8."""
    vp8l_bits = _unsigned(head, 21, 4)
    return tf.case(
        [
            (
                _starts_with(head, b"VP8X", 12),
                lambda: tf.where(
                    tf.bitwise.bitwise_and(head[20], _WEBP_ANIMATION) > 0,
                    tf.stack([
                        _unsigned(head, 27, 3) + 1,
                        _unsigned(head, 24, 3) + 1,
                        tf.constant(ANIMATED_WEBP, tf.int64),
                    ]),
                    _sizes(
                        _unsigned(head, 27, 3) + 1,
                        _unsigned(head, 24, 3) + 1,
                    ),
                ),
            ),
            (
                _starts_with(head, b"VP8L", 12),
                lambda: _sizes(
                    tf.bitwise.bitwise_and(
                        tf.bitwise.right_shift(vp8l_bits, 14), 0x3FFF
                    ) + 1,
                    tf.bitwise.bitwise_and(vp8l_bits, 0x3FFF) + 1,
                ),
            ),
            (
                _starts_with(head, b"VP8 ", 12),
                lambda: _sizes(
                    tf.bitwise.bitwise_and(_unsigned(head, 28, 2), 0x3FFF),
                    tf.bitwise.bitwise_and(_unsigned(head, 26, 2), 0x3FFF),
                ),
            ),
        ],
        default=lambda: tf.constant([UNKNOWN] * 3, tf.int64),
    )


@tf.function(
    input_signature=[tf.TensorSpec([], tf.string)], autograph=False
)
def _gif(encoded):
    """(height, width, pixels) of a GIF: the screen and all its frames.

    Walks the blocks after the header: an extension (0x21, label, data
    sub-blocks), an image descriptor (0x2C, left, top, width, height,
    flags, local colour table, LZW code size, data sub-blocks), anything
    else ends the walk (the trailer 0x3B, or bytes the decoder refuses).
    A step reads one block start or skips one data sub-block (up to 256
    bytes; an inner loop of a few ops): a 1.3 MB GIF takes 5,300 steps.
    A GIF needing MAX_GIF_STEPS (tiny blocks by the million: a CPU bomb
    rather than a memory one) gives pixels TOO_COMPLEX.
    """
    data = tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int64)
    data = tf.concat([data, tf.zeros([16], tf.int64)], 0)  # reads past end
    size = tf.size(data, out_type=tf.int64) - 16
    flags = data[10]
    start = 13 + tf.where(flags >= 128, 3 * _colours(flags), 0)

    def skip_data(steps, pos):
        """Past a block's data sub-blocks (length byte, data) and its 0."""
        steps, pos = tf.while_loop(
            lambda steps, pos: (pos < size) & (data[pos] > 0) & (
                steps < MAX_GIF_STEPS
            ),
            lambda steps, pos: (steps + 1, pos + 1 + data[pos]),
            (steps, pos),
        )
        return steps, pos + 1

    def block(steps, pos, height, width, area):
        byte = data[pos]
        is_extension = tf.equal(byte, _GIF_EXTENSION)
        is_image = tf.equal(byte, _GIF_IMAGE)
        descriptor = data[pos + 1:pos + 10]
        left, top = _unsigned(descriptor, 0, 2), _unsigned(descriptor, 2, 2)
        frame_w = _unsigned(descriptor, 4, 2)
        frame_h = _unsigned(descriptor, 6, 2)
        local = descriptor[8]
        image_data = pos + 11 + tf.where(
            local >= 128, 3 * _colours(local), 0
        )
        # Anything but a block ends the walk: data from `size` is empty.
        steps, pos = skip_data(
            steps + 1,
            tf.where(is_extension, pos + 2,
                     tf.where(is_image, image_data, size)),
        )
        return (
            steps,
            pos,
            tf.where(is_image, tf.maximum(height, top + frame_h), height),
            tf.where(is_image, tf.maximum(width, left + frame_w), width),
            tf.where(is_image, area + frame_w * frame_h, area),
        )

    zero = tf.constant(0, tf.int64)
    steps, pos, height, width, area = tf.while_loop(
        lambda steps, pos, *_: (pos < size) & (steps < MAX_GIF_STEPS),
        block,
        (zero, start, _unsigned(data, 8, 2), _unsigned(data, 6, 2), zero),
    )
    pixels = tf.where(
        steps >= MAX_GIF_STEPS, tf.constant(TOO_COMPLEX, tf.int64),
        tf.maximum(height * width, area),
    )
    return tf.stack([height, width, pixels])


def image_size(encoded):
    """(height, width, pixels) an encoded image declares, int64 [3].

    Args:
        encoded: scalar tf.string (or bytes) of an encoded image.

    Returns:
        int64 tensor [3]: height, width and the pixels the decoder
        allocates (height x width; for a GIF, at least the sum of its frame
        areas, or TOO_COMPLEX for one with over MAX_GIF_STEPS blocks;
        ANIMATED_WEBP for an animated WebP).
        [-1, -1, -1] (UNKNOWN) for bytes of no format listed in the module
        docstring.

    Raises:
        tf.errors.InvalidArgumentError: bytes starting like a JPEG whose
            markers libjpeg cannot read (at run time inside a graph).
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    head = _head(encoded)
    return tf.case(
        [
            (
                _starts_with(head, _PNG),
                lambda: _sizes(
                    _unsigned(head, 20, 4, big_endian=True),
                    _unsigned(head, 16, 4, big_endian=True),
                ),
            ),
            (
                _starts_with(head, _JPEG),
                lambda: _sizes(
                    *tf.unstack(
                        tf.io.extract_jpeg_shape(encoded, tf.int64)[:2]
                    )
                ),
            ),
            (_starts_with(head, _GIF), lambda: _gif(encoded)),
            (
                _starts_with(head, _BMP),
                lambda: _sizes(
                    tf.abs(_int32(head, 22)), _int32(head, 18)
                ),
            ),
            (
                _starts_with(head, b"RIFF")
                & _starts_with(head, b"WEBP", 8),
                lambda: _webp(head),
            ),
        ],
        default=lambda: tf.constant([UNKNOWN] * 3, tf.int64),
        exclusive=False,
    )


def assert_within(encoded, max_pixels):
    """An op that fails when an encoded image declares over `max_pixels`.

    Run the decoder under `tf.control_dependencies([assert_within(...)])`;
    eagerly the check runs (and raises) at once.

    Args:
        encoded: scalar tf.string of an encoded image.
        max_pixels: int >= 1; an image passes when its height, its width
            and its pixel count (`image_size`) are all at most this.

    Returns:
        the assert op (None when run eagerly).

    Raises:
        ValueError: `max_pixels` not a positive int.
        tf.errors.InvalidArgumentError: the image is over the cap; the
            message gives its height x width, its pixel count and the cap
            (at run time inside a graph). Also a GIF of TOO_COMPLEX size
            and an animated WebP, whatever `max_pixels`.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or (
        max_pixels < 1
    ):
        raise ValueError(
            "max_image_pixels must be a positive int. Received: "
            f"max_image_pixels={max_pixels!r}"
        )
    if tf.executing_eagerly():
        encoded = tf.convert_to_tensor(encoded, tf.string)
        size = _png_size(encoded.numpy())
        if size is not None and max(*size, size[0] * size[1]) <= max_pixels:
            return None  # A PNG within the cap: its IHDR read in Python.
        # One traced graph per cap: eagerly, the header walk's few dozen
        # ops cost ~15 ms an image (a Beam job decodes image by image);
        # as a function ~1 ms (the graph's conditionals).
        within, message = _eager_check(max_pixels)(encoded)
        if not bool(within):  # the message alone, not Assert's wrapping
            raise tf.errors.InvalidArgumentError(
                None, None, message.numpy().decode()
            )
        return None
    within, message = _check(encoded, max_pixels)
    return tf.debugging.Assert(within, [message])


_EAGER_CHECKS = {}  # max_pixels -> tf.function of _check


def _png_size(data):
    """(height, width) of PNG bytes' IHDR, read in Python (the graph's
    PNG branch, for eager calls), or None for other bytes."""
    if len(data) < 24 or not data.startswith(_PNG):
        return None
    return (
        int.from_bytes(data[20:24], "big"),
        int.from_bytes(data[16:20], "big"),
    )


def _eager_check(max_pixels):
    check = _EAGER_CHECKS.get(max_pixels)
    if check is None:
        check = _EAGER_CHECKS[max_pixels] = tf.function(
            lambda encoded: _check(encoded, max_pixels),
            input_signature=[tf.TensorSpec([], tf.string)],
        )
    return check


def _check(encoded, max_pixels):
    """(within: bool tensor, message: string tensor) of the cap check."""
    height, width, pixels = tf.unstack(image_size(encoded))
    too_complex = tf.equal(pixels, TOO_COMPLEX)
    animated = tf.equal(pixels, ANIMATED_WEBP)
    # Each side at most the cap first: height * width cannot wrap then.
    within = (height <= max_pixels) & (width <= max_pixels) & (
        pixels <= max_pixels
    ) & ~too_complex & ~animated
    over = tf.strings.join(
        [
            "image is ",
            tf.strings.as_string(height),
            " x ",
            tf.strings.as_string(width),
            " (",
            tf.strings.as_string(pixels),
            " pixels decoded), over the limit of "
            f"max_image_pixels={max_pixels}: send a smaller image, or "
            "raise max_image_pixels (preprocessing.json at export, "
            "`preprocess.decode_image(..., max_image_pixels=)`)",
        ]
    )
    message = tf.where(
        too_complex,
        f"GIF has more blocks than {MAX_GIF_STEPS} steps of "
        "image_header's walk can read (frames and extensions by the "
        "hundred thousand): re-encode it, or send a PNG or JPEG",
        tf.where(
            animated,
            "animated WebP is not supported (TensorFlow's WebP decoder "
            "fails on it): send one frame as PNG, JPEG or still WebP",
            over,
        ),
    )
    return within, message

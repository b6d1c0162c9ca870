"""THE image preprocessing: encoded bytes or pixels -> what the model sees.

`preprocess_image` is the only code that decodes, converts channels,
resizes, quantises and standardises images. Every path calls it, so an
image is turned into the same model input wherever it comes from:

* Beam, `pipeline.make_tfrecords` (via `image_folder.prepare_image`):
  source image -> stored uint8 pixels (re-encoded PNG);
* training and evaluation inputs (`records.parse_example` for TFRecords,
  `pipelines` for IDX arrays and tfds, `image_dataset.make_image_dataset`);
* the exported SavedModel (`export.saved_model`, both signatures), and so
  `pipeline.bulk_encode` and TF Serving, which call that graph.

Steps, in order (only core TensorFlow ops, so it runs eagerly, in
`tf.data`, in Beam DoFns and inside a SavedModel):

1. decode (string input): the size the header declares is checked
   against `max_image_pixels` (`image_header`: a decompression bomb is
   refused before the decoder allocates it), then `tf.io.decode_image` in
   the file's own channel count (PNG, JPEG, BMP, GIF: first frame, WebP);
2. channels: alpha dropped; grey tiled to RGB; RGB to grey with
   `tf.image.rgb_to_grayscale` (0.2989 R + 0.5870 G + 0.1140 B), rounded;
   4 channels: opaque alpha (255) appended;
3. resize, only when the size differs from H x W: in float32, bilinear with
   antialiasing, aspect ratio not kept;
4. round half to even, clip to 0..255, uint8: the stored form;
5. standardise, only with `mean` and `std`: `(x - mean) / std`, float32.

Why these numerics:

* Quantising to uint8 after the resize (step 4) is what storage does
  anyway (PNG records, uint8 arrays). Doing it in every path, serving
  included, makes served pixels equal to stored ones, bit for bit, rather
  than within a resize's float rounding; rounding (not truncating, as a
  bare `tf.cast` would) keeps the mean brightness.
* Antialiased bilinear (`antialias=True`, the triangle kernel stretched to
  the output pixel's footprint, like Pillow's BILINEAR) averages every
  input pixel when shrinking; plain bilinear reads only the 2 x 2 nearest
  and skips pixels beyond a 2x reduction (aliasing). Upscaling is plain
  bilinear either way, unlike "area", which turns blocky.
* MAX_IMAGE_PIXELS, the default cap, is 2**26 = 67,108,864 pixels
  (8192 x 8192): above the 12 to 50 megapixels of camera photos, far
  above the under-a-megapixel photos of ImageNet. An image at the cap is
  at most 256 MiB decoded (RGBA) and 1 GiB as float32 in step 2. Without
  it, a valid 20000 x 20000 grey PNG of zeros (389 KB) decodes to 400 MB,
  1.6 GB as float32 and 4.8 GB tiled to RGB (peak RSS growth measured for
  a grey target: 1.9 GB; refused by the cap: none). Exports record their
  cap in `preprocessing.json` (`export.saved_model.ImagePreprocessing`).
* Converting channels here rather than with `decode_image(channels=C)`
  gives arrays (IDX, tfds) and encoded bytes one conversion; the PNG and
  JPEG decoders would each convert RGB to grey with their own
  fixed-point weights.

Example:
    pixels = preprocess_image(png_bytes, (32, 32, 3))  # uint8 [32, 32, 3]
    inputs = preprocess_image(png_bytes, (32, 32, 3), mean, std)  # float32
"""

import tensorflow as tf

from shrewd_tf.data import image_header

CHANNELS = (1, 3, 4)
MAX_IMAGE_PIXELS = 2**26  # 8192 x 8192; see the module docstring
RESIZE_METHOD = "bilinear"
ANTIALIAS = True
OPAQUE = 255.0


def _check_shape(image_shape):
    shape = tuple(image_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise ValueError(
            "image_shape must be three positive ints (H, W, C). "
            f"Received: image_shape={image_shape}"
        )
    if shape[2] not in CHANNELS:
        raise ValueError(
            f"images have {CHANNELS} channels. Received: "
            f"image_shape={image_shape}"
        )
    return shape


def _channels_from(image, have, channels):
    """float32 [..., c] with c = `have` known -> [..., channels]."""
    if have in (2, 4):  # grey + alpha, RGB + alpha
        image = image[..., : have - 1]
        have -= 1
    if have == channels:
        return image
    if channels == 1:
        return tf.round(tf.image.rgb_to_grayscale(image))
    rgb = image if have == 3 else tf.image.grayscale_to_rgb(image)
    if channels == 3:
        return rgb
    alpha = tf.fill(tf.concat([tf.shape(rgb)[:-1], [1]], 0), OPAQUE)
    return tf.concat([rgb, alpha], axis=-1)


def _convert_channels(image, channels):
    """float32 [..., c] -> [..., channels]; c may be known only at run time
    (a decoded image inside a graph)."""
    have = image.shape[-1]
    if have is not None:
        if have not in (1, 2, 3, 4):
            raise ValueError(
                "images have 1 to 4 channels. Received: "
                f"shape={tuple(image.shape)}"
            )
        return _channels_from(image, have, channels)
    known = image.shape[:-1]

    def branch(count):
        return lambda: _channels_from(
            tf.ensure_shape(image, known.concatenate([count])), count,
            channels,
        )

    # decode_image yields 1 to 4 channels; index c - 1 picks the branch.
    converted = tf.switch_case(
        tf.shape(image)[-1] - 1, [branch(count) for count in (1, 2, 3, 4)]
    )
    return tf.ensure_shape(converted, known.concatenate([channels]))


def decode_image(encoded, channels=None, max_image_pixels=MAX_IMAGE_PIXELS):
    """Encoded image bytes -> uint8 [h, w, C] (steps 1 and 2, no resize).

    Args:
        encoded: scalar tf.string (or bytes): PNG, JPEG, BMP, GIF (first
            frame) or WebP.
        channels: C in (1, 3, 4), converted as `preprocess_image` does, or
            None for the file's own channel count.
        max_image_pixels: int; an image whose header declares a height, a
            width or a pixel count above it is refused before decoding.
            None: no check, for bytes this code wrote itself (the check
            costs 0.15 ms a 32 x 32 PNG, 0.5 ms a 224 x 224 JPEG in
            tf.data on 2 busy cores; decoding them, 0.14 and 1.5 ms).

    Returns:
        uint8 tensor [h, w, C].

    Raises:
        ValueError: `max_image_pixels` not a positive int.
        tf.errors.InvalidArgumentError: bytes TensorFlow cannot decode, or
            an image over `max_image_pixels` (the message gives its size,
            the cap and how to raise it).
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    check = None
    if max_image_pixels is not None:
        check = image_header.assert_within(encoded, max_image_pixels)
    with tf.control_dependencies([check] if check is not None else []):
        image = tf.io.decode_image(
            encoded, channels=0, expand_animations=False
        )
    if channels is None:
        return image
    if channels not in CHANNELS:
        raise ValueError(
            f"channels must be one of {CHANNELS}. Received: "
            f"channels={channels}"
        )
    if image.shape[-1] == channels:
        return image
    converted = _convert_channels(tf.cast(image, tf.float32), channels)
    return tf.cast(converted, tf.uint8)  # whole values in 0..255 already


def _resize(image, size):
    """float32 [..., h, w, C] -> [..., H, W, C]; untouched when h, w = size."""
    static = tuple(image.shape[-3:-1])
    if None not in static:
        if static == size:
            return image
        return tf.image.resize(
            image, size, method=RESIZE_METHOD, antialias=ANTIALIAS
        )
    same = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], size))
    return tf.cond(
        same,
        lambda: image,
        lambda: tf.image.resize(
            image, size, method=RESIZE_METHOD, antialias=ANTIALIAS
        ),
    )


def preprocess_image(image, image_shape, mean=None, std=None,
                     max_image_pixels=MAX_IMAGE_PIXELS):
    """An image (encoded or pixels) -> stored pixels or the model input.

    The steps and the reasons for their numerics are in the module
    docstring. An uint8 image already H x W x C passes through unchanged
    (then standardised when asked).

    Args:
        image: a scalar tf.string of encoded bytes, or pixels [h, w, c] or
            a batch [N, h, w, c] (uint8, or floats in 0..255).
        image_shape: (H, W, C), C in (1, 3, 4).
        mean, std: per-channel statistics ([C] or one value) in 0..255
            pixel units, both or neither.
        max_image_pixels: the cap of `decode_image` on encoded bytes (None:
            no check).

    Returns:
        uint8 [..., H, W, C] without `mean`/`std` (what storage holds),
        float32 `(x - mean) / std` [..., H, W, C] with them.

    Raises:
        ValueError: a bad `image_shape`, only one of `mean` and `std`, or
            pixels with more than 4 channels.
        tf.errors.InvalidArgumentError: bytes TensorFlow cannot decode, or
            an image over `max_image_pixels` (at run time inside a graph).
    """
    height, width, channels = _check_shape(image_shape)
    if (mean is None) != (std is None):
        raise ValueError(
            f"Give both mean and std or neither. Received: mean={mean}, "
            f"std={std}"
        )
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        image = decode_image(image, max_image_pixels=max_image_pixels)
    passes = image.dtype == tf.uint8 and tuple(image.shape[-3:]) == (
        height, width, channels
    )
    if passes:
        pixels = image
    else:
        values = _convert_channels(tf.cast(image, tf.float32), channels)
        values = _resize(values, (height, width))
        values = tf.clip_by_value(tf.round(values), 0.0, 255.0)
        pixels = tf.cast(values, tf.uint8)
        pixels = tf.ensure_shape(
            pixels, pixels.shape[:-3].concatenate([height, width, channels])
        )
    if mean is None:
        return pixels
    mean = tf.cast(mean, tf.float32)
    std = tf.cast(std, tf.float32)
    return (tf.cast(pixels, tf.float32) - mean) / std

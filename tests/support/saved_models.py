"""Small SavedModels shaped like shrewd-tf's export, and a NumPy reference.

`write_encoder(path, code_bits, seed)` saves a tf.Module with two
signatures, as TF Serving sees an exported encoder:

* "serving_default": `image_bytes` tf.string [N] (PNG) ->
  {"code": float32 [N, d], "bits": uint8 [N, d / 8]}
* "embed_pixels": `pixels` float32 [N, H, W, 3] (0..255) -> the same.

The encoder: mean RGB over the pixels / 255, minus 0.5, times a fixed
random projection W [3, d] (seeded), times 4, sigmoid; bits are code > 0.5
packed MSB-first. `reference_encode` recomputes it in NumPy. With
`num_classes`, the signatures also output "logits" float32 [N, num_classes]
(mean RGB / 255 - 0.5 times another seeded projection; `reference_logits`),
as a label-trained export does.
"""

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from shrewd_tf.data import preprocess

SCALE = 4.0


def projection(code_bits, seed):
    """The fixed projection W [3, code_bits] of an encoder."""
    return (
        np.random.default_rng(seed)
        .normal(size=(3, code_bits))
        .astype(np.float32)
    )


def logits_projection(num_classes, seed):
    """The fixed projection [3, num_classes] of an encoder's logits."""
    return projection(num_classes, seed + 1000)


class _Encoder(tf.Module):
    def __init__(self, code_bits, seed, num_classes=None,
                 max_image_pixels=None):
        super().__init__()
        self.w = tf.Variable(projection(code_bits, seed))
        self.code_bits = code_bits
        self.max_image_pixels = max_image_pixels
        self.w_logits = (
            None
            if num_classes is None
            else tf.Variable(logits_projection(num_classes, seed))
        )

    def _decode(self, image_bytes):
        if self.max_image_pixels is None:
            return tf.io.decode_png(image_bytes, channels=3)
        return preprocess.decode_image(
            image_bytes, 3, max_image_pixels=self.max_image_pixels
        )

    def _encode(self, pooled):
        code = tf.sigmoid(tf.matmul(pooled / 255.0 - 0.5, self.w) * SCALE)
        bits = tf.reshape(
            tf.cast(code > 0.5, tf.uint8), [-1, self.code_bits // 8, 8]
        )
        weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.uint8)
        outputs = {
            "code": code,
            "bits": tf.reduce_sum(bits * weights, axis=-1),
        }
        if self.w_logits is not None:
            outputs["logits"] = tf.matmul(pooled / 255.0 - 0.5, self.w_logits)
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_bytes(self, image_bytes):
        pooled = tf.map_fn(
            lambda b: tf.reduce_mean(
                tf.cast(self._decode(b), tf.float32),
                axis=[0, 1],
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec([3], tf.float32),
        )
        return self._encode(pooled)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    def serve_pixels(self, pixels):
        return self._encode(tf.reduce_mean(pixels, axis=[1, 2]))


def write_encoder(path, code_bits=16, seed=0, num_classes=None,
                  max_image_pixels=None):
    """Saves the encoder SavedModel to `path` (a version directory).

    With `num_classes`, it also outputs "logits". With `max_image_pixels`,
    images are decoded as the real export decodes them
    (`preprocess.decode_image`: any format, refused over the cap before
    decoding) rather than with `tf.io.decode_png`.
    """
    module = _Encoder(code_bits, seed, num_classes, max_image_pixels)
    tf.saved_model.save(
        module,
        os.fspath(path),
        signatures={
            "serving_default": module.serve_bytes,
            "embed_pixels": module.serve_pixels,
        },
    )
    return path


def write_broken_version(path):
    """A version directory whose saved_model.pb is garbage."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    return path


def reference_encode(pixels, code_bits=16, seed=0):
    """NumPy encoder: pixels [N, H, W, 3] (0..255) -> (code, packed bits)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    pooled = pixels.mean(axis=(1, 2)) / 255.0 - 0.5
    code = 1.0 / (1.0 + np.exp(-SCALE * pooled @ projection(code_bits, seed)))
    return code.astype(np.float32), np.packbits(code > 0.5, axis=1)


def reference_logits(pixels, num_classes, seed=0):
    """NumPy logits of an encoder written with `num_classes`: [N, C]."""
    pixels = np.asarray(pixels, dtype=np.float64)
    pooled = pixels.mean(axis=(1, 2)) / 255.0 - 0.5
    return pooled @ logits_projection(num_classes, seed)


def random_image(rng, size=6):
    """uint8 [size, size, 3] pixels."""
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def png_bytes(pixels):
    """Encodes uint8 [H, W, 3] pixels as PNG (Pillow, not TF)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()

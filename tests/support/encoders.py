"""Small SavedModel encoders and TFRecord directories for the index tests.

`save_fake_encoder` writes a SavedModel shaped like an export: a
`serving_default` signature taking encoded PNGs tf.string [N] (argument
`encoded_images`, so tests find the name generically) and returning
{"code": float32 [N, d], "bits": uint8 [N, d/8]}, plus a "pixels" signature
taking float32 [N, 8, 8, 3]. Codes are sigmoid(4 (p - 0.5) W) of the 2x2
mean-pooled pixels p in [0, 1] and a fixed random W [48, d]; an all-black
image gives NaN codes (0/0), an image that is not an 8x8 PNG an
InvalidArgumentError.
"""

import os

import numpy as np
import tensorflow as tf

from shrewd_tf.data import records as data
from tests.support.records import write_shards

IMAGE_SHAPE = (8, 8, 3)


class _FakeEncoder(tf.Module):
    def __init__(self, code_bits, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.projection = tf.Variable(
            rng.normal(size=(48, code_bits)).astype(np.float32)
        )
        self.code_bits = code_bits

    @tf.function(
        input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32)]
    )
    def encode_pixels(self, pixels):
        pooled = tf.nn.avg_pool2d(pixels / 255.0, 2, 2, "VALID")
        flat = tf.reshape(pooled, [-1, 48])
        mean = tf.reduce_mean(flat, axis=1, keepdims=True)
        code = tf.sigmoid(4.0 * (flat - 0.5) @ self.projection)
        code = code * (mean / mean)  # NaN for an all-black image.
        bits = tf.reshape(
            tf.cast(code > 0.5, tf.int32), [-1, self.code_bits // 8, 8]
        )
        weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
        packed = tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)
        return {"code": code, "bits": packed}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode_bytes(self, encoded_images):
        def decode(image):
            pixels = tf.io.decode_png(image, channels=3)
            return tf.cast(tf.reshape(pixels, IMAGE_SHAPE), tf.float32)

        pixels = tf.map_fn(
            decode,
            encoded_images,
            fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.float32),
        )
        return self.encode_pixels(pixels)


def save_fake_encoder(export_dir, code_bits=32, seed=0):
    """Writes the fake encoder SavedModel to `export_dir`; returns it."""
    module = _FakeEncoder(code_bits, seed)
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.encode_bytes,
            "pixels": module.encode_pixels,
        },
    )
    return export_dir


def versioned_model_root(directory):
    """`directory`/fake/<version>/: versions 2 and 10 (newest) and junk.

    Also "11-tmp" (not an integer version) and "12" (no saved_model.pb).
    Returns the model root as a string.
    """
    root = os.path.join(str(directory), "fake")
    save_fake_encoder(os.path.join(root, "2"), seed=2)
    save_fake_encoder(os.path.join(root, "10"), seed=10)
    os.makedirs(os.path.join(root, "11-tmp"))
    os.makedirs(os.path.join(root, "12"))
    return root


def make_records(num, seed=0, prefix="test", num_classes=3):
    """`num` ImageRecords of random 8x8 RGB PNGs with labels and captions."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num):
        # Pixels 1..255, so no image is all-black.
        image = rng.integers(1, 256, IMAGE_SHAPE, dtype=np.uint8)
        label = int(rng.integers(0, num_classes))
        records.append(
            data.ImageRecord(
                id=f"{prefix}/{i:05d}",
                image=data.encode_png(image),
                label=label,
                label_name=f"class_{label}",
                caption=f"caption {i}",
            )
        )
    return records


def black_record(record_id):
    """A record whose image is all-black: the fake encoder gives NaN."""
    image = data.encode_png(np.zeros(IMAGE_SHAPE, np.uint8))
    return data.ImageRecord(id=record_id, image=image, label=0,
                            label_name="class_0")


def write_records_dir(directory, records_by_split, num_shards=2):
    """Writes `records_by_split` dealt round-robin into `num_shards` shards
    per split, and dataset_info.json.

    Records are `ImageRecord`s, or bytes written as they are (a record that
    is no Example).
    """
    for split, records in records_by_split.items():
        write_shards(
            directory, split,
            [records[shard::num_shards] for shard in range(num_shards)],
        )
    data.DatasetInfo(
        image_shape=IMAGE_SHAPE,
        class_names=("class_0", "class_1", "class_2"),
        splits={s: len(r) for s, r in records_by_split.items()},
    ).save(directory)
    return directory


def encode_directly(saved_model_dir, images):
    """Codes of `images` (bytes) from one direct serving_default call."""
    loaded = tf.saved_model.load(saved_model_dir)
    function = loaded.signatures["serving_default"]
    outputs = function(encoded_images=tf.constant(images, tf.string))
    return outputs["code"].numpy()

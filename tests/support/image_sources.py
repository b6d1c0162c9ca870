"""Small generated image sources: fake Fashion-MNIST IDX files, captions
folders, and a NumPy reference of the antialiased 2x downscale.

Shared by the data, Beam-job and export-parity tests.
"""

import gzip
import json
import os
import struct

import numpy as np
import tensorflow as tf

from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets

CLASS_NAMES = ("cat", "dog")


def pixels(height, width, channels, seed=0):
    """Random uint8 [height, width, channels] pixels (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def decode(encoded):
    """Encoded image bytes -> uint8 pixels in the file's own channels."""
    return tf.io.decode_image(encoded, expand_animations=False).numpy()


# === Fashion-MNIST IDX ===


def write_idx(path, array):
    """uint8 `array` -> gzip IDX file; header written by hand (big-endian)."""
    array = np.asarray(array, np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fake_fashion_mnist(directory, counts=(("train", 10), ("test", 4))):
    """Random 28x28 IDX splits in `directory` -> {split: (images, labels)}."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in counts:
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images_name, labels_name = datasets.FASHION_MNIST_FILES[split]
        write_idx(os.path.join(directory, images_name), images)
        write_idx(os.path.join(directory, labels_name), labels)
        arrays[split] = (images, labels)
    return arrays


# === Captions folders ===


def write_captions_folder(directory):
    """A captions.jsonl with good rows and one of each problem.

    Returns:
        (path, {id: (label, caption, decoded image file)} of the good rows,
        {id: dead-letter stage} of the bad ones).
    """
    os.makedirs(os.path.join(directory, "img"), exist_ok=True)
    good, bad, rows = {}, {}, []

    def add(record_id, image_name, caption, label, content=None):
        if content is not None:
            with open(os.path.join(directory, "img", image_name), "wb") as f:
                f.write(content)
        rows.append({"id": record_id, "image": f"img/{image_name}",
                     "caption": caption, "label": label})

    for i, (name, encode) in enumerate([
        ("g0.png", lambda a: data.encode_png(a)),
        ("g1.jpg", lambda a: tf.io.encode_jpeg(a, quality=100).numpy()),
        ("g2.png", lambda a: data.encode_png(a)),
    ]):
        encoded = encode(pixels(8, 8, 3, seed=i))
        add(f"good{i}", name, f"a photo {i}", CLASS_NAMES[i % 2], encoded)
        good[f"good{i}"] = (i % 2, f"a photo {i}", decode(encoded))
    add("missing", "missing.png", "gone", "cat")
    bad["missing"] = "read_image"
    add("corrupt", "corrupt.png", "broken", "dog", b"\x89PNG this is not")
    bad["corrupt"] = "decode_image"
    add("nocaption", "n.png", "  ", "cat", data.encode_png(pixels(8, 8, 3)))
    bad["nocaption"] = "check_row"
    add("zebra", "z.png", "a zebra", "zebra", data.encode_png(pixels(8, 8, 3)))
    bad["zebra"] = "check_row"
    add("tiny", "t.png", "tiny", "cat", data.encode_png(pixels(4, 4, 3)))
    bad["tiny"] = "check_image"
    path = os.path.join(directory, "captions.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"id": "good0", "image": "img/g2.png",
                            "caption": "again", "label": "cat"}) + "\n")
        f.write("{broken json\n")
    bad["good0#dup"] = "duplicate_id"
    bad["parse"] = "parse_row"
    return path, good, bad


# === Resize reference ===


def reference_halving(image):
    """2x downscale with an antialiased bilinear (triangle) kernel.

    Output pixel i is centred at input coordinate 2i + 1; input pixel j at
    j + 0.5; the kernel is stretched by the scale 2: w = max(0, 1 - d / 2),
    renormalised over the input pixels inside the image. Rounded and
    clipped to 0..255, like the stored form.
    """
    def axis_weights(n_in):
        n_out = n_in // 2
        weights = np.zeros((n_out, n_in))
        for i in range(n_out):
            for j in range(n_in):
                weights[i, j] = max(0.0, 1 - abs(j + 0.5 - (2 * i + 1)) / 2)
            weights[i] /= weights[i].sum()
        return weights

    rows = axis_weights(image.shape[0])
    cols = axis_weights(image.shape[1])
    out = np.einsum("ij,jkc,lk->ilc", rows, image.astype(np.float64), cols)
    return np.clip(np.round(out), 0, 255)

"""Tests for the pixel cap of shrewd_tf.data.preprocess (`max_image_pixels`):
images at and under it decode, images over it are refused before decoding,
in every format, eagerly, in a graph and in tf.data; a real decompression
bomb is refused without the memory decoding it would take."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shrewd_tf.data import image_folder
from shrewd_tf.data import preprocess
from tests import paths
from tests.support import image_bombs

HEIGHT, WIDTH = 6, 5
AT_CAP = HEIGHT * WIDTH


def encoded(fmt, height=HEIGHT, width=WIDTH):
    rng = np.random.default_rng(height * 100 + width)
    values = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_at_the_cap_decode_and_one_pixel_over_is_refused(fmt):
    image = encoded(fmt)
    at_cap = preprocess.decode_image(image, max_image_pixels=AT_CAP)
    np.testing.assert_array_equal(
        at_cap, tf.io.decode_image(image, expand_animations=False)
    )
    assert preprocess.decode_image(image, 3, max_image_pixels=AT_CAP + 1
                                   ).shape == (HEIGHT, WIDTH, 3)
    message = f"image is {HEIGHT} x {WIDTH} ({AT_CAP} pixels decoded), " \
        f"over the limit of max_image_pixels={AT_CAP - 1}"
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        preprocess.decode_image(image, max_image_pixels=AT_CAP - 1)
    assert error.value.message.startswith(message)
    assert "raise max_image_pixels" in error.value.message


def test_the_cap_holds_in_a_graph_and_in_tf_data():
    shape = (4, 4, 3)
    in_graph = tf.function(
        lambda b: preprocess.preprocess_image(b, shape, max_image_pixels=AT_CAP)
    )
    assert in_graph(tf.constant(encoded("PNG"))).shape == shape
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"image is {HEIGHT} x {WIDTH + 1} "):
        in_graph(tf.constant(encoded("PNG", width=WIDTH + 1)))
    dataset = tf.data.Dataset.from_tensor_slices(
        [encoded("JPEG"), encoded("JPEG", height=HEIGHT + 1)]
    ).map(lambda b: preprocess.preprocess_image(b, shape,
                                                max_image_pixels=AT_CAP))
    batches = iter(dataset)
    assert next(batches).shape == shape
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"max_image_pixels={AT_CAP}"):
        next(batches)


def test_the_default_cap_refuses_headers_of_every_format():
    assert preprocess.MAX_IMAGE_PIXELS == 8192 * 8192
    for kind, width, height in image_bombs.HEADER_BOMBS:
        bomb = image_bombs.header_bomb(kind, width, height)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="max_image_pixels=67108864"):
            preprocess.preprocess_image(bomb, (8, 8, 3))


def test_pixels_are_not_capped():
    # The cap is about what an encoded header makes the decoder allocate;
    # pixel input is already in memory.
    pixels = np.zeros((HEIGHT, WIDTH + 1, 3), np.uint8)
    assert preprocess.preprocess_image(
        pixels, (2, 2, 3), max_image_pixels=AT_CAP
    ).shape == (2, 2, 3)


def test_prepare_image_reports_a_bomb_as_a_decode_problem():
    # The Beam record writer's path: a dead letter, not a crash.
    with pytest.raises(image_folder.ImageProblem) as problem:
        image_folder.prepare_image(image_bombs.real_png_bomb(), 3, (8, 8))
    assert problem.value.stage == "decode_image"
    assert "image is 20000 x 20000 (400000000 pixels decoded)" in (
        problem.value.reason
    )


# In a fresh interpreter so that its peak RSS is this case's alone. VmHWM
# (peak RSS) is reset after the warm-up through /proc/self/clear_refs.
_BOMB_SCRIPT = """
import json, sys
import tensorflow as tf
from shrewd_tf.data import preprocess
from tests.support import image_bombs

def kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

cap = int(sys.argv[1])
shape = (8, 8, 1)  # grey: an uncapped decode needs ~2 GB, not ~6
run = tf.function(
    lambda b: preprocess.preprocess_image(b, shape, max_image_pixels=cap))
bomb = tf.constant(image_bombs.real_png_bomb(20000, 20000))
small = tf.constant(image_bombs.real_png_bomb(64, 64))
run(small); preprocess.preprocess_image(small, shape)  # warm up
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kb("VmRSS")
outcomes = []
for attempt in (lambda: run(bomb),
                lambda: preprocess.preprocess_image(bomb, shape,
                                                    max_image_pixels=cap)):
    try:
        attempt()
        outcomes.append("decoded")
    except tf.errors.InvalidArgumentError as e:
        outcomes.append(e.message)
print(json.dumps({"growth_mb": (kb("VmHWM") - before) / 1024,
                  "outcomes": outcomes}))
"""


def run_bomb_script(cap):
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT, str(cap)],
        capture_output=True, text=True, env=env, cwd=paths.REPO_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_real_bomb_is_refused_without_allocating_it():
    # 20000 x 20000 zeros, a valid 390 KB PNG: 400 MB decoded, 1.6 GB as
    # float32. Refused from its header, the peak RSS barely moves.
    result = run_bomb_script(preprocess.MAX_IMAGE_PIXELS)
    for message in result["outcomes"]:
        assert "image is 20000 x 20000 (400000000 pixels decoded)" in message
        assert "max_image_pixels=67108864" in message
    assert result["growth_mb"] < 200, result


def test_no_cap_decodes_as_tensorflow_does():
    image = encoded("PNG")
    in_graph = tf.function(
        lambda b: preprocess.decode_image(b, max_image_pixels=None)
    )
    np.testing.assert_array_equal(
        in_graph(tf.constant(image)),
        tf.io.decode_image(image, expand_animations=False),
    )

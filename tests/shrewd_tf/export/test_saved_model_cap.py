"""The exported `images` signature's pixel cap (`ImagePreprocessing.
max_image_pixels`): recorded in preprocessing.json, held by the graph, and
a decompression bomb refused with a message naming its size and the cap.
The `run` and `exported` fixtures are in conftest.py."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf import contract
from shrewd_tf.data import preprocess
from shrewd_tf.export import saved_model as export
from tests.support import image_bombs
from tests.support.exports import IMAGE_SHAPE
from tests.support.exports import MEAN
from tests.support.exports import STD


def _recorded(version_dir):
    path = os.path.join(
        version_dir, contract.ASSETS_EXTRA_DIR, contract.PREPROCESSING_FILE
    )
    with open(path) as f:
        return json.load(f)


def test_the_default_export_refuses_a_real_bomb(exported):
    assert _recorded(exported[1])["max_image_pixels"] == (
        preprocess.MAX_IMAGE_PIXELS
    )
    serve = exported[2].signatures["serving_default"]
    bomb = tf.constant([image_bombs.real_png_bomb()])
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        serve(images=bomb)
    message = error.value.message
    assert "image is 20000 x 20000 (400000000 pixels decoded)" in message
    assert "max_image_pixels=67108864" in message
    assert "preprocessing.json" in message  # how to raise it


def test_a_smaller_cap_is_recorded_and_served(run, tmp_path):
    height, width = IMAGE_SHAPE[:2]
    preprocessing = {
        "image_shape": list(IMAGE_SHAPE), "mean": MEAN, "std": STD,
        "max_image_pixels": height * width,
    }
    path = export.export_saved_model(
        run[1], tmp_path, "capped", preprocessing=preprocessing
    )
    assert _recorded(path)["max_image_pixels"] == height * width
    serve = tf.saved_model.load(path).signatures["serving_default"]
    at_cap = tf.io.encode_png(np.zeros((height, width, 3), np.uint8))
    over = tf.io.encode_png(np.zeros((height, width + 1, 3), np.uint8))
    assert serve(images=tf.stack([at_cap]))["code"].shape[0] == 1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"over the limit of max_image_pixels="
                             f"{height * width}"):
        serve(images=tf.stack([at_cap, over]))


def test_image_preprocessing_validates_and_round_trips_the_cap():
    default = export.ImagePreprocessing(IMAGE_SHAPE, MEAN, STD)
    assert default.max_image_pixels == preprocess.MAX_IMAGE_PIXELS
    old_file = {"image_shape": list(IMAGE_SHAPE), "mean": MEAN, "std": STD}
    assert export.ImagePreprocessing.from_dict(old_file) == default
    capped = export.ImagePreprocessing(IMAGE_SHAPE, MEAN, STD, 1000)
    assert export.ImagePreprocessing.from_dict(capped.to_dict()) == capped
    for bad in (0, -5, 2.5, True, "big"):
        with pytest.raises(ValueError, match="max_image_pixels="):
            export.ImagePreprocessing(IMAGE_SHAPE, MEAN, STD, bad)
    with pytest.raises(ValueError, match="max_image_pixels"):
        export.ImagePreprocessing.from_dict({**old_file, "max_pixels": 5})

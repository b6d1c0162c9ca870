"""Tests for the TF-Serving SavedModel export (`shrewd_tf.export.saved_model`):
layout, signatures, codes against the Keras model, atomic versions,
validation. The `run` and `exported` fixtures are in conftest.py."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf import contract
from shrewd_tf.data import preprocess
from shrewd_tf.export import saved_model as export
from shrewd_tf.ops import bits as bits_lib
from tests.support.exports import IMAGE_SHAPE
from tests.support.exports import MEAN
from tests.support.exports import STD
from tests.support.exports import keras_codes
from tests.support.exports import make_run_dir
from tests.support.exports import png
from tests.support.exports import random_images
from tests.support.exports import save_text_op_saved_model
from tests.support.image_sources import reference_halving


# === Layout and signatures ===


def test_export_layout_and_run_files(run, exported):
    run_dir = run[0]
    root, path, _ = exported
    assert path == os.path.join(root, "shrewd", "1")
    assert sorted(os.listdir(os.path.join(root, "shrewd"))) == ["1"]
    for name in ("saved_model.pb", "variables"):
        assert os.path.exists(os.path.join(path, name)), name
    extra = os.path.join(path, "assets.extra")
    assert sorted(os.listdir(extra)) == [
        "config.json", "preprocessing.json", "tf_serving_warmup_requests",
    ]
    for name in ("config.json", "preprocessing.json"):
        with open(os.path.join(extra, name)) as copy:
            with open(os.path.join(run_dir, name)) as original:
                expected = json.load(original)
                if name == "preprocessing.json":  # the cap the graph holds
                    expected["max_image_pixels"] = preprocess.MAX_IMAGE_PIXELS
                assert json.load(copy) == expected, name


def test_signatures_names_dtypes_shapes(exported):
    signatures = exported[2].signatures
    assert set(signatures) == {
        "serving_default", "encode_images", "encode_pixels",
    }
    inputs = {
        name: signatures[name].structured_input_signature[1]
        for name in signatures
    }
    assert inputs["serving_default"] == {
        "images": tf.TensorSpec([None], tf.string, name="images")
    }
    assert inputs["encode_pixels"] == {
        "pixels": tf.TensorSpec([None, None, None, 3], tf.float32,
                                name="pixels")
    }
    for name in signatures:
        outputs = signatures[name].structured_outputs
        assert sorted(outputs) == ["bits", "code", "logits"]
        assert outputs["logits"].dtype == tf.float32
        assert outputs["logits"].shape.as_list() == [None, 4]
        assert outputs["code"].dtype == tf.float32
        assert outputs["code"].shape.as_list() == [None, 16]
        assert outputs["bits"].dtype == tf.uint8
        assert outputs["bits"].shape.as_list() == [None, 2]


# === Numerics ===


def test_png_codes_match_the_keras_model(run, exported):
    _, model, mean, std = run
    images = random_images(5)
    served = exported[2].signatures["serving_default"](
        images=tf.constant([png(image) for image in images])
    )
    expected = keras_codes(model, images, mean, std)
    np.testing.assert_allclose(served["code"].numpy(), expected, atol=1e-5)
    logits = model(
        (images.astype(np.float32) - mean) / std, training=False
    )["logits"].numpy()
    np.testing.assert_allclose(served["logits"].numpy(), logits, atol=1e-4)
    bits = served["bits"].numpy()
    assert bits.dtype == np.uint8
    np.testing.assert_array_equal(
        bits, np.packbits(served["code"].numpy() > 0.5, axis=1)
    )
    ones = np.unpackbits(bits).mean()
    assert 0.1 < ones < 0.9  # both sides of the threshold are exercised


def test_pack_bits_is_msb_first():
    code = np.zeros((2, 16), np.float32)
    code[0, [0, 7, 8]] = 0.9  # byte 0: 1000_0001, byte 1: 1000_0000
    code[0, 15] = 0.5  # exactly 0.5 is a 0 bit
    code[1, [1, 2, 14]] = 0.51  # 0110_0000, 0000_0010
    expected = np.array([[129, 128], [96, 2]], np.uint8)
    np.testing.assert_array_equal(
        export.pack_bits(tf.constant(code)).numpy(), expected
    )
    # The graph's packing is the NumPy convention of ops.bits.
    codes = np.random.default_rng(0).random((5, 24)).astype(np.float32)
    codes[0, :3] = contract.BIT_THRESHOLD
    packed = export.pack_bits(tf.constant(codes)).numpy()
    np.testing.assert_array_equal(packed, bits_lib.pack_bits(codes))


def test_images_are_resized_to_the_model_input(run, exported):
    # Both signatures run preprocess.preprocess_image: antialiased bilinear
    # (at 2x a triangle kernel over 4 x 4 input pixels, not the 2 x 2 block
    # mean of plain bilinear), then whole pixel values, as stored.
    _, model, mean, std = run
    large = random_images(3, shape=(24, 24, 3), seed=1)
    stored = preprocess.preprocess_image(large, IMAGE_SHAPE).numpy()
    for image, pixels in zip(large, stored):
        assert np.abs(pixels - reference_halving(image)).max() <= 1
    block_means = large.astype(np.float64).reshape(3, 12, 2, 12, 2, 3)
    assert np.abs(stored - block_means.mean(axis=(2, 4))).max() > 1
    expected = keras_codes(model, stored, mean, std)
    signatures = exported[2].signatures
    served = signatures["serving_default"](
        images=tf.constant([png(image) for image in large])
    )
    np.testing.assert_allclose(served["code"].numpy(), expected, atol=1e-5)
    # Float pixels are rounded to whole values too: stored pixels 0.3 off
    # (already the model size, so not resized) give the stored codes.
    for values in (large, stored + 0.3):
        pixels = signatures["encode_pixels"](
            pixels=tf.constant(values, tf.float32)
        )
        np.testing.assert_allclose(
            pixels["code"].numpy(), expected, atol=1e-5
        )


def test_jpeg_images_decode(run, exported):
    _, model, mean, std = run
    images = random_images(2, seed=2)
    jpegs = [tf.io.encode_jpeg(image, quality=90).numpy() for image in images]
    decoded = np.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
    served = exported[2].signatures["serving_default"](
        images=tf.constant(jpegs)
    )
    np.testing.assert_allclose(
        served["code"].numpy(),
        keras_codes(model, decoded, mean, std),
        atol=1e-5,
    )


def test_grayscale_png_is_converted_to_the_model_channels(run, exported):
    _, model, mean, std = run
    gray = random_images(1, shape=(12, 12, 1), seed=3)
    served = exported[2].signatures["serving_default"](
        images=tf.constant([png(gray[0])])
    )
    rgb = np.repeat(gray, 3, axis=-1)
    np.testing.assert_allclose(
        served["code"].numpy(), keras_codes(model, rgb, mean, std), atol=1e-5
    )


def test_undecodable_bytes_are_an_invalid_argument(exported):
    with pytest.raises(tf.errors.InvalidArgumentError):
        exported[2].signatures["serving_default"](
            images=tf.constant([b"not an image"])
        )


# === Versions and atomicity ===


class _TinyArchive:
    """Stands in for keras.export.ExportArchive: an empty SavedModel, fast."""

    def track(self, resource):
        pass

    def add_endpoint(self, name, fn, input_signature=None):
        pass

    def write_out(self, path, verbose=True):
        tf.saved_model.save(tf.Module(), path)


class _CrashingArchive(_TinyArchive):
    """Writes part of a SavedModel, then fails (a crash mid-export)."""

    def write_out(self, path, verbose=True):
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")


class _TextOpArchive(_TinyArchive):
    """Writes a complete SavedModel that uses a TF Text op."""

    def write_out(self, path, verbose=True):
        save_text_op_saved_model(path)


def test_versions_increment_and_are_never_overwritten(
    run, tmp_path, monkeypatch
):
    monkeypatch.setattr(keras.export, "ExportArchive", _TinyArchive)
    preprocessing = {"image_shape": IMAGE_SHAPE, "mean": MEAN, "std": STD}

    def export_version(version=None):
        path = export.export_saved_model(
            run[1], tmp_path, "shrewd", version, preprocessing=preprocessing
        )
        return os.path.relpath(path, tmp_path)

    assert export_version() == os.path.join("shrewd", "1")
    assert export_version() == os.path.join("shrewd", "2")
    assert export_version(7) == os.path.join("shrewd", "7")
    assert export_version() == os.path.join("shrewd", "8")
    with pytest.raises(FileExistsError, match="version=2"):
        export_version(2)
    with pytest.raises(ValueError, match="version=-1"):
        export_version(-1)
    assert sorted(os.listdir(tmp_path / "shrewd")) == ["1", "2", "7", "8"]


@pytest.mark.parametrize(
    "archive, error",
    [(_CrashingArchive, RuntimeError), (_TextOpArchive, ValueError)],
)
def test_failed_export_leaves_no_version_dir(
    run, tmp_path, monkeypatch, archive, error
):
    monkeypatch.setattr(keras.export, "ExportArchive", archive)
    with pytest.raises(error, match="disk full|CaseFoldUTF8"):
        export.export_saved_model(run[0], tmp_path, "shrewd")
    assert os.listdir(tmp_path / "shrewd") == []


# === Validation ===


def test_code_bits_must_be_a_multiple_of_8(tmp_path):
    make_run_dir(tmp_path / "run12", code_bits=12)
    with pytest.raises(ValueError, match="code_bits=12"):
        export.export_saved_model(tmp_path / "run12", tmp_path / "e", "m")
    assert not (tmp_path / "e").exists()


def test_preprocessing_must_fit_the_model(run, tmp_path):
    preprocessing = {"image_shape": [16, 16, 3], "mean": MEAN, "std": STD}
    with pytest.raises(ValueError, match=r"image_shape=\(16, 16, 3\)"):
        export.export_saved_model(
            run[1], tmp_path, "m", preprocessing=preprocessing
        )
    with pytest.raises(ValueError, match="std="):
        export.ImagePreprocessing((12, 12, 3), MEAN, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="mean="):
        export.ImagePreprocessing((12, 12, 3), [1.0, 2.0], STD)
    with pytest.raises(ValueError, match="preprocessing=None"):
        export.export_saved_model(run[1], tmp_path, "m")


def test_missing_run_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessing.json"):
        export.export_saved_model(tmp_path, tmp_path / "e", "m")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden"])
def test_model_name_is_validated(tmp_path, name):
    with pytest.raises(ValueError, match="model_name="):
        export.export_saved_model(tmp_path, tmp_path / "e", name)





def test_versions_and_models_config_on_ram_file_system(exported):
    # TF's in-memory ram:// file system stands in for gs://. The export
    # itself is copied there: TF's ram:// lists "assets.extra/x" as a child
    # of "assets" too (prefix match), which breaks its staged move; gs://
    # has real prefixes with "/".
    from shrewd_tf.export import tf_serving
    from shrewd_tf.export import versions

    root = f"ram://test_export_{os.getpid()}"
    for version in ("1", "3"):
        for folder, _, names in os.walk(exported[1]):
            relative = os.path.relpath(folder, exported[1])
            target = f"{root}/shrewd/{version}/{relative}".rstrip("/.")
            tf.io.gfile.makedirs(target)
            for name in names:
                tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}")
    tf.io.gfile.makedirs(f"{root}/shrewd/.tmp-export-9-abc")
    assert versions.existing_versions(f"{root}/shrewd") == [1, 3]
    assert versions.next_version(f"{root}/shrewd") == 4
    newest = versions.resolve_saved_model_dir(f"{root}/shrewd")
    assert newest == f"{root}/shrewd/3"
    preprocessing = export.ImagePreprocessing.load(
        f"{newest}/{contract.ASSETS_EXTRA_DIR}/{contract.PREPROCESSING_FILE}"
    )
    assert preprocessing.image_shape == tuple(IMAGE_SHAPE)
    images = tf.constant([png(image) for image in random_images(3)])
    served = tf.saved_model.load(newest).signatures["serving_default"]
    local = exported[2].signatures["serving_default"]
    np.testing.assert_array_equal(
        served(images=images)["code"].numpy(),
        local(images=images)["code"].numpy(),
    )
    command = tf_serving.write_model_server_config(root, ["shrewd"])
    assert command.endswith(f"--model_config_file={root}/models.config")
    with tf.io.gfile.GFile(f"{root}/models.config") as f:
        assert f'base_path: "{root}/shrewd"' in f.read()
    # Not removed: ram:// rmtree trips on the same prefix match; ram://
    # lives as long as this process.

"""Tests for shrewd_tf.export.tf_serving: warm-up requests and models.config,
on the export of conftest.py."""

import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from shrewd_tf.export import tf_serving
from tests.support.exports import IMAGE_SHAPE
from tests.support.exports import keras_codes


# === Warm-up ===


def test_warmup_image_is_a_deterministic_gradient():
    image = tf_serving.warmup_image((5, 7, 3))
    assert image.dtype == np.uint8 and image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, tf_serving.warmup_image((5, 7, 3)))
    assert len(np.unique(image)) > 10


def test_warmup_requests_parse_and_run(run, exported):
    _, model, mean, std = run
    path = os.path.join(
        exported[1], "assets.extra", "tf_serving_warmup_requests"
    )
    records = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
    assert len(records) == 1
    request = records[0].predict_log.request
    assert request.model_spec.name == "shrewd"
    assert request.model_spec.signature_name == "serving_default"
    images = tf.make_ndarray(request.inputs["images"])
    assert images.shape == (1,)
    served = exported[2].signatures[request.model_spec.signature_name](
        images=tf.constant(images)
    )
    pixels = tf.io.decode_png(images[0]).numpy()
    assert pixels.shape == IMAGE_SHAPE
    np.testing.assert_allclose(
        served["code"].numpy(),
        keras_codes(model, pixels[None], mean, std),
        atol=1e-5,
    )


def test_warmup_request_runs_in_a_session_like_tf_serving(exported):
    # TF Serving loads a SavedModelBundle into a Session and feeds the
    # SignatureDef's tensor names; do the same with the warm-up request.
    path = exported[1]
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    record = next(iter(tf.data.TFRecordDataset(warmup))).numpy()
    request = prediction_log_pb2.PredictionLog.FromString(record)
    request = request.predict_log.request
    loaded = exported[2].signatures["serving_default"](
        images=tf.constant(tf.make_ndarray(request.inputs["images"]))
    )
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], path
        )
        signature = meta_graph.signature_def[request.model_spec.signature_name]
        assert signature.method_name == "tensorflow/serving/predict"
        feed = {
            signature.inputs[name].name: tf.make_ndarray(tensor)
            for name, tensor in request.inputs.items()
        }
        fetches = {
            name: info.name for name, info in signature.outputs.items()
        }
        outputs = session.run(fetches, feed)
    np.testing.assert_allclose(outputs["code"], loaded["code"], atol=1e-6)
    np.testing.assert_array_equal(outputs["bits"], loaded["bits"])


# === TF Serving configuration ===


def test_models_config_parses_back(exported, tmp_path):
    root = exported[0]
    path = str(tmp_path / "models.config")
    command = tf_serving.write_model_server_config(root, ["shrewd"], path)
    with open(path) as f:
        parsed = text_format.Parse(
            f.read(), model_server_config_pb2.ModelServerConfig()
        )
    [entry] = parsed.model_config_list.config
    assert entry.name == "shrewd"
    assert entry.base_path == os.path.join(os.path.abspath(root), "shrewd")
    assert entry.model_platform == "tensorflow"
    assert command.split() == [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        f"--model_config_file={path}",
    ]


def test_models_config_for_a_container_root(exported):
    root = exported[0]
    command = tf_serving.write_model_server_config(
        root, ["shrewd"], serving_root="/models"
    )
    assert command.endswith("--model_config_file=/models/models.config")
    with open(os.path.join(root, "models.config")) as f:
        parsed = text_format.Parse(
            f.read(), model_server_config_pb2.ModelServerConfig()
        )
    assert parsed.model_config_list.config[0].base_path == "/models/shrewd"


def test_models_config_needs_exported_models(exported):
    with pytest.raises(FileNotFoundError, match="missing"):
        tf_serving.write_model_server_config(exported[0], ["missing"])
    with pytest.raises(ValueError, match="model_names="):
        tf_serving.write_model_server_config(exported[0], ["shrewd", "shrewd"])

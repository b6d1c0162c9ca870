"""What TF Serving reads beside a SavedModel: warm-up requests, models.config.

* `write_warmup_requests` writes `assets.extra/tf_serving_warmup_requests`
  into a version directory: a TFRecord of `PredictionLog`s, each a
  `serving_default` request of generated PNG images, which the server
  replays before it serves the version.
* `write_model_server_config` writes the `models.config` (a
  `ModelServerConfig` text proto) that serves `export_root/<name>/` for
  each model name, and returns the `tensorflow_model_server` command line.

Example:
    command = write_model_server_config("exports", ["shrewd"])
    # tensorflow_model_server --port=8500 --rest_api_port=8501 \\
    #     --model_config_file=/abs/exports/models.config
"""

import os
import shlex

import numpy as np

from shrewd_tf import contract
from shrewd_tf import io as io_lib
from shrewd_tf.export import versions

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501


# === Warm-up ===


def warmup_image(image_shape):
    """A deterministic test card: uint8 [H, W, C] diagonal gradients."""
    height, width, channels = image_shape
    rows = np.arange(height)[:, None, None] / max(height - 1, 1)
    cols = np.arange(width)[None, :, None] / max(width - 1, 1)
    phase = np.arange(channels)[None, None, :] / channels
    values = np.mod(0.5 * (rows + cols) + phase, 1.0) * 255.0
    return np.round(values).astype(np.uint8)


def write_warmup_requests(path, model_name, image_shape, batch_sizes=(1,)):
    """Writes TF Serving warm-up requests for `serving_default`.

    Args:
        path: the TFRecord to write (`assets.extra/tf_serving_warmup_
            requests` inside a version directory).
        model_name: the served model name (`model_spec.name`).
        image_shape: (H, W, C) of the generated PNG.
        batch_sizes: one PredictionLog per entry, with that many images.

    Returns:
        list of the PredictRequest protos written.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    png = tf.io.encode_png(warmup_image(image_shape)).numpy()
    requests = []
    with tf.io.TFRecordWriter(path) as writer:
        for batch_size in batch_sizes:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = contract.SERVING_SIGNATURE
            request.inputs[contract.IMAGES_INPUT].CopyFrom(
                tf.make_tensor_proto([png] * batch_size, dtype=tf.string)
            )
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(record.SerializeToString())
            requests.append(request)
    return requests


# === models.config ===


def write_model_server_config(
    export_root,
    model_names,
    path=None,
    serving_root=None,
    grpc_port=DEFAULT_GRPC_PORT,
    rest_port=DEFAULT_REST_PORT,
):
    """Writes a TF Serving `models.config` (ModelServerConfig text proto).

    Args:
        export_root: the directory holding `<model_name>/<version>/`.
        model_names: served model names; each needs at least one version.
        path: where to write; default `export_root/models.config`.
        serving_root: the export root as the server sees it (e.g.
            "/models" in a container); default: absolute `export_root`.
        grpc_port, rest_port: ports in the returned command line.

    Returns:
        str: the `tensorflow_model_server` command line that serves them.

    Raises:
        ValueError: no names, duplicates or a bad name.
        FileNotFoundError: a model without any version directory.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    model_names = list(model_names)
    if not model_names or len(set(model_names)) != len(model_names):
        raise ValueError(
            "model_names must be non-empty and unique. "
            f"Received: model_names={model_names}"
        )
    export_root = _absolute(export_root)
    serving_root = serving_root or export_root
    if path is None:
        path = os.path.join(export_root, contract.MODELS_CONFIG_FILE)
    path = _absolute(path)
    server_config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        versions.check_model_name(name)
        if not versions.existing_versions(os.path.join(export_root, name)):
            raise FileNotFoundError(
                f"No version directory in {os.path.join(export_root, name)}; "
                "export the model first. Received: model_names="
                f"{model_names}"
            )
        server_config.model_config_list.config.add(
            name=name,
            base_path=f"{serving_root.rstrip('/')}/{name}",
            model_platform="tensorflow",
        )
    io_lib.write_text_atomically(
        path, text_format.MessageToString(server_config)
    )
    served_path = path
    relative = os.path.relpath(path, export_root)
    if io_lib.is_local(path) != io_lib.is_local(export_root):
        relative = os.pardir  # another file system: served as written
    if not relative.startswith(os.pardir):
        served_path = f"{serving_root.rstrip('/')}/{relative}"
    return (
        f"tensorflow_model_server --port={grpc_port} "
        f"--rest_api_port={rest_port} "
        f"--model_config_file={shlex.quote(served_path)}"
    )


def _absolute(path):
    """An absolute local path; a `scheme://` path unchanged."""
    path = os.fspath(path)
    return os.path.abspath(path) if io_lib.is_local(path) else path

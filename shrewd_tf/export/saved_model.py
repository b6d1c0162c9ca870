"""Exports a trained SHREWD model as a versioned TF-Serving SavedModel.

Layout written by `export_saved_model(run_dir, export_root, name)`:

    export_root/
      models.config                      # write_model_server_config(...)
      <name>/
        <version>/                       # an integer: 1, 2, ...
          saved_model.pb
          variables/
          assets.extra/                  # ignored by TF Serving's loader
            tf_serving_warmup_requests   # TFRecord of PredictionLog
            config.json                  # the run's ExperimentConfig
            preprocessing.json           # image_shape, mean, std

A version directory appears in one `rename` of a finished staging
directory (`<name>/.tmp-export-*`, a name TF Serving does not take for a
version), so a server polling `<name>/` never loads half an export.

Signatures (all decode/resize/standardise inside the graph, so clients send
raw images; only core TensorFlow ops, no ScaNN/Text/Addons ops):

* `serving_default` (= `encode_images`): `images` tf.string [N] of encoded
  PNG/JPEG/BMP/GIF bytes (base64 only in REST JSON) -> `code` float32
  [N, d], `bits` uint8 [N, d / 8].
* `encode_pixels`: `pixels` float32 [N, h, w, C], values 0..255, any h, w
  -> the same outputs.

Both run `preprocess.preprocess_image` with the run's `preprocessing.json`
(image_shape, mean, std): the one function that also made the training and
evaluation inputs and the stored TFRecord images (channels converted,
resized to H x W with antialiased bilinear, rounded to uint8, then
`(x - mean) / std`). So a client's original image gives the code the model
was evaluated with, whatever source it was trained from.

`bits` packs `code > 0.5` MSB-first, like `np.packbits(code > 0.5, axis=1)`
and `index.pack_codes`: bit j is bit 7 - j % 8 of byte j // 8.
"""

import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import tempfile

import numpy as np

from shrewd_tf import config as config_lib

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
ASSETS_EXTRA_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODELS_CONFIG_FILE = "models.config"
STAGING_PREFIX = ".tmp-export-"

SERVING_SIGNATURE = "serving_default"
IMAGES_ENDPOINT = "encode_images"  # first endpoint: also serving_default
PIXELS_ENDPOINT = "encode_pixels"
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
CODE_OUTPUT = "code"
BITS_OUTPUT = "bits"
BIT_THRESHOLD = 0.5
# Channel counts tf.io.decode_image can produce.
DECODABLE_CHANNELS = (1, 3, 4)
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
_MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# === Preprocessing ===


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """What turns uint8 pixels into the model input: `(x - mean) / std`.

    Attributes:
        image_shape: (H, W, C), the model input size; images are brought
            to it by `preprocess.preprocess_image`, as in training.
        mean: C floats (or 1, broadcast), per-channel mean in 0..255 pixel
            units.
        std: C floats (or 1), per-channel standard deviation, > 0.
    """

    image_shape: tuple
    mean: tuple
    std: tuple

    def __post_init__(self):
        shape = tuple(self.image_shape)
        if len(shape) != 3 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1
            for s in shape
        ):
            raise ValueError(
                "image_shape must be three positive ints (H, W, C). "
                f"Received: image_shape={self.image_shape}"
            )
        channels = shape[-1]
        for arg in ("mean", "std"):
            values = np.asarray(getattr(self, arg), np.float64).reshape(-1)
            if values.size not in (1, channels) or not np.all(
                np.isfinite(values)
            ):
                raise ValueError(
                    f"{arg} must be 1 or {channels} finite floats (one per "
                    f"channel). Received: {arg}={getattr(self, arg)}"
                )
            object.__setattr__(self, arg, tuple(float(v) for v in values))
        if min(self.std) <= 0:
            raise ValueError(
                f"std must be positive. Received: std={list(self.std)}"
            )
        object.__setattr__(self, "image_shape", shape)

    @classmethod
    def from_dict(cls, values):
        """Builds it from `{"image_shape": [H, W, C], "mean": [...], ...}`."""
        unknown = set(values) - {"image_shape", "mean", "std"}
        missing = {"image_shape", "mean", "std"} - set(values)
        if unknown or missing:
            raise ValueError(
                "preprocessing needs exactly image_shape, mean and std. "
                f"Received keys: {sorted(values)}"
            )
        return cls(
            image_shape=tuple(values["image_shape"]),
            mean=tuple(np.reshape(values["mean"], -1).tolist()),
            std=tuple(np.reshape(values["std"], -1).tolist()),
        )

    @classmethod
    def load(cls, path):
        """Reads a `preprocessing.json` file."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self):
        return {
            "image_shape": list(self.image_shape),
            "mean": list(self.mean),
            "std": list(self.std),
        }


# === Versions ===


def existing_versions(model_dir):
    """The versions in `model_dir`: its integer-named subdirectories.

    Args:
        model_dir: `export_root/<model_name>`; need not exist.

    Returns:
        sorted list of int. Names that are not decimal integers (staging
        directories, files) are skipped, as TF Serving skips them.
    """
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(model_dir)
        if name.isdigit() and os.path.isdir(os.path.join(model_dir, name))
    )


def next_version(model_dir):
    """1 + the largest version in `model_dir` (1 when it has none)."""
    return max(existing_versions(model_dir), default=0) + 1


def _check_model_name(model_name):
    if not isinstance(model_name, str) or not _MODEL_NAME_PATTERN.fullmatch(
        model_name
    ):
        raise ValueError(
            "model_name must be letters, digits, '_', '.', '-' and start "
            f"with a letter or digit. Received: model_name={model_name!r}"
        )


# === Graph ===


def saved_model_op_types(export_dir):
    """Every op type in a SavedModel's graphs and function library.

    Args:
        export_dir: a SavedModel directory (holding saved_model.pb).

    Returns:
        set of str, e.g. {"Conv2D", "DecodeImage", ...}.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    op_types = set()
    for meta_graph in saved_model.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
    return op_types


def non_core_ops(op_types):
    """The op types that stock TensorFlow (and so TF Serving) does not have.

    Core ops are those of `tf.raw_ops`, which lists the ops built into
    TensorFlow; ops of loaded libraries (ScaNN, TF Text, TF Addons) are not
    in it.

    Args:
        op_types: iterable of op type names.

    Returns:
        sorted list of the names not in `tf.raw_ops`.
    """
    import tensorflow as tf

    return sorted(op for op in set(op_types) if not hasattr(tf.raw_ops, op))


def pack_bits(code):
    """Binarises at 0.5 and packs MSB-first, in the graph.

    Args:
        code: float tensor [N, d], d a multiple of 8.

    Returns:
        uint8 tensor [N, d // 8], equal to `np.packbits(code > 0.5, axis=1)`.
    """
    import tensorflow as tf

    bytes_per_code = code.shape[-1] // 8
    bits = tf.cast(code > BIT_THRESHOLD, tf.int32)
    bits = tf.reshape(bits, [-1, bytes_per_code, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)


def _code_bits(model, image_shape):
    """The width d of the model's "code" output."""
    import keras

    spec = model.compute_output_spec(
        keras.KerasTensor((1, *image_shape), dtype="float32")
    )
    if not isinstance(spec, dict) or CODE_OUTPUT not in spec:
        names = sorted(spec) if isinstance(spec, dict) else type(spec)
        raise ValueError(
            "The model must return a dict with a 'code' output. "
            f"Received outputs: {names}"
        )
    return spec[CODE_OUTPUT].shape[-1]


def _check_model_input(model, image_shape):
    model_shape = tuple(model.inputs[0].shape[1:])
    if len(model_shape) != 3 or any(
        m is not None and m != s for m, s in zip(model_shape, image_shape)
    ):
        raise ValueError(
            "preprocessing.image_shape does not fit the model input "
            f"{model_shape}. Received: image_shape={image_shape}"
        )


def _add_endpoints(archive, model, preprocessing):
    """Adds `encode_images` (-> serving_default) and `encode_pixels`."""
    import tensorflow as tf

    from shrewd_tf.data import preprocess

    image_shape = preprocessing.image_shape
    mean, std = preprocessing.mean, preprocessing.std

    def encode(images):
        outputs = model(images, training=False)
        code = tf.cast(outputs[CODE_OUTPUT], tf.float32)
        return {CODE_OUTPUT: code, BITS_OUTPUT: pack_bits(code)}

    def encode_pixels(pixels):
        return encode(
            preprocess.preprocess_image(pixels, image_shape, mean, std)
        )

    def encode_images(images):
        return encode(
            tf.map_fn(
                lambda image: preprocess.preprocess_image(
                    image, image_shape, mean, std
                ),
                images,
                fn_output_signature=tf.TensorSpec(image_shape, tf.float32),
            )
        )

    archive.track(model)
    archive.add_endpoint(
        IMAGES_ENDPOINT,
        encode_images,
        input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)],
    )
    archive.add_endpoint(
        PIXELS_ENDPOINT,
        encode_pixels,
        input_signature=[
            tf.TensorSpec(
                [None, None, None, image_shape[-1]], tf.float32,
                name=PIXELS_INPUT,
            )
        ],
    )


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
            request.model_spec.signature_name = SERVING_SIGNATURE
            request.inputs[IMAGES_INPUT].CopyFrom(
                tf.make_tensor_proto([png] * batch_size, dtype=tf.string)
            )
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(record.SerializeToString())
            requests.append(request)
    return requests


# === Export ===


def _load_run(run_dir):
    """(model, preprocessing, config) of a finished training run."""
    import keras

    from shrewd_tf.models import shrewd_model as models  # noqa: F401  (registers the layers)

    paths = {
        name: os.path.join(run_dir, name)
        for name in (MODEL_FILE, PREPROCESSING_FILE, CONFIG_FILE)
    }
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing: is {run_dir!r} a finished "
            "`shrewd train` run directory?"
        )
    model = keras.models.load_model(paths[MODEL_FILE], compile=False)
    preprocessing = ImagePreprocessing.load(paths[PREPROCESSING_FILE])
    config = config_lib.ExperimentConfig.from_file(paths[CONFIG_FILE])
    return model, preprocessing, config


def export_saved_model(
    run_dir_or_model,
    export_root,
    model_name,
    version=None,
    *,
    preprocessing=None,
    config=None,
    warmup_batch_sizes=(1,),
):
    """Exports `export_root/<model_name>/<version>/` for TF Serving.

    The version appears atomically: everything is written into a staging
    directory next to it (`.tmp-export-*`), checked (only core TF ops),
    then renamed. On any error the staging directory is removed and no
    version directory exists.

    Args:
        run_dir_or_model: a run directory with `model.keras`,
            `preprocessing.json` and `config.json`, or a built keras.Model
            returning a dict with "code" (then pass `preprocessing`).
        export_root: the directory TF Serving's `base_path`s live in.
        model_name: served model name (letters, digits, `_.-`).
        version: int >= 0, or None for `next_version` (1, 2, ...).
        preprocessing: `ImagePreprocessing` or its dict; overrides the run
            directory's `preprocessing.json`; required with a model.
        config: `config.ExperimentConfig` (or dict) stored as
            `assets.extra/config.json`; default: the run's config.json.
        warmup_batch_sizes: batch sizes of the warm-up requests.

    Returns:
        str: the version directory written.

    Raises:
        FileNotFoundError: the run directory lacks a file.
        FileExistsError: the version directory already exists.
        ValueError: code width d not a multiple of 8, a preprocessing that
            does not fit the model, a bad name/version, or a graph with
            non-core ops.
    """
    import keras

    _check_model_name(model_name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise ValueError(
            f"version must be an int >= 0. Received: version={version!r}"
        )
    if isinstance(run_dir_or_model, keras.Model):
        model, run_preprocessing, run_config = run_dir_or_model, None, None
    else:
        model, run_preprocessing, run_config = _load_run(
            os.fspath(run_dir_or_model)
        )
    if preprocessing is None:
        preprocessing = run_preprocessing
    if preprocessing is None:
        raise ValueError(
            "Exporting a model object needs preprocessing=ImagePreprocessing"
            "(image_shape, mean, std). Received: preprocessing=None"
        )
    if isinstance(preprocessing, dict):
        preprocessing = ImagePreprocessing.from_dict(preprocessing)
    config = config if config is not None else run_config
    if isinstance(config, dict):
        config = config_lib.ExperimentConfig.from_dict(config)
    image_shape = preprocessing.image_shape
    if image_shape[-1] not in DECODABLE_CHANNELS:
        raise ValueError(
            f"Encoded images decode to {DECODABLE_CHANNELS} channels only. "
            f"Received: image_shape={image_shape}"
        )
    _check_model_input(model, image_shape)
    code_bits = _code_bits(model, image_shape)
    if code_bits is None or code_bits % 8:
        raise ValueError(
            "The code width must be a multiple of 8 to pack bits into "
            f"bytes. Received: code_bits={code_bits}"
        )

    model_dir = os.path.join(os.fspath(export_root), model_name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        version = next_version(model_dir)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(
            f"{target} exists; pick another version (or version=None for "
            f"the next one). Received: version={version}"
        )

    staging = tempfile.mkdtemp(dir=model_dir, prefix=STAGING_PREFIX)
    try:
        archive = keras.export.ExportArchive()
        _add_endpoints(archive, model, preprocessing)
        archive.write_out(staging, verbose=False)
        foreign = non_core_ops(saved_model_op_types(staging))
        if foreign:
            raise ValueError(
                "The exported graph uses ops stock TF Serving cannot run. "
                f"Received op types: {foreign}"
            )
        extra = os.path.join(staging, ASSETS_EXTRA_DIR)
        os.makedirs(extra)
        write_warmup_requests(
            os.path.join(extra, WARMUP_FILE),
            model_name,
            image_shape,
            warmup_batch_sizes,
        )
        config_lib.write_text_atomically(
            os.path.join(extra, PREPROCESSING_FILE),
            json.dumps(preprocessing.to_dict(), indent=2),
        )
        if config is not None:
            config.save_json(os.path.join(extra, CONFIG_FILE))
        # rename() onto a non-empty directory fails, so a concurrent export
        # of the same version cannot be overwritten.
        try:
            os.rename(staging, target)
        except OSError as error:
            raise FileExistsError(
                f"{target} appeared during the export: {error}"
            ) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s (code_bits=%d)", target, code_bits)
    return target


# === TF Serving configuration ===


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
    export_root = os.path.abspath(os.fspath(export_root))
    serving_root = serving_root or export_root
    if path is None:
        path = os.path.join(export_root, MODELS_CONFIG_FILE)
    path = os.path.abspath(os.fspath(path))
    server_config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        _check_model_name(name)
        if not existing_versions(os.path.join(export_root, name)):
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
    config_lib.write_text_atomically(
        path, text_format.MessageToString(server_config)
    )
    served_path = path
    relative = os.path.relpath(path, export_root)
    if not relative.startswith(os.pardir):
        served_path = f"{serving_root.rstrip('/')}/{relative}"
    return (
        f"tensorflow_model_server --port={grpc_port} "
        f"--rest_api_port={rest_port} "
        f"--model_config_file={shlex.quote(served_path)}"
    )

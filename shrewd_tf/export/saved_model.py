"""Exports a trained SHREWD model as a versioned TF-Serving SavedModel.

Layout written by `export_saved_model(run_dir, export_root, name)`:

    export_root/
      models.config                      # tf_serving.write_model_server_config
      <name>/
        <version>/                       # an integer: 1, 2, ... (`versions`)
          saved_model.pb
          variables/
          assets.extra/                  # ignored by TF Serving's loader
            tf_serving_warmup_requests   # tf_serving.write_warmup_requests
            config.json                  # the run's ExperimentConfig
            preprocessing.json           # image_shape, mean, std,
                                         # max_image_pixels

File and signature names are those of `shrewd_tf.contract`. A version
directory appears in one `rename` of a finished staging directory
(`shrewd_tf.io.staged_directory`; `<name>/.tmp-export-*`, a name TF
Serving does not take for a version), so a server polling `<name>/` never
loads half an export.

Signatures (all decode/resize/standardise inside the graph, so clients send
raw images; only core TensorFlow ops, no ScaNN/Text/Addons ops):

* `serving_default` (= `encode_images`): `images` tf.string [N] of encoded
  PNG/JPEG/BMP/GIF bytes (base64 only in REST JSON) -> `code` float32
  [N, d], `bits` uint8 [N, d / 8].
* `encode_pixels`: `pixels` float32 [N, h, w, C], values 0..255, any h, w
  -> the same outputs.

Both run `preprocess.preprocess_image` with the run's `preprocessing.json`
(image_shape, mean, std; `encode_images` refuses an image over its
max_image_pixels before decoding it, INVALID_ARGUMENT): the one function
that also made the training and evaluation inputs and the stored TFRecord
images (channels converted, resized to H x W with antialiased bilinear,
rounded to uint8, then `(x - mean) / std`). So a client's original image
gives the code the model was evaluated with, whatever source it was
trained from.

`bits` packs `code > BIT_THRESHOLD` MSB-first, like `ops.bits.pack_bits`
(`np.packbits(code > 0.5, axis=-1)`): bit j is bit 7 - j % 8 of byte
j // 8.
"""

import dataclasses
import json
import logging
import os

import numpy as np

from shrewd_tf import config as config_lib
from shrewd_tf import contract
from shrewd_tf import io as io_lib
from shrewd_tf.export import signatures
from shrewd_tf.export import tf_serving
from shrewd_tf.export import versions

# The export's second step, here too for callers of this module.

log = logging.getLogger(__name__)

# Beside the version directories; not a version name, so never served.
STAGING_PREFIX = ".tmp-export-"
# Channel counts tf.io.decode_image can produce.
DECODABLE_CHANNELS = (1, 3, 4)


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
        max_image_pixels: int; the `images` signature refuses an image
            whose header declares more pixels (or a longer side) with
            INVALID_ARGUMENT before decoding it, so a decompression bomb
            cannot exhaust the server's memory. None:
            `preprocess.MAX_IMAGE_PIXELS` (2**26, 8192 x 8192). Recorded in
            the export's preprocessing.json; the graph holds it as a
            constant, so every server runs the exported value.
    """

    image_shape: tuple
    mean: tuple
    std: tuple
    max_image_pixels: int = None

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
        cap = self.max_image_pixels
        if cap is None:
            from shrewd_tf.data import preprocess

            cap = preprocess.MAX_IMAGE_PIXELS
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(
                "max_image_pixels must be a positive int (pixels per "
                f"image). Received: max_image_pixels={cap!r}"
            )
        object.__setattr__(self, "max_image_pixels", cap)

    @classmethod
    def from_dict(cls, values):
        """Builds it from `{"image_shape": [H, W, C], "mean": [...], ...}`
        (max_image_pixels optional: files written before it lack it)."""
        unknown = set(values) - {
            "image_shape", "mean", "std", "max_image_pixels"
        }
        missing = {"image_shape", "mean", "std"} - set(values)
        if unknown or missing:
            raise ValueError(
                "preprocessing needs image_shape, mean and std, and may "
                f"give max_image_pixels. Received keys: {sorted(values)}"
            )
        return cls(
            image_shape=tuple(values["image_shape"]),
            mean=tuple(np.reshape(values["mean"], -1).tolist()),
            std=tuple(np.reshape(values["std"], -1).tolist()),
            max_image_pixels=values.get("max_image_pixels"),
        )

    @classmethod
    def load(cls, path):
        """Reads a `preprocessing.json` file."""
        return cls.from_dict(json.loads(io_lib.read_text(path)))

    def to_dict(self):
        return {
            "image_shape": list(self.image_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "max_image_pixels": self.max_image_pixels,
        }


# === Graph ===


def pack_bits(code):
    """Binarises at BIT_THRESHOLD and packs MSB-first, in the graph.

    The TensorFlow twin of `shrewd_tf.ops.bits.pack_bits` (NumPy), for the
    exported `bits` output.

    Args:
        code: float tensor [N, d], d a multiple of 8.

    Returns:
        uint8 tensor [N, d // 8], equal to `ops.bits.pack_bits(code)`.
    """
    import tensorflow as tf

    bytes_per_code = code.shape[-1] // 8
    bits = tf.cast(code > contract.BIT_THRESHOLD, tf.int32)
    bits = tf.reshape(bits, [-1, bytes_per_code, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)


def _code_bits(model, image_shape):
    """The width d of the model's "code" output."""
    import keras

    spec = model.compute_output_spec(
        keras.KerasTensor((1, *image_shape), dtype="float32")
    )
    if not isinstance(spec, dict) or contract.CODE_OUTPUT not in spec:
        names = sorted(spec) if isinstance(spec, dict) else type(spec)
        raise ValueError(
            "The model must return a dict with a 'code' output. "
            f"Received outputs: {names}"
        )
    return spec[contract.CODE_OUTPUT].shape[-1]


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
    """Adds `encode_images` (-> serving_default) and `encode_pixels`.

    Both return "code" float32 [N, d], "bits" uint8 [N, d / 8] and, when
    the model has a classification head, "logits" float32 [N, classes].
    """
    import tensorflow as tf

    from shrewd_tf.data import preprocess

    image_shape = preprocessing.image_shape
    mean, std = preprocessing.mean, preprocessing.std
    cap = preprocessing.max_image_pixels

    def encode(images):
        outputs = model(images, training=False)
        code = tf.cast(outputs[contract.CODE_OUTPUT], tf.float32)
        result = {
            contract.CODE_OUTPUT: code,
            contract.BITS_OUTPUT: pack_bits(code),
        }
        if contract.LOGITS_OUTPUT in outputs:
            # The predicted class (the page colours results by it).
            result[contract.LOGITS_OUTPUT] = tf.cast(
                outputs[contract.LOGITS_OUTPUT], tf.float32
            )
        return result

    def encode_pixels(pixels):
        return encode(
            preprocess.preprocess_image(pixels, image_shape, mean, std)
        )

    def encode_images(images):
        return encode(
            tf.map_fn(
                lambda image: preprocess.preprocess_image(
                    image, image_shape, mean, std, max_image_pixels=cap
                ),
                images,
                fn_output_signature=tf.TensorSpec(image_shape, tf.float32),
            )
        )

    archive.track(model)
    archive.add_endpoint(
        contract.IMAGES_SIGNATURE,
        encode_images,
        input_signature=[
            tf.TensorSpec([None], tf.string, name=contract.IMAGES_INPUT)
        ],
    )
    archive.add_endpoint(
        contract.PIXELS_SIGNATURE,
        encode_pixels,
        input_signature=[
            tf.TensorSpec(
                [None, None, None, image_shape[-1]], tf.float32,
                name=contract.PIXELS_INPUT,
            )
        ],
    )


# === Export ===


def _load_run(run_dir):
    """(model, preprocessing, config) of a finished training run."""
    import keras

    # Registers the layers a saved ShrewdModel is made of.
    from shrewd_tf.models import shrewd_model  # noqa: F401

    names = (
        contract.MODEL_FILE, contract.PREPROCESSING_FILE, contract.CONFIG_FILE
    )
    paths = {name: os.path.join(run_dir, name) for name in names}
    missing = [p for p in paths.values() if not io_lib.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing: is {run_dir!r} a finished "
            "`shrewd train` run directory?"
        )
    model = keras.models.load_model(paths[contract.MODEL_FILE], compile=False)
    preprocessing = ImagePreprocessing.load(paths[contract.PREPROCESSING_FILE])
    config = config_lib.ExperimentConfig.from_file(paths[contract.CONFIG_FILE])
    return model, preprocessing, config


def _export_inputs(run_dir_or_model, preprocessing, config):
    """(model, `ImagePreprocessing`, `ExperimentConfig` or None), checked."""
    import keras

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
    return model, preprocessing, config


def _write_version(directory, model, preprocessing, config, model_name,
                   warmup_batch_sizes):
    """Writes the SavedModel and its assets.extra into `directory`."""
    import keras

    archive = keras.export.ExportArchive()
    _add_endpoints(archive, model, preprocessing)
    archive.write_out(directory, verbose=False)
    foreign = signatures.non_core_ops(
        signatures.saved_model_op_types(directory)
    )
    if foreign:
        raise ValueError(
            "The exported graph uses ops stock TF Serving cannot run. "
            f"Received op types: {foreign}"
        )
    extra = os.path.join(directory, contract.ASSETS_EXTRA_DIR)
    io_lib.makedirs(extra)
    tf_serving.write_warmup_requests(
        os.path.join(extra, contract.WARMUP_FILE),
        model_name,
        preprocessing.image_shape,
        warmup_batch_sizes,
    )
    io_lib.write_json_atomically(
        os.path.join(extra, contract.PREPROCESSING_FILE),
        preprocessing.to_dict(),
    )
    if config is not None:
        config.save_json(os.path.join(extra, contract.CONFIG_FILE))


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
    then renamed (`shrewd_tf.io.staged_directory`). On any error the
    staging directory is removed and no version directory exists.

    Args:
        run_dir_or_model: a run directory with `model.keras`,
            `preprocessing.json` and `config.json`, or a built keras.Model
            returning a dict with "code" (then pass `preprocessing`).
        export_root: the directory TF Serving's `base_path`s live in.
        model_name: served model name (letters, digits, `_.-`).
        version: int >= 0, or None for `versions.next_version` (1, 2, ...).
        preprocessing: `ImagePreprocessing` or its dict; overrides the run
            directory's `preprocessing.json`; required with a model.
        config: `config.ExperimentConfig` (or dict) stored as
            `assets.extra/config.json`; default: the run's config.json.
        warmup_batch_sizes: batch sizes of the warm-up requests.

    Returns:
        str: the version directory written.

    Raises:
        FileNotFoundError: the run directory lacks a file.
        FileExistsError: the version directory already exists (or appeared
            during the export: it is never overwritten).
        ValueError: code width d not a multiple of 8, a preprocessing that
            does not fit the model, a bad name/version, or a graph with
            non-core ops.
    """
    versions.check_model_name(model_name)
    if version is not None:
        versions.check_version(version)
    model, preprocessing, config = _export_inputs(
        run_dir_or_model, preprocessing, config
    )
    code_bits = _code_bits(model, preprocessing.image_shape)
    if code_bits is None or code_bits % 8:
        raise ValueError(
            "The code width must be a multiple of 8 to pack bits into "
            f"bytes. Received: code_bits={code_bits}"
        )

    model_dir = os.path.join(os.fspath(export_root), model_name)
    io_lib.makedirs(model_dir)
    if version is None:
        version = versions.next_version(model_dir)
    target = os.path.join(model_dir, str(version))
    if io_lib.exists(target):
        raise FileExistsError(
            f"{target} exists; pick another version (or version=None for "
            f"the next one). Received: version={version}"
        )
    with io_lib.staged_directory(
        target, replace=False, prefix=STAGING_PREFIX
    ) as staging:
        _write_version(staging, model, preprocessing, config, model_name,
                       warmup_batch_sizes)
    log.info("exported %s (code_bits=%d)", target, code_bits)
    return target

"""The one vocabulary shared by training, export, retrieval and serving.

Every name that crosses a module boundary, or the disk, lives here once:
the model's output keys, the SavedModel's signatures and inputs, the files
of a run directory and of an export, and the kinds of retrieval index with
the serving mode each one serves. Everything else imports these constants;
a literal spelled elsewhere is a contract written twice.

This module imports nothing but the standard library, so the CLI, Beam
workers and the server can all read it cheaply.

Index kinds, one row per kind (`INDEX_KIND_TABLE`):

| kind     | class                | manifest index_type | serving mode |
|----------|----------------------|---------------------|--------------|
| "binary" | `BinaryHammingIndex` | "binary_hamming"    | "binary"     |
| "scann"  | `ScannIndex`         | "scann"             | "float"      |

* The kind is what people and configs say: `shrewd index build --index
  binary`, `pipeline.index_kinds`, `build_index("binary", ...)`, and the
  folder `<output_dir>/<kind>/` an index is saved in.
* The manifest's `index_type` is how a saved index (`manifest.json`,
  format_version 1) names its kind on disk. It keeps the spelling of the
  files already written; a different spelling would need a new
  format_version. `index_kind` accepts either name.
* The serving mode is the `"mode"` of a `/v1/search` request: "binary"
  ranks by Hamming distance (or L1 when the index re-ranks), "float" by
  the float distance of ScaNN.

Example:
    from shrewd_tf import contract
    outputs[contract.CODE_OUTPUT]
    contract.index_kind("binary_hamming").serving_mode  # "binary"
"""

import dataclasses

# === Model outputs ===

# float32 [B, code_bits]: the hash code, binarised at BIT_THRESHOLD.
CODE_OUTPUT = "code"
# uint8 [B, code_bits / 8]: `code > BIT_THRESHOLD` packed MSB-first (the
# exported SavedModel's second output; `shrewd_tf.ops.bits.pack_bits`).
BITS_OUTPUT = "bits"
# float [B, num_classes]: the classification head (labelled data only).
LOGITS_OUTPUT = "logits"
# float [B, regression_dim]: the caption-regression head (REG only).
EMBEDDING_OUTPUT = "embedding"
# The code a second time, in the training model only, so that Keras can
# attach the KL loss (eq. 4) to it apart from the similarity loss (eq. 2).
KL_OUTPUT = "code_kl"
# Bit j of a code is `code[:, j] > BIT_THRESHOLD` (so 0.5 itself is 0).
BIT_THRESHOLD = 0.5

# === SavedModel signatures and inputs ===

SERVE_TAG = "serve"
# What TF Serving calls when a request names no signature; the export maps
# it to IMAGES_SIGNATURE (the first endpoint).
SERVING_SIGNATURE = "serving_default"
# images tf.string [N] of encoded PNG/JPEG/BMP/GIF -> code, bits.
IMAGES_SIGNATURE = "encode_images"
# pixels float32 [N, h, w, C] in 0..255 -> code, bits.
PIXELS_SIGNATURE = "encode_pixels"
SIGNATURES = (SERVING_SIGNATURE, IMAGES_SIGNATURE, PIXELS_SIGNATURE)
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"

# === Run directory (`shrewd train`, `shrewd evaluate`) ===

CONFIG_FILE = "config.json"  # the ExperimentConfig; also in exports
MODEL_FILE = "model.keras"  # the trained ShrewdModel
PREPROCESSING_FILE = "preprocessing.json"  # image_shape, mean, std
METRICS_FILE = "metrics.json"  # {run name: metrics}
METRICS_TABLE_FILE = "metrics.md"  # the same as a markdown table
HISTORY_FILE = "history.csv"  # per-epoch logs
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FILE_PATTERN = "epoch-{epoch:03d}.weights.h5"
BACKUP_DIR = "backup"  # keras.callbacks.BackupAndRestore
LOGS_DIR = "logs"  # TensorBoard
REPORT_FILE = "report.md"  # `evaluation.report.write_report`

# === Export (`<export_root>/<model name>/<int version>/`) ===

SAVED_MODEL_FILE = "saved_model.pb"
ASSETS_EXTRA_DIR = "assets.extra"  # CONFIG_FILE, PREPROCESSING_FILE too
WARMUP_FILE = "tf_serving_warmup_requests"  # in ASSETS_EXTRA_DIR
MODELS_CONFIG_FILE = "models.config"  # in export_root

# === Retrieval indexes ===

BINARY_INDEX = "binary"
SCANN_INDEX = "scann"
INDEX_KINDS = (BINARY_INDEX, SCANN_INDEX)

BINARY_MODE = "binary"
FLOAT_MODE = "float"
SERVING_MODES = (BINARY_MODE, FLOAT_MODE)


@dataclasses.dataclass(frozen=True)
class IndexKind:
    """One kind of retrieval index under each name it goes by.

    Attributes:
        name: the kind ("binary", "scann"): configs, the CLI, folders.
        index_type: its name in a saved index's manifest.json.
        serving_mode: the `/v1/search` mode it serves.
        class_name: the `shrewd_tf.retrieval` class that implements it.
    """

    name: str
    index_type: str
    serving_mode: str
    class_name: str


INDEX_KIND_TABLE = (
    IndexKind(
        BINARY_INDEX, "binary_hamming", BINARY_MODE, "BinaryHammingIndex"
    ),
    IndexKind(SCANN_INDEX, "scann", FLOAT_MODE, "ScannIndex"),
)


def index_kind(name):
    """Returns the `IndexKind` called `name` (a kind or a manifest name).

    Args:
        name: "binary" or "binary_hamming"; "scann".

    Raises:
        ValueError: for any other name, quoting it.
    """
    for kind in INDEX_KIND_TABLE:
        if name in (kind.name, kind.index_type):
            return kind
    raise ValueError(
        f"Unknown index kind; expected one of {list(INDEX_KINDS)} (or a "
        "manifest index_type "
        f"{[kind.index_type for kind in INDEX_KIND_TABLE]}). "
        f"Received: kind={name!r}"
    )


def index_kind_for_mode(mode):
    """Returns the `IndexKind` that serves the search mode `mode`.

    Raises:
        ValueError: for a mode other than SERVING_MODES, quoting it.
    """
    for kind in INDEX_KIND_TABLE:
        if mode == kind.serving_mode:
            return kind
    raise ValueError(
        f"Unknown search mode; expected one of {list(SERVING_MODES)}. "
        f"Received: mode={mode!r}"
    )

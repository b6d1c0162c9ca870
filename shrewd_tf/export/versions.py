"""Version directories: `export_root/<model_name>/<int version>/`.

TF Serving serves, per model, the subdirectories of `<model_name>/` whose
names are non-negative integers (up to 18 digits, so they fit an int64);
every other name (a staging directory `.tmp-export-*`, `latest`, a file)
is skipped. The export writes new versions here (`next_version`), the
server polls them (`serving.models`) and the Beam jobs encode with the
highest one holding a SavedModel (`resolve_saved_model_dir`). This module
is that one reading of a model directory.

Paths without a scheme are read with `os`; others (`gs://`, ...) with
`tf.io.gfile` (TensorFlow imported on first use only).

Example:
    existing_versions("exports/shrewd")          # [1, 2, 10]
    resolve_saved_model_dir("exports/shrewd")    # "exports/shrewd/10"
"""

import os
import re

from shrewd_tf import contract
from shrewd_tf import io as io_lib

# A version directory's name: a decimal integer TF Serving can parse.
VERSION_NAME = re.compile(r"[0-9]{1,18}")
VERSION_LIMIT = 10**18  # the first version of 19 digits
# A served model's name (its directory under the export root).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _listdir(path):
    if io_lib.is_local(path):
        return os.listdir(path)
    return [name.rstrip("/") for name in _gfile().listdir(path)]


def _isdir(path):
    return os.path.isdir(path) if io_lib.is_local(path) else (
        _gfile().isdir(path)
    )


def _exists(path):
    return os.path.exists(path) if io_lib.is_local(path) else (
        _gfile().exists(path)
    )


def is_version_name(name):
    """Whether `name` names a version directory ("7", not "07a", "²")."""
    return bool(VERSION_NAME.fullmatch(name))


def check_model_name(model_name):
    """Raises ValueError unless `model_name` can name a served model.

    Letters, digits, '_', '.', '-', starting with a letter or digit: a
    single directory name that is neither hidden nor a path.
    """
    if not isinstance(model_name, str) or not MODEL_NAME.fullmatch(
        model_name
    ):
        raise ValueError(
            "model_name must be letters, digits, '_', '.', '-' and start "
            f"with a letter or digit. Received: model_name={model_name!r}"
        )


def check_version(version):
    """Raises ValueError unless `version` can name a version directory."""
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 0 <= version < VERSION_LIMIT
    ):
        raise ValueError(
            "version must be an int >= 0 of at most 18 digits. "
            f"Received: version={version!r}"
        )


def holds_saved_model(path):
    """Whether `path` is a SavedModel directory (holds saved_model.pb)."""
    return _exists(os.path.join(path, contract.SAVED_MODEL_FILE))


def existing_versions(model_dir, saved_models_only=False):
    """The versions in `model_dir`: its integer-named subdirectories.

    Args:
        model_dir: `export_root/<model_name>`; need not exist.
        saved_models_only: keep only versions that hold a saved_model.pb.

    Returns:
        sorted list of int; [] when `model_dir` is missing or cannot be
        listed. Names that are not versions are skipped, as TF Serving
        skips them.
    """
    model_dir = os.fspath(model_dir)
    if not _isdir(model_dir):
        return []
    try:
        names = _listdir(model_dir)
    except OSError:  # removed or unreadable since the check
        return []
    versions = []
    for name in names:
        path = os.path.join(model_dir, name)
        if not is_version_name(name) or not _isdir(path):
            continue
        if saved_models_only and not holds_saved_model(path):
            continue
        versions.append(int(name))
    return sorted(versions)


def next_version(model_dir):
    """1 + the largest version in `model_dir` (1 when it has none)."""
    return max(existing_versions(model_dir), default=0) + 1


def resolve_saved_model_dir(path):
    """Returns the SavedModel directory `path` names.

    Args:
        path: a SavedModel directory (holds `saved_model.pb`), or a model
            directory with integer version subdirectories (`1/`, `2/`, ...).

    Returns:
        `path` itself, or its highest-numbered version holding a
        `saved_model.pb` (versions compare as integers: 10 > 9).

    Raises:
        FileNotFoundError: if neither holds a SavedModel.
    """
    path = os.fspath(path)
    if holds_saved_model(path):
        return path
    versions = existing_versions(path, saved_models_only=True)
    if not versions:
        raise FileNotFoundError(
            f"No SavedModel at {path!r}: expected "
            f"{contract.SAVED_MODEL_FILE} in it or in an integer version "
            "subdirectory (export_root/<model_name>/<version>/)."
        )
    return os.path.join(path, str(versions[-1]))

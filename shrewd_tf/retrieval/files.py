"""Files of a saved retrieval index: atomic commit, manifest, checksums.

A saved index directory holds:

* `manifest.json`: format_version, index_type, code_bits, count, id_type,
  config, the name of the current data folder, and size + sha256 of every
  file in it.
* `data-<12 hex>/`: the data files of one save: `ids.npy`, the metadata
  table `metadata.jsonl` (one JSON object per id:
  `{"id": 3, "label": 1, "caption": "...", "image_uri": "..."}`) and the
  engine's files.

`save_index_files` writes the data files into a fresh data folder, fsyncs
them, then commits by atomically replacing `manifest.json`; only then are
older `data-*` folders removed. A save that fails leaves the previous index
loadable. `read_manifest` refuses a missing, truncated or corrupted data
file and any other format version with an `IndexFormatError` naming the
file. One writer per directory: a reader racing a save may find its data
folder removed and should retry.

Other file systems (`scheme://` paths, e.g. gs://, through `shrewd_tf.io`
and `tf.io.gfile`): faiss and ScaNN write and read local files, so a save
is made in a local temporary folder, its data folder copied over, and the
manifest written last (the commit point, as locally); `local_copy` copies
the manifest and the current data folder into a local temporary folder to
load from.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid

import numpy as np

from shrewd_tf import io as shrewd_io
from shrewd_tf.io import fsync_path
from shrewd_tf.io import fsync_tree
from shrewd_tf.io import write_json_atomically

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.jsonl"
IDS_FILE = "ids.npy"

_DATA_DIR_PREFIX = "data-"
_DATA_DIR_PATTERN = re.compile(r"data-[0-9a-f]{12}")


class IndexFormatError(ValueError):
    """A saved index is missing, truncated, corrupted or of another format."""


# === Commit ===


def save_index_files(directory, write_data, manifest):
    """Writes a new data folder and commits it with an atomic manifest swap.

    Args:
        directory: folder path; created if missing. Other files in it are
            left alone, except older `data-<12 hex>` folders.
        write_data: callable `write_data(data_dir)` that writes the data
            files into the (empty, existing) folder `data_dir`.
        manifest: manifest fields (index_type, code_bits, count, id_type,
            config); format_version, data_dir and files are added here.

    Returns:
        The name of the committed data folder.
    """
    if not shrewd_io.is_local(directory):
        return _save_remote(directory, write_data, manifest)
    os.makedirs(directory, exist_ok=True)
    data_name = f"{_DATA_DIR_PREFIX}{uuid.uuid4().hex[:12]}"
    data_dir = os.path.join(directory, data_name)
    os.mkdir(data_dir)
    try:
        write_data(data_dir)
        fsync_tree(data_dir)
        files = _describe_files(data_dir)
        fsync_path(directory)  # The new data folder's entry is durable.
        manifest = {
            "format_version": FORMAT_VERSION,
            **manifest,
            "data_dir": data_name,
            "files": files,
        }
        # The commit point: before it the old manifest and data stand.
        write_json_atomically(
            os.path.join(directory, MANIFEST_FILE),
            manifest,
            indent=1,
            allow_nan=False,
        )
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if (
            _DATA_DIR_PATTERN.fullmatch(name)
            and name != data_name
            and os.path.isdir(path)
        ):
            shutil.rmtree(path, ignore_errors=True)
    return data_name


def read_manifest(directory, verify_files=True):
    """Returns (manifest, data_dir), checking every data file if asked.

    Args:
        directory: a folder written by `save_index_files`.
        verify_files: check the size and sha256 of every data file.

    Returns:
        (manifest dict, path of the current data folder).

    Raises:
        IndexFormatError: naming the manifest or data file that is missing,
            truncated, corrupted or of another format version.
    """
    path = os.path.join(directory, MANIFEST_FILE)
    if not _isfile(path):
        raise IndexFormatError(f"{path} is missing: not a saved index")
    try:
        manifest = json.loads(shrewd_io.read_text(path))
        version = manifest["format_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFormatError(f"{path} is not a valid manifest: {e}") from e
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format_version={version!r}; this shrewd_tf reads "
            f"format_version={FORMAT_VERSION}"
        )
    required = ("index_type", "code_bits", "count", "config", "data_dir")
    absent = [key for key in required + ("files",) if key not in manifest]
    if absent:
        raise IndexFormatError(f"{path} lacks the fields {absent}")
    if not _DATA_DIR_PATTERN.fullmatch(str(manifest["data_dir"])):
        raise IndexFormatError(
            f"{path} names an invalid data folder: {manifest['data_dir']!r}"
        )
    data_dir = os.path.join(directory, manifest["data_dir"])
    if not verify_files:
        return manifest, data_dir
    for name, expected in manifest["files"].items():
        file_path = os.path.join(data_dir, name)
        if not _isfile(file_path):
            raise IndexFormatError(f"{file_path} is missing")
        size = _size(file_path)
        if size != expected["bytes"]:
            raise IndexFormatError(
                f"{file_path} is truncated or resized: {size} bytes, the "
                f"manifest says {expected['bytes']}"
            )
        if _sha256(file_path) != expected["sha256"]:
            raise IndexFormatError(
                f"{file_path} is corrupted: its sha256 does not match the "
                "manifest"
            )
    return manifest, data_dir


# === Ids and metadata ===


def write_ids_and_metadata(data_dir, ids, metadata):
    """Writes `ids` [N] to ids.npy, `metadata` {id: row} to metadata.jsonl."""
    np.save(os.path.join(data_dir, IDS_FILE), ids)
    with open(os.path.join(data_dir, METADATA_FILE), "w") as f:
        for key, row in metadata.items():
            f.write(json.dumps({"id": key, **row}, allow_nan=False))
            f.write("\n")


def read_ids(data_dir):
    """Returns the ids [N] (int64 or str) saved in `data_dir`."""
    return np.load(os.path.join(data_dir, IDS_FILE), allow_pickle=False)


def read_metadata(data_dir):
    """Returns the metadata table {id: row dict} saved in `data_dir`."""
    metadata = {}
    with open(os.path.join(data_dir, METADATA_FILE)) as f:
        for line in f:
            row = json.loads(line)
            metadata[row.pop("id")] = row
    return metadata


# === File helpers ===


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _isfile(path):
    if shrewd_io.is_local(path):
        return os.path.isfile(path)
    return _gfile().exists(path) and not _gfile().isdir(path)


def _size(path):
    if shrewd_io.is_local(path):
        return os.path.getsize(path)
    return _gfile().stat(path).length


def _sha256(path):
    digest = hashlib.sha256()
    opener = open if shrewd_io.is_local(path) else _gfile().GFile
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe_files(data_dir):
    """Returns {relpath: {bytes, sha256}} of every file under `data_dir`."""
    files = {}
    for root, _, names in os.walk(data_dir):
        for name in sorted(names):
            path = os.path.join(root, name)
            files[os.path.relpath(path, data_dir)] = {
                "bytes": os.path.getsize(path),
                "sha256": _sha256(path),
            }
    return files


# === Other file systems ===


def _copy_tree(source, target):
    """Copies the files under `source` to `target` (tf.io.gfile)."""
    gfile = _gfile()
    gfile.makedirs(target)
    for name in gfile.listdir(source):
        name = name.rstrip("/")
        path = os.path.join(source, name)
        if gfile.isdir(path):
            _copy_tree(path, os.path.join(target, name))
        else:
            gfile.copy(path, os.path.join(target, name), overwrite=True)


def _save_remote(directory, write_data, manifest):
    """`save_index_files` for a `scheme://` directory, through a local one."""
    with tempfile.TemporaryDirectory(prefix="shrewd-index-") as local:
        data_name = save_index_files(local, write_data, manifest)
        shrewd_io.makedirs(directory)
        _copy_tree(
            os.path.join(local, data_name), os.path.join(directory, data_name)
        )
        # The commit point: the manifest, once every data file is there.
        shrewd_io.write_bytes_atomically(
            os.path.join(directory, MANIFEST_FILE),
            shrewd_io.read_bytes(os.path.join(local, MANIFEST_FILE)),
        )
    for name in _gfile().listdir(directory):
        name = name.rstrip("/")
        if _DATA_DIR_PATTERN.fullmatch(name) and name != data_name:
            shrewd_io.remove_tree(os.path.join(directory, name))
    return data_name


@contextlib.contextmanager
def local_copy(directory):
    """Yields a local folder holding the saved index of `directory`.

    `directory` itself when local; otherwise a temporary copy of its
    manifest and current data folder, removed afterwards.
    """
    if shrewd_io.is_local(directory):
        yield directory
        return
    manifest, data_dir = read_manifest(directory, verify_files=False)
    with tempfile.TemporaryDirectory(prefix="shrewd-index-") as local:
        _copy_tree(data_dir, os.path.join(local, manifest["data_dir"]))
        with open(os.path.join(local, MANIFEST_FILE), "w") as f:
            json.dump(manifest, f)
        yield local

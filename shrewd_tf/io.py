"""Atomic writes and staged directories, on any file system.

A reader never sees half a file or half a directory written here:

* `write_text_atomically`, `write_bytes_atomically`, `write_json_atomically`
  and `atomic_path` (for writers that want a path, such as `model.save` or
  `savefig`) write a temporary file beside the target, in the same
  directory, then rename it over the target.
* `staged_directory` (and `replace_directory`) fill a staging folder beside
  the target, then rename it into place.

Paths without a scheme are local: the temporary file is fsynced before the
rename (`os.replace`, atomic on POSIX) and the directory after it, so a
crash leaves the old file or the new one, never a truncated one. A
replaced directory is first renamed aside, so there is a moment, between
two renames, in which the target is missing; a reader that finds it
missing should retry.

Paths with a scheme (`gs://`, `s3://`, `hdfs://`, `ram://`, ...) go
through `tf.io.gfile` (TensorFlow is imported on first use only). There
`rename` is whatever the file system offers: on object stores (GCS, S3) it
is a copy then a delete, so a file still appears whole (an object is
written in one piece) but a directory is moved file by file and a reader
may see it partly there; and there is no fsync.

Example:
    write_json_atomically("runs/a/metrics.json", {"map": 0.5})
    with atomic_path("runs/a/model.keras") as tmp:
        model.save(tmp)
    with staged_directory("exports/shrewd/3", replace=False) as staging:
        archive.write_out(staging)
"""

import contextlib
import json
import os
import shutil
import tempfile
import uuid

TEMP_PREFIX = ".tmp-"
_ASIDE_PREFIX = ".old-"


def is_local(path):
    """True for a path of the local file system (no `scheme://`)."""
    return "://" not in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_path(path):
    """Flushes a local file or directory to disk (no-op elsewhere).

    Directories are fsynced so that the names just created or renamed in
    them survive a crash; platforms that refuse to fsync a directory are
    ignored.
    """
    if not is_local(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def fsync_tree(path):
    """Fsyncs every file and folder under a local `path`, bottom up."""
    if not is_local(path):
        return
    for root, _, names in os.walk(path, topdown=False):
        for name in names:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


# === Reading and listing, on any file system ===


def exists(path):
    """Whether a file or folder exists (`tf.io.gfile` for schemes)."""
    path = os.fspath(path)
    return os.path.exists(path) if is_local(path) else _gfile().exists(path)


def isdir(path):
    """Whether `path` is a folder (`tf.io.gfile` for schemes)."""
    path = os.fspath(path)
    return os.path.isdir(path) if is_local(path) else _gfile().isdir(path)


def makedirs(path):
    """Creates a folder and its parents; an existing one is fine.

    On object stores (`gs://`, `s3://`) folders are implicit and this
    creates a marker at most.
    """
    path = os.fspath(path)
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        _gfile().makedirs(path)


def glob(pattern):
    """Sorted paths matching a glob pattern (`tf.io.gfile.glob` for
    schemes)."""
    pattern = os.fspath(pattern)
    if is_local(pattern):
        import glob as glob_lib

        return sorted(glob_lib.glob(pattern))
    return sorted(_gfile().glob(pattern))


def read_bytes(path):
    """The bytes of a file (`tf.io.gfile` for schemes)."""
    path = os.fspath(path)
    opener = open if is_local(path) else _gfile().GFile
    with opener(path, "rb") as f:
        return f.read()


def read_text(path, encoding="utf-8"):
    """The text of a file (`tf.io.gfile` for schemes)."""
    return read_bytes(path).decode(encoding)


# === Files ===


@contextlib.contextmanager
def atomic_path(path, suffix=None, fsync=True):
    """Yields a temporary path beside `path`; renames it over `path` after.

    The caller writes the file at the yielded path. If the block raises,
    the temporary file is removed and `path` is left as it was. Missing
    parent folders are created.

    Args:
        path: the file to write (any file system, see the module docs).
        suffix: ending of the temporary name (default: `path`'s extension,
            for writers that choose the format by extension).
        fsync: flush the file and its directory to disk (local paths).

    Yields:
        The temporary path (str).
    """
    path = os.fspath(path)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    name = os.path.basename(path)
    if is_local(path):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, temp = tempfile.mkstemp(
            dir=directory, prefix=f"{TEMP_PREFIX}{name}-", suffix=suffix
        )
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> the usual
        finally:
            os.close(fd)
        try:
            yield temp
            if fsync:
                fsync_path(temp)
            os.replace(temp, path)
        except BaseException:
            if os.path.lexists(temp):
                os.unlink(temp)
            raise
        if fsync:
            fsync_path(directory)
        return
    gfile = _gfile()
    directory = os.path.dirname(path)
    if directory:
        gfile.makedirs(directory)
    temp = os.path.join(
        directory, f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex[:12]}{suffix}"
    )
    try:
        yield temp
        gfile.rename(temp, path, overwrite=True)
    except BaseException:
        if gfile.exists(temp):
            gfile.remove(temp)
        raise


def write_bytes_atomically(path, data, fsync=True):
    """Writes `data` (bytes) to `path` atomically; see `atomic_path`."""
    with atomic_path(path, suffix="", fsync=fsync) as temp:
        opener = open if is_local(temp) else _gfile().GFile
        with opener(temp, "wb") as f:
            f.write(data)


def write_text_atomically(path, text, encoding="utf-8", fsync=True):
    """Writes `text` (str) to `path` atomically; see `atomic_path`."""
    write_bytes_atomically(path, text.encode(encoding), fsync=fsync)


def write_json_atomically(path, value, indent=2, fsync=True, **dumps_kwargs):
    """Writes `value` as JSON (and a final newline) to `path` atomically.

    Args:
        path: the file to write.
        value: a JSON-serialisable value.
        indent: `json.dumps` indent.
        fsync: flush to disk (local paths).
        **dumps_kwargs: more `json.dumps` arguments (sort_keys, allow_nan).
    """
    text = json.dumps(value, indent=indent, **dumps_kwargs) + "\n"
    write_text_atomically(path, text, fsync=fsync)


# === Directories ===


def _local_staging_dir(target, prefix):
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(target))
    staging = tempfile.mkdtemp(prefix=f"{prefix}{name}-", dir=parent)
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 -> the usual
    return staging


def make_staging_dir(target, prefix=TEMP_PREFIX):
    """Creates and returns an empty folder beside `target` to fill."""
    target = os.fspath(target).rstrip("/")
    if is_local(target):
        return _local_staging_dir(target, prefix)
    parent, name = os.path.split(target)
    staging = os.path.join(parent, f"{prefix}{name}-{uuid.uuid4().hex[:12]}")
    _gfile().makedirs(staging)
    return staging


def remove_tree(path):
    """Removes a folder and everything in it, if it exists."""
    path = os.fspath(path)
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    gfile = _gfile()
    if gfile.exists(path):
        gfile.rmtree(path)


def replace_directory(staging, target, replace=True, fsync=True):
    """Moves the finished folder `staging` to `target`.

    Local paths: `staging` is renamed to `target` (atomic); an old
    `target` is first renamed aside, then removed. Elsewhere the files are
    renamed one by one (see the module docs) after the old target is
    removed.

    Args:
        staging: a folder beside `target` (see `make_staging_dir`).
        target: the folder to create or replace.
        replace: replace an existing `target`; if False an existing one
            raises FileExistsError and is left alone.
        fsync: flush the staged files and folders first (local paths).

    Raises:
        FileExistsError: `target` exists and `replace` is False, or it
            appeared (another writer) while this one was moving in.
    """
    staging, target = os.fspath(staging), os.fspath(target).rstrip("/")
    if not is_local(target):
        _replace_remote_directory(staging, target, replace)
        return
    if fsync:
        fsync_tree(staging)
    parent = os.path.dirname(os.path.abspath(target))
    aside = None
    if os.path.lexists(target):
        if not replace:
            raise FileExistsError(f"{target} already exists")
        aside = tempfile.mkdtemp(
            prefix=f"{_ASIDE_PREFIX}{os.path.basename(target)}-", dir=parent
        )
        os.rename(target, os.path.join(aside, "old"))
    try:
        os.rename(staging, target)
    except OSError as error:
        if aside is not None and not os.path.lexists(target):
            os.rename(os.path.join(aside, "old"), target)
            shutil.rmtree(aside, ignore_errors=True)
        if os.path.lexists(target):
            raise FileExistsError(
                f"{target} appeared while moving {staging} there: {error}"
            ) from error
        raise
    if fsync:
        fsync_path(parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _replace_remote_directory(staging, target, replace):
    gfile = _gfile()
    if gfile.exists(target):
        if not replace:
            raise FileExistsError(f"{target} already exists")
        gfile.rmtree(target)
    for root, _, names in gfile.walk(staging):
        relative = os.path.relpath(root, staging)
        destination = target if relative == "." else os.path.join(
            target, relative
        )
        gfile.makedirs(destination)
        for name in names:
            gfile.rename(
                os.path.join(root, name), os.path.join(destination, name)
            )
    gfile.rmtree(staging)


@contextlib.contextmanager
def staged_directory(target, replace=True, fsync=True, prefix=TEMP_PREFIX):
    """Yields an empty staging folder; moves it to `target` on success.

    If the block raises, the staging folder is removed and `target` is left
    as it was.

    Args:
        target: the folder to create or replace (any file system).
        replace: replace an existing `target` (see `replace_directory`).
        fsync: flush the staged files before the move (local paths).
        prefix: start of the staging folder's name (choose one that
            readers of the parent folder skip).

    Yields:
        The staging folder (str), beside `target`.

    Raises:
        FileExistsError: see `replace_directory`.
    """
    staging = make_staging_dir(target, prefix)
    try:
        yield staging
        replace_directory(staging, target, replace=replace, fsync=fsync)
    finally:
        remove_tree(staging)

"""`memfs://`: an in-memory Beam `FileSystem`, for tests only.

It behaves like an object store (GCS, S3): no directories (`has_dirs` is
False, `mkdirs` does nothing, listing a prefix is recursive), an object
appears whole when its writer closes it, and `rename` is a copy then a
delete. Beam finds a `FileSystem` subclass by its `scheme()` once the
module defining it is imported, so importing this module registers it.

The objects live in one dict of this process: use it with the in-process
runner (`FnApiRunner` without `--direct_running_mode=multi_processing`).
TensorFlow's readers (`tf.io.gfile`, `tf.data`) do not know the scheme;
tests read the output back with `copy_to_local` and compare it there.

Example:
    from tests.support import beam_filesystem
    out = beam_filesystem.fresh_root() + "/records"
    make_tfrecords.run(MakeTFRecordsOptions(..., output_dir=out))
    beam_filesystem.copy_to_local(out, tmp_path / "copy")
"""

import io
import os
import threading
import time
import uuid

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystem import CompressedFile
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystem import FileSystem

SCHEME = "memfs"
_OBJECTS = {}  # path -> (bytes, mtime)
_LOCK = threading.Lock()


def fresh_root():
    """A new, empty `memfs://<bucket>` prefix."""
    return f"{SCHEME}://{uuid.uuid4().hex[:12]}"


def paths(prefix=f"{SCHEME}://"):
    """The stored object paths under a prefix, sorted."""
    with _LOCK:
        return sorted(p for p in _OBJECTS if p.startswith(prefix))


def copy_to_local(prefix, directory):
    """Copies every object under `prefix/` into a local directory."""
    prefix = prefix.rstrip("/") + "/"
    for path in paths(prefix):
        local = os.path.join(directory, path[len(prefix):])
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(_OBJECTS[path][0])


class _Writer(io.BytesIO):
    """Buffers the bytes; the object appears whole on close."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            with _LOCK:
                _OBJECTS[self.path] = (self.getvalue(), time.time())
        super().close()


class MemoryFileSystem(FileSystem):
    """An object store in a dict, under the `memfs://` scheme."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        path = basepath.rstrip("/")
        for part in paths:
            path = path + "/" + part.strip("/")
        return path

    def split(self, path):
        if not path.startswith(f"{SCHEME}://"):
            raise ValueError(f"not a {SCHEME}:// path. Received: {path!r}")
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # an object store has no directories

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        with _LOCK:
            items = [(p, len(v[0]), v[1]) for p, v in _OBJECTS.items()
                     if p.startswith(dir_or_prefix)]
        for path, size, mtime in items:
            yield FileMetadata(path, size, mtime)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        writer = _Writer(path)
        compression = self._get_compression_type(path, compression_type)
        if compression == CompressionTypes.UNCOMPRESSED:
            return writer
        return CompressedFile(writer, compression)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        reader = io.BytesIO(self._get(path)[0])
        compression = self._get_compression_type(path, compression_type)
        if compression == CompressionTypes.UNCOMPRESSED:
            return reader
        return CompressedFile(reader, compression)

    def _get(self, path):
        with _LOCK:
            if path not in _OBJECTS:
                raise BeamIOError(
                    f"{path} not found",
                    {path: FileNotFoundError(path)})
            return _OBJECTS[path]

    def _sources(self, path):
        """The objects `path` names: itself, or those under `path/`."""
        with _LOCK:
            if path in _OBJECTS:
                return [path]
            prefix = path.rstrip("/") + "/"
            return [p for p in _OBJECTS if p.startswith(prefix)]

    def copy(self, source_file_names, destination_file_names):
        errors = {}
        for source, destination in zip(
                source_file_names, destination_file_names):
            found = self._sources(source)
            if not found:
                errors[(source, destination)] = FileNotFoundError(source)
            with _LOCK:
                for path in found:
                    _OBJECTS[destination + path[len(source):]] = (
                        _OBJECTS[path][0], time.time())
        if errors:
            raise BeamIOError("copy failed", errors)

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path):
        return bool(self._sources(path))

    def size(self, path):
        return len(self._get(path)[0])

    def last_updated(self, path):
        return self._get(path)[1]

    def checksum(self, path):
        return str(self.size(path))  # what Beam allows when none is stored

    def metadata(self, path):
        payload, mtime = self._get(path)
        return FileMetadata(path, len(payload), mtime)

    def delete(self, paths):
        errors = {}
        for path in paths:
            found = self._sources(path)
            if not found:
                errors[path] = FileNotFoundError(path)
            with _LOCK:
                for name in found:
                    _OBJECTS.pop(name, None)
        if errors:
            raise BeamIOError("delete failed", errors)

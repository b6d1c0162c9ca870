"""Atomic job outputs: a staging directory moved into place on success.

Beam's file sinks already write each shard to a temporary name and rename it
when the bundle commits. A job writes many files, though (shards of several
splits, dead letters, `dataset_info.json`), and a rerun with another shard
count must not leave stale shards that a glob would pick up. So every job
writes into `StagedOutputDir.path` (a sibling `.staging-*` directory) and
calls `commit()` once the pipeline has finished. If the job fails, the
previous output is untouched and the staging directory removed.

Local paths (no `scheme://`): the old directory is renamed aside, the new
one renamed into place (`os.replace`, atomic) and the old one deleted.

Other paths (`gs://`, `s3://`, `hdfs://`, any scheme Beam knows) go through
Beam's `FileSystems`, so the job runs the same on Dataflow, Flink or Spark:
the staging prefix is filled by the pipeline, then the files of the old
output are deleted (`dataset_info.json` first) and the staged ones renamed
file by file (`FileSystems.rename`; on object stores a copy then a delete),
`dataset_info.json` last. Each file appears whole, but a reader listing the
directory during `commit()` may see part of the new output; readers that
must never do so should read a fresh prefix per run (see docs/pipeline.md).
"""

import logging
import os
import shutil
import tempfile
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from shrewd_tf import io as io_lib
from shrewd_tf.data import records as data

log = logging.getLogger(__name__)


def output_path(path):
    """`path` made absolute when local; a `scheme://` path unchanged."""
    path = os.fspath(path)
    return os.path.abspath(path) if io_lib.is_local(path) else path


def list_files(directory):
    """Every file under `directory` (recursive), sorted; any file system."""
    directory = os.fspath(directory).rstrip("/")
    if io_lib.is_local(directory):
        return sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(directory) for name in names
        )
    pattern = FileSystems.join(directory, "**")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def delete_tree(directory):
    """Deletes a file, or a directory and the files under it, if there
    (any file system)."""
    directory = os.fspath(directory).rstrip("/")
    if io_lib.is_local(directory):
        if os.path.isfile(directory):
            os.unlink(directory)
        shutil.rmtree(directory, ignore_errors=True)
        return
    files = list_files(directory)
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def read_bytes(path):
    """A file's bytes; `scheme://` paths through Beam's `FileSystems`."""
    path = os.fspath(path)
    if io_lib.is_local(path):
        return io_lib.read_bytes(path)
    with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
        return f.read()


def read_text(path, encoding="utf-8"):
    """A file's text; `scheme://` paths through Beam's `FileSystems`."""
    return read_bytes(path).decode(encoding)


def write_bytes(path, payload):
    """Writes a file through Beam's `FileSystems`; local paths atomically
    (`shrewd_tf.io`), object stores whole on close."""
    path = os.fspath(path)
    if io_lib.is_local(path):
        io_lib.write_bytes_atomically(path, payload)
        return
    with FileSystems.create(path, compression_type=_UNCOMPRESSED) as f:
        f.write(payload)


def save_dataset_info(info, directory):
    """`info.save(directory)` on any file system Beam knows.

    `DatasetInfo.save` writes with `tf.io.gfile`; a scheme TensorFlow does
    not know (Beam-only plugins) gets the same bytes through `FileSystems`.
    """
    directory = os.fspath(directory)
    if io_lib.is_local(directory):
        info.save(directory)
        return
    with tempfile.TemporaryDirectory() as local:
        info.save(local)
        payload = io_lib.read_bytes(os.path.join(local, data.INFO_FILE))
    write_bytes(FileSystems.join(directory, data.INFO_FILE), payload)


def load_dataset_info(directory):
    """`DatasetInfo.load(directory)` on any file system Beam knows."""
    directory = os.fspath(directory)
    if io_lib.is_local(directory):
        return data.DatasetInfo.load(directory)
    path = FileSystems.join(directory, data.INFO_FILE)
    if not FileSystems.exists(path):
        return data.DatasetInfo.load(directory)  # its clear error
    with tempfile.TemporaryDirectory() as local:
        io_lib.write_bytes_atomically(
            os.path.join(local, data.INFO_FILE), read_bytes(path))
        return data.DatasetInfo.load(local)


_UNCOMPRESSED = beam.io.filesystem.CompressionTypes.UNCOMPRESSED


class StagedOutputDir:
    """A directory written in full, then moved to `target` at once.

    Example:
        with StagedOutputDir("data/fmnist") as out:
            run_pipeline(out.path)
            out.commit()
    """

    def __init__(self, target):
        self.target = output_path(target).rstrip("/")
        self.committed = False
        if not io_lib.is_local(self.target):
            parent, name = self.target.rsplit("/", 1)
            self.path = FileSystems.join(
                parent, f".staging-{name}-{uuid.uuid4().hex[:12]}")
            FileSystems.mkdirs(self.path)
            return
        parent = os.path.dirname(self.target)
        os.makedirs(parent, exist_ok=True)
        self.path = tempfile.mkdtemp(
            dir=parent, prefix=f".staging-{os.path.basename(self.target)}-"
        )
        # mkdtemp makes the directory private (0700); the committed output
        # gets the usual permissions of a new directory instead.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)

    def commit(self):
        """Replaces `target` with the staging directory."""
        if not io_lib.is_local(self.target):
            self._commit_remote()
            return
        old = None
        if os.path.exists(self.target):
            old = tempfile.mkdtemp(
                dir=os.path.dirname(self.target),
                prefix=f".old-{os.path.basename(self.target)}-",
            )
            os.rmdir(old)
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        self.committed = True
        if old:
            shutil.rmtree(old, ignore_errors=True)
        log.info("wrote %s", self.target)

    def _commit_remote(self):
        # `dataset_info.json` goes first and comes back last: a reader
        # that finds it finds the whole new output.
        info = FileSystems.join(self.target, data.INFO_FILE)
        if FileSystems.exists(info):
            FileSystems.delete([info])
        delete_tree(self.target)
        FileSystems.mkdirs(self.target)
        prefix = self.path.rstrip("/") + "/"
        staged = sorted(
            list_files(self.path),
            key=lambda p: (p[len(prefix):] == data.INFO_FILE, p))
        for batch in (staged[:-1], staged[-1:]):
            if batch:
                FileSystems.rename(
                    batch,
                    [FileSystems.join(self.target, p[len(prefix):])
                     for p in batch],
                )
        self.committed = True
        delete_tree(self.path)
        log.info("wrote %s", self.target)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.committed:
            delete_tree(self.path)
        return False


class WriteTFRecords(beam.PTransform):
    """`ImageRecord`s -> `<directory>/<split>-SSSSS-of-NNNNN.tfrecord`.

    Counts records in the Beam metric `shrewd/records_written_<split>`.

    Args:
        directory: output directory (the staging path of a job).
        split: split name ("train", "test").
        num_shards: shard count; 0 lets the runner choose.
    """

    def __init__(self, directory, split, num_shards=1):
        super().__init__()
        self.directory = directory
        self.split = split
        self.num_shards = num_shards

    def expand(self, records):
        counter = beam.metrics.Metrics.counter(
            "shrewd", f"records_written_{self.split}"
        )

        def serialize(record):
            counter.inc()
            return data.serialize(record)

        return (
            records
            | "Serialize" >> beam.Map(serialize)
            | "Write" >> beam.io.WriteToTFRecord(
                os.path.join(self.directory, self.split),
                file_name_suffix=data.SHARD_SUFFIX,
                num_shards=self.num_shards,
            )
        )


def records_written(pipeline_result, split):
    """The `records_written_<split>` counter of a finished pipeline."""
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter()
        .with_namespace("shrewd")
        .with_name(f"records_written_{split}")
    )
    return sum(int(c.committed or c.attempted or 0) for c in query["counters"])

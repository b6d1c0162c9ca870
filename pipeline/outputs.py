"""Atomic job outputs: a staging directory swapped in on success.

Beam's file sinks already write each shard to a temporary name and rename it
when the bundle commits. A job writes many files, though (shards of several
splits, dead letters, `dataset_info.json`), and a rerun with another shard
count must not leave stale shards that a glob would pick up. So every job
writes into `StagedOutputDir.path` (a sibling `.staging-*` directory) and
calls `commit()` once the pipeline has finished: the old directory is moved
aside, the new one renamed into place, and the old one deleted. If the job
fails, the previous output is untouched and the staging directory removed.

Local paths only for the swap; on a distributed runner with GCS/S3 output,
point `--output-dir` at a fresh versioned prefix instead.
"""

import logging
import os
import shutil
import tempfile

import apache_beam as beam

from shrewd_tf.data import records as data

log = logging.getLogger(__name__)


class StagedOutputDir:
    """A directory written in full, then swapped into `target` at once.

    Example:
        with StagedOutputDir("data/fmnist") as out:
            run_pipeline(out.path)
            out.commit()
    """

    def __init__(self, target):
        self.target = os.path.abspath(target)
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
        self.committed = False

    def commit(self):
        """Replaces `target` with the staging directory."""
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
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

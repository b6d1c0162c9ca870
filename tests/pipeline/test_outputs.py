"""Tests for pipeline.outputs: staged output directories, TFRecord shards."""

import glob
import os
import stat

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline

from pipeline import outputs
from shrewd_tf.data import records as data


def make_pipeline():
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def records(count):
    image = data.encode_png(np.zeros((8, 8, 1), np.uint8))
    return [data.ImageRecord(id=f"r{i}", image=image, label=i % 2)
            for i in range(count)]


def write_split(directory, count, num_shards):
    pipeline = make_pipeline()
    _ = (pipeline | beam.Create(records(count))
         | outputs.WriteTFRecords(directory, "train", num_shards))
    result = pipeline.run()
    result.wait_until_finish()
    return result


def test_write_tfrecords_shards_and_counter(tmp_path):
    result = write_split(str(tmp_path), 7, num_shards=3)
    shards = sorted(os.listdir(tmp_path))
    assert shards == [f"train-0000{s}-of-00003.tfrecord" for s in range(3)]
    assert outputs.records_written(result, "train") == 7
    assert outputs.records_written(result, "test") == 0
    ids = sorted(
        data.from_example(r.numpy()).id
        for r in tf.data.TFRecordDataset(
            [str(tmp_path / s) for s in shards])
    )
    assert ids == sorted(f"r{i}" for i in range(7))


def test_commit_replaces_old_output(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with outputs.StagedOutputDir(str(target)) as staged:
        assert os.path.dirname(staged.path) == str(tmp_path)
        with open(os.path.join(staged.path, "new.txt"), "w") as f:
            f.write("new")
        assert (target / "old.txt").exists()  # untouched until commit
        staged.commit()
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging, no old copy


def test_failure_keeps_old_output(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="pipeline broke"):
        with outputs.StagedOutputDir(str(target)) as staged:
            with open(os.path.join(staged.path, "half.txt"), "w") as f:
                f.write("half")
            raise RuntimeError("pipeline broke")
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_first_commit_creates_target(tmp_path):
    target = tmp_path / "deep" / "out"
    with outputs.StagedOutputDir(str(target)) as staged:
        staged.commit()
    assert target.is_dir()


def test_committed_directory_is_not_private(tmp_path):
    umask = os.umask(0o022)
    try:
        with outputs.StagedOutputDir(str(tmp_path / "out")) as staged:
            staged.commit()
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o755


def test_rerun_with_fewer_shards_leaves_no_stale_shards(tmp_path):
    target = str(tmp_path / "out")
    for num_shards, count in ((3, 9), (1, 4)):
        with outputs.StagedOutputDir(target) as staged:
            write_split(staged.path, count, num_shards)
            staged.commit()
    assert sorted(os.listdir(target)) == ["train-00000-of-00001.tfrecord"]
    pattern = data.DatasetInfo.file_pattern_for(target, "train")
    assert len(glob.glob(pattern)) == 1

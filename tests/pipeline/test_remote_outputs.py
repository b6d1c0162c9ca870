"""The Beam jobs on a file system only Beam knows (`memfs://`).

`tests.support.beam_filesystem` registers `memfs://`, an in-memory object
store (no directories, copy-then-delete renames). TensorFlow cannot read it,
so each job's output is copied to a local directory and compared there
with the same job run on local paths: the jobs must read and write only
through Beam's `FileSystems`.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
from apache_beam.testing import test_pipeline

from pipeline import embed_captions
from pipeline import label_classes
from pipeline import label_distances
from pipeline import make_tfrecords
from pipeline import outputs
from pipeline.dead_letters import read_dead_letters
from shrewd_tf.data import records as data
from tests.support import beam_filesystem
from tests.support.image_sources import write_fake_fashion_mnist
from tests.support.records import write_shards
from tests.support.sentence_encoders import FakeEncoderHandler


def local_files(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory) for name in names
    )


def assert_same_output(local_dir, remote_copy):
    """Two job outputs hold the same files, records and dataset info."""
    assert local_files(remote_copy) == local_files(local_dir)
    info = data.DatasetInfo.load(local_dir)
    remote_info = data.DatasetInfo.load(remote_copy)
    assert dataclasses.replace(remote_info, statistics={}) == (
        dataclasses.replace(info, statistics={}))
    assert sorted(remote_info.statistics) == sorted(info.statistics)
    for split in info.splits:
        if info.statistics:
            for key in ("mean", "std"):
                np.testing.assert_allclose(
                    remote_info.statistics[split][key],
                    info.statistics[split][key], rtol=1e-9)
            assert remote_info.label_counts(split) == info.label_counts(split)
        ours = data.load_split_arrays(remote_copy, split)
        theirs = data.load_split_arrays(local_dir, split)
        order, their_order = np.argsort(ours["ids"]), np.argsort(theirs["ids"])
        for key in ("ids", "images", "labels", "captions", "embeddings"):
            if ours[key] is None:
                assert theirs[key] is None
                continue
            np.testing.assert_array_equal(
                ours[key][order], theirs[key][their_order])


def test_staged_output_dir_replaces_remote_output_only_on_commit():
    target = beam_filesystem.fresh_root() + "/out"
    outputs.write_bytes(target + "/old.txt", b"old")
    outputs.write_bytes(target + "/sub/stale.txt", b"stale")
    with pytest.raises(RuntimeError, match="broke"):
        with outputs.StagedOutputDir(target) as staged:
            outputs.write_bytes(staged.path + "/half.txt", b"half")
            raise RuntimeError("broke")
    assert outputs.list_files(target) == [
        target + "/old.txt", target + "/sub/stale.txt"]
    with outputs.StagedOutputDir(target) as staged:
        assert staged.path.startswith(target.rsplit("/", 1)[0] + "/.staging-")
        outputs.write_bytes(staged.path + "/new.txt", b"new")
        outputs.write_bytes(staged.path + "/a/b.txt", b"b")
        assert outputs.list_files(target)[0] == target + "/old.txt"
        staged.commit()
    root = target.rsplit("/", 1)[0]
    assert beam_filesystem.paths(root + "/") == [
        target + "/a/b.txt", target + "/new.txt"]  # no staging left
    assert outputs.read_bytes(target + "/a/b.txt") == b"b"


def test_make_tfrecords_to_memfs_equals_a_local_run(tmp_path):
    write_fake_fashion_mnist(str(tmp_path / "idx"))
    options = make_tfrecords.MakeTFRecordsOptions(
        "fashion_mnist", str(tmp_path / "local"),
        data_dir=str(tmp_path / "idx"), records_per_shard=4,
        image_size=(14, 14))
    make_tfrecords.run(options)
    remote = beam_filesystem.fresh_root() + "/records"
    result = make_tfrecords.run(
        dataclasses.replace(options, output_dir=remote))

    assert result.output_dir == remote
    assert result.splits == {"train": 10, "test": 4}
    assert result.info.statistics["train"]["label_counts"]
    assert result.dead_letter_files == (
        remote + "/dead_letters-00000-of-00001.jsonl",)
    beam_filesystem.copy_to_local(remote, tmp_path / "copy")
    assert_same_output(str(tmp_path / "local"), str(tmp_path / "copy"))
    assert read_dead_letters(
        [str(tmp_path / "copy" / "dead_letters-00000-of-00001.jsonl")]) == []


def test_embed_captions_memfs_to_memfs_equals_a_local_run(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        data.ImageRecord(
            id=f"train/{i}", label=i % 2, caption=f"a dog {'runs ' * i}",
            image=data.encode_png(rng.integers(0, 256, (4, 5, 1), np.uint8)))
        for i in range(6)
    ]
    local_in = tmp_path / "in"
    write_shards(str(local_in), "train", [records[:3], records[3:]])
    data.DatasetInfo(image_shape=(4, 5, 1), class_names=("a", "b"),
                     splits={"train": 6}).save(str(local_in))
    remote_in = beam_filesystem.fresh_root() + "/in"
    for name in local_files(local_in):
        outputs.write_bytes(f"{remote_in}/{name}",
                            (local_in / name).read_bytes())

    def embed(input_dir, output_dir):
        return embed_captions.run(
            embed_captions.EmbedCaptionsOptions(input_dir, output_dir),
            test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"),
            model_handler=FakeEncoderHandler(max_batch_size=4))

    embed(str(local_in), str(tmp_path / "local"))
    remote_out = remote_in.rsplit("/", 1)[0] + "/out"
    result = embed(remote_in, remote_out)

    assert result.output_dir == remote_out
    assert result.splits == {"train": 6}
    beam_filesystem.copy_to_local(remote_out, tmp_path / "copy")
    assert_same_output(str(tmp_path / "local"), str(tmp_path / "copy"))


def test_label_distances_memfs_to_memfs_equals_a_local_run(tmp_path):
    # root -> A -> {a1, a2};  root -> B -> b1: a small `lcs` tree.
    hierarchy = tmp_path / "tree.txt"
    hierarchy.write_text("root A\nroot B\nA a1\nA a2\nB b1\n")
    info = data.DatasetInfo(image_shape=(4, 4, 1),
                            class_names=("b1", "a1", "a2"))
    local_records = str(tmp_path / "records")
    os.makedirs(local_records)
    info.save(local_records)
    root = beam_filesystem.fresh_root()
    outputs.save_dataset_info(info, root + "/records")

    def distances(records, output):
        return label_distances.run(
            label_distances.LabelDistancesOptions(
                kind="lcs", tfrecord_dir=records, output=output,
                hierarchy_file=str(hierarchy), rows_per_block=2),
            test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))

    distances(local_records, str(tmp_path / "lcs"))
    result = distances(root + "/records", root + "/lcs")

    assert result.matrix_path == root + "/lcs.npy"
    assert beam_filesystem.paths(root + "/") == [
        root + "/lcs.json", root + "/lcs.npy",
        f"{root}/records/{data.INFO_FILE}"]  # no temporary file left
    assert outputs.read_bytes(root + "/lcs.npy") == (
        tmp_path / "lcs.npy").read_bytes()
    remote_meta = json.loads(outputs.read_text(root + "/lcs.json"))
    local_meta = json.loads((tmp_path / "lcs.json").read_text())
    assert remote_meta.pop("source") == root + "/records"
    assert local_meta.pop("source") == local_records
    assert remote_meta == local_meta


def test_synsets_file_on_memfs():
    path = beam_filesystem.fresh_root() + "/synsets.txt"
    outputs.write_bytes(path, b"# name synset\nhouse cat domestic_cat.n.01\n")
    assert label_classes.read_synsets_file(path) == {
        "house cat": "domestic_cat.n.01"}


def test_remote_commit_moves_dataset_info_last(monkeypatch):
    target = beam_filesystem.fresh_root() + "/out"
    outputs.write_bytes(f"{target}/{data.INFO_FILE}", b"old")
    outputs.write_bytes(target + "/train-00000-of-00001.tfrecord", b"old")
    moved = []
    rename = outputs.FileSystems.rename

    def recording_rename(sources, destinations):
        seen = beam_filesystem.paths(target + "/")
        moved.append(([d.rsplit("/", 1)[1] for d in destinations], seen))
        return rename(sources, destinations)

    monkeypatch.setattr(outputs.FileSystems, "rename", recording_rename)
    with outputs.StagedOutputDir(target) as staged:
        for name in ("a.jsonl", data.INFO_FILE, "z.tfrecord"):
            outputs.write_bytes(f"{staged.path}/{name}", b"new")
        staged.commit()
    assert moved == [(["a.jsonl", "z.tfrecord"], []),
                     ([data.INFO_FILE], [target + "/a.jsonl",
                                         target + "/z.tfrecord"])]

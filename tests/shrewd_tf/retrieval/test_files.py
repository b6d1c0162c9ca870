"""Tests for shrewd_tf.retrieval.files: atomic saves and refused bad files."""

import json
import os

import faiss
import numpy as np
import pytest

from shrewd_tf.retrieval import hamming_index
from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval import scann_index
from tests.support.indexes import CODE_BITS
from tests.support.indexes import clustered_database_and_queries


@pytest.fixture(scope="module")
def clustered():
    return clustered_database_and_queries()


def saved_flat_index(tmp_path, clustered):
    database, _ = clustered
    index = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    return tmp_path / "index" / manifest["data_dir"], manifest


def test_load_refuses_truncated_file(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    path = data_dir / "faiss.index"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        index_files.IndexFormatError, match="faiss.index.*truncated"
    ):
        index_lib.load_index(tmp_path / "index")


def test_load_refuses_missing_file(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    (data_dir / "metadata.jsonl").unlink()
    with pytest.raises(
        index_files.IndexFormatError, match="metadata.jsonl is missing"
    ):
        index_lib.load_index(tmp_path / "index")


def test_load_refuses_wrong_checksum(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    path = data_dir / "ids.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(index_files.IndexFormatError, match="ids.npy.*sha256"):
        hamming_index.BinaryHammingIndex.load(tmp_path / "index")


def test_load_refuses_other_format_version_and_type(tmp_path, clustered):
    _, manifest = saved_flat_index(tmp_path, clustered)
    path = tmp_path / "index" / "manifest.json"
    path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(
        index_files.IndexFormatError, match="manifest.json.*format_version=99"
    ):
        index_lib.load_index(tmp_path / "index")
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        index_files.IndexFormatError, match="manifest.json.*'binary_hamming'"
    ):
        scann_index.ScannIndex.load(tmp_path / "index")
    with pytest.raises(index_files.IndexFormatError, match="missing"):
        index_lib.load_index(tmp_path / "nothing_here")


def data_dirs(path):
    return len([n for n in os.listdir(path) if n.startswith("data-")])


def test_failed_save_keeps_previous_index(tmp_path, clustered, monkeypatch):
    database, queries = clustered
    old = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    old.save(tmp_path / "index")
    want = old.search(queries, 5)

    def failing_write(engine, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index_binary", failing_write)
    new = hamming_index.BinaryHammingIndex(CODE_BITS).build(database[:100])
    with pytest.raises(OSError, match="disk full"):
        new.save(tmp_path / "index")
    monkeypatch.undo()
    assert data_dirs(tmp_path / "index") == 1
    loaded = index_lib.load_index(tmp_path / "index")
    assert len(loaded) == len(database)
    for got, expected in zip(loaded.search(queries, 5), want):
        np.testing.assert_array_equal(got, expected)
    new.save(tmp_path / "index")  # A later good save replaces it cleanly.
    assert len(index_lib.load_index(tmp_path / "index")) == 100
    assert data_dirs(tmp_path / "index") == 1

"""index_builder: indexes from codes and the codes files."""

import os

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import builder as index_builder

CODE_BITS = 16


def _codes(num, seed):
    """Float codes in [0, 1] with few distinct bit patterns (many ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (6, CODE_BITS))
    bits = centres[rng.integers(0, 6, num)]
    bits ^= (rng.random((num, CODE_BITS)) < 0.1).astype(bits.dtype)
    margin = rng.uniform(0.0, 0.45, (num, CODE_BITS))
    return np.where(bits == 1, 1 - margin, margin).astype(np.float32)


def _metadata(ids):
    return {
        "label": [i % 3 for i in range(len(ids))],
        "label_name": [f"class_{i % 3}" for i in range(len(ids))],
        "caption": [f"a picture of {key}" for key in ids],
        "image_uri": [f"images/{key}.png" for key in ids],
    }


def _brute_force_hamming(queries, database):
    return (
        (queries[:, None, :] > 0.5) != (database[None] > 0.5)
    ).sum(axis=2)


def test_build_indexes_saves_searchable_indexes_with_metadata(tmp_path):
    database, queries = _codes(150, seed=0), _codes(9, seed=1)
    ids = np.asarray([f"db/{i:04d}" for i in range(150)])
    metadata = _metadata(ids)
    directories = index_builder.build_indexes(
        database,
        ids,
        str(tmp_path),
        metadata=metadata,
        kinds="both",
        rerank=False,
        scann_params={"brute_force": True},
    )
    assert directories == {
        "binary": str(tmp_path / "binary"),
        "scann": str(tmp_path / "scann"),
    }
    binary = index_lib.load_index(directories["binary"])
    found_ids, found = binary.search(queries, 20)
    reference = _brute_force_hamming(queries, database)
    # Tie-aware: the k smallest distances, each true for its id.
    np.testing.assert_array_equal(found, np.sort(reference, 1)[:, :20])
    rows = {key: row for row, key in enumerate(ids)}
    for q, (row_ids, row_distances) in enumerate(zip(found_ids, found)):
        true = [reference[q, rows[key]] for key in row_ids]
        np.testing.assert_array_equal(row_distances, true)
    first = binary.metadata(found_ids[:1, :1])[0][0]
    row = rows[found_ids[0, 0]]
    assert first == {name: values[row] for name, values in metadata.items()}

    scann = index_lib.load_index(directories["scann"])
    _, l2 = scann.search(queries, 20)
    reference_l2 = ((queries[:, None] - database[None]) ** 2).sum(2)
    np.testing.assert_allclose(
        l2, np.sort(reference_l2, 1)[:, :20], rtol=1e-4, atol=1e-5
    )


def test_rerank_with_a_shortlist_of_everything_is_exact_l1(tmp_path):
    database, queries = _codes(120, seed=2), _codes(5, seed=3)
    ids = np.arange(120)
    index_builder.build_indexes(
        database,
        ids,
        str(tmp_path),
        kinds=("binary",),
        binary_params={"rerank_candidates": 120},
    )
    index = index_lib.load_index(str(tmp_path / "binary"))
    assert index.rerank and index.method == "flat"
    _, found = index.search(queries, 10)
    l1 = np.abs(queries[:, None] - database[None]).sum(2)
    np.testing.assert_allclose(found, np.sort(l1, 1)[:, :10], rtol=1e-5)
    assert not os.path.exists(tmp_path / "scann")


def test_build_indexes_rejects_bad_input_without_saving(tmp_path):
    database = _codes(20, seed=4)
    with pytest.raises(ValueError, match="kinds=\\('faiss',\\)"):
        index_builder.build_indexes(database, np.arange(20), str(tmp_path),
                                    kinds="faiss")
    with pytest.raises(ValueError, match="len\\(ids\\)=19"):
        index_builder.build_indexes(database, np.arange(19), str(tmp_path))
    with pytest.raises(ValueError, match="codes.shape=\\(0, 16\\)"):
        index_builder.build_indexes(database[:0], [], str(tmp_path))
    # The binary index builds in memory, then ScaNN's fails: every index
    # is built before the first save, so nothing is written.
    with pytest.raises(ValueError, match="num_leaves=50"):
        index_builder.build_indexes(
            database, np.arange(20), str(tmp_path),
            scann_params={"num_leaves": 50},
        )
    assert os.listdir(tmp_path) == []


def test_codes_files_round_trip_sorted_by_id(tmp_path):
    database = _codes(30, seed=5)
    ids = [f"test/{i:03d}" for i in range(30)]
    metadata = _metadata(ids)
    order = np.random.default_rng(6).permutation(30)
    for shard, part in enumerate(np.array_split(order, 3)):
        path = tmp_path / f"codes-{shard:05d}-of-00003.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in part:
                row = {name: values[i] for name, values in metadata.items()}
                writer.write(
                    index_builder.code_example(ids[i], database[i], row)
                )
    read_ids, codes, read_metadata = index_builder.read_codes(str(tmp_path))
    assert read_ids.tolist() == ids
    np.testing.assert_array_equal(codes, database)
    assert read_metadata == metadata

    directories = index_builder.build_index_from_codes(
        str(tmp_path), str(tmp_path / "out"), kinds="binary", rerank=False
    )
    index = index_lib.load_index(directories["binary"])
    _, found = index.search(database[:3], 1)
    np.testing.assert_array_equal(found[:, 0], 0)
    assert index.metadata(["test/007"])[0]["caption"] == "a picture of test/007"


def test_read_codes_rejects_missing_and_ragged_codes(tmp_path):
    with pytest.raises(FileNotFoundError, match="No codes shards"):
        index_builder.read_codes(str(tmp_path))
    row = {"label": 0, "label_name": "", "caption": "", "image_uri": "x"}
    path = tmp_path / "codes-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(index_builder.code_example("a", np.zeros(16), row))
        writer.write(index_builder.code_example("b", np.zeros(8), row))
    with pytest.raises(ValueError, match="16 values"):
        index_builder.read_codes(str(tmp_path))


def _write_shards(directory, database, ids, metadata, num_shards, seed):
    """Codes shards in a shuffled order, as bulk encoding writes them."""
    order = np.random.default_rng(seed).permutation(len(ids))
    for shard, part in enumerate(np.array_split(order, num_shards)):
        path = os.path.join(
            directory, f"codes-{shard:05d}-of-{num_shards:05d}.tfrecord"
        )
        with tf.io.TFRecordWriter(path) as writer:
            for i in part:
                row = {name: values[i] for name, values in metadata.items()}
                writer.write(
                    index_builder.code_example(ids[i], database[i], row)
                )


@pytest.mark.parametrize(
    "kinds, rerank, binary_method",
    [
        ("binary", False, "flat"),
        ("binary", True, "flat"),
        ("binary", False, "mih"),
        ("scann", False, "flat"),
    ],
)
def test_streamed_build_matches_whole_array_build(
    tmp_path, kinds, rerank, binary_method
):
    database, queries = _codes(100, seed=7), _codes(11, seed=8)
    ids = [f"db/{i:03d}" for i in range(100)]
    metadata = _metadata(ids)
    codes_dir = tmp_path / "codes"
    codes_dir.mkdir()
    _write_shards(str(codes_dir), database, ids, metadata, 3, seed=9)
    args = dict(
        kinds=kinds, rerank=rerank, binary_method=binary_method,
        scann_params={"brute_force": True},
    )
    # The reference: every code in memory, sorted by id.
    whole = index_builder.build_indexes(
        database, np.asarray(ids), str(tmp_path / "whole"),
        metadata=metadata, **args,
    )
    built = index_builder.build_indexes_from_shards(
        str(codes_dir), str(tmp_path / "streamed"), chunk_size=7, **args
    )
    assert (built.count, built.code_dim) == (100, CODE_BITS)
    expected = index_lib.load_index(whole[kinds])
    index = index_lib.load_index(built.directories[kinds])
    np.testing.assert_array_equal(index.ids, np.asarray(ids))
    for k in (1, 10, 100):
        want_ids, want = expected.search(queries, k)
        got_ids, got = index.search(queries, k)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got, want)
    assert index.metadata(ids) == expected.metadata(ids)
    assert index.metadata(["db/042"])[0] == {
        "label": 0, "label_name": "class_0", "caption": "a picture of db/042",
        "image_uri": "images/db/042.png",
    }


def test_streamed_build_without_metadata_and_duplicate_ids(tmp_path):
    database = _codes(20, seed=10)
    ids = [f"x{i:02d}" for i in range(20)]
    _write_shards(str(tmp_path), database, ids, _metadata(ids), 2, seed=1)
    built = index_builder.build_indexes_from_shards(
        str(tmp_path), str(tmp_path / "out"), kinds="binary", rerank=False,
        chunk_size=3, with_metadata=False,
    )
    index = index_lib.load_index(built.directories["binary"])
    assert index.metadata(["x03"]) == [{}]
    _, found = index.search(database, 1)
    np.testing.assert_array_equal(found[:, 0], 0)
    dup = tmp_path / "dup"
    dup.mkdir()
    _write_shards(str(dup), database[:2], ["a", "a"],
                  _metadata(["a", "a"]), 1, seed=2)
    with pytest.raises(ValueError, match="'a' more than once"):
        index_builder.build_indexes_from_shards(
            str(dup), str(tmp_path / "out2"), kinds="binary", rerank=False
        )


@pytest.mark.parametrize("kinds", ["binary", "scann"])
def test_build_from_and_to_ram_file_system(tmp_path, kinds):
    # TF's in-memory ram:// file system stands in for gs://.
    database, queries = _codes(40, seed=11), _codes(5, seed=12)
    ids = [f"r{i:02d}" for i in range(40)]
    root = f"ram://test_builder_{kinds}_{os.getpid()}"
    codes_dir = f"{root}/codes"
    tf.io.gfile.makedirs(codes_dir)
    _write_shards(codes_dir, database, ids, _metadata(ids), 2, seed=3)
    args = dict(kinds=kinds, rerank=True,
                scann_params={"brute_force": True})
    built = index_builder.build_indexes_from_shards(
        codes_dir, f"{root}/indexes", chunk_size=6, **args
    )
    assert built.directories == {kinds: f"{root}/indexes/{kinds}"}
    assert tf.io.gfile.exists(f"{root}/indexes/{kinds}/manifest.json")
    index = index_lib.load_index(built.directories[kinds])
    local = index_lib.load_index(
        index_builder.build_indexes(
            database, np.asarray(ids), str(tmp_path),
            metadata=_metadata(ids), **args,
        )[kinds]
    )
    want_ids, want = local.search(queries, 10)
    got_ids, got = index.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got, want)
    assert index.metadata(["r07"]) == local.metadata(["r07"])
    # A second save replaces the data folder; the manifest names it.
    index.save(built.directories[kinds])
    data = [
        name for name in tf.io.gfile.listdir(built.directories[kinds])
        if name.rstrip("/").startswith("data-")
    ]
    assert len(data) == 1
    assert len(index_lib.load_index(built.directories[kinds])) == 40
    tf.io.gfile.rmtree(root)

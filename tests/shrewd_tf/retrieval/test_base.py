"""Tests for shrewd_tf.retrieval.base: packing, ids, metadata, factory, validation."""

import numpy as np
import pytest

from shrewd_tf.retrieval import hamming_index
from shrewd_tf.retrieval import base as index_lib
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval import scann_index
from tests.support.indexes import (
    CODE_BITS,
    clustered_database_and_queries,
    hamming_reference,
)


@pytest.fixture(scope="module")
def clustered():
    return clustered_database_and_queries()


def test_pack_codes_bit_order_is_msb_first():
    codes = np.zeros((1, 16), np.float32)
    codes[0, [0, 9, 15]] = 0.9
    codes[0, 3] = 0.5  # 0.5 is not > 0.5: bit stays 0.
    packed = index_lib.pack_codes(codes)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[0b10000000, 0b01000001]])


def test_index_module_reexports_the_index_classes():
    assert index_lib.BinaryHammingIndex is hamming_index.BinaryHammingIndex
    assert index_lib.ScannIndex is scann_index.ScannIndex
    assert index_lib.IndexFormatError is index_files.IndexFormatError


def test_k_larger_than_index_is_padded():
    codes = np.eye(8, dtype=np.float32)[:3]
    index = index_lib.BinaryHammingIndex(8).build(codes)
    ids, distances = index.search(codes[:1], k=5)
    pad = index_lib.HAMMING_PAD
    assert ids.tolist() == [[0, 1, 2, -1, -1]]
    assert distances.tolist() == [[0, 2, 2, pad, pad]]
    rerank = index_lib.BinaryHammingIndex(8, rerank=True)
    rerank.build(codes, ids=[7, 8, 9])
    ids, distances = rerank.search(codes[:1], k=4)
    assert ids.tolist() == [[7, 8, 9, -1]] and np.isinf(distances[0, 3])


def test_string_ids_and_metadata_round_trip(tmp_path, clustered):
    database, queries = clustered
    names = np.array([f"img{i:05d}" for i in range(len(database))])
    index = index_lib.BinaryHammingIndex(CODE_BITS, "mih")
    index.build(database, ids=names)
    index.set_metadata(
        names[:3],
        label=np.array([4, 5, 6]),
        caption=["a cat", "a dog", "a car"],
        image_uri=["gs://b/0.png", "gs://b/1.png", "gs://b/2.png"],
    )
    index.set_metadata(names[:1], caption=["a black cat"])
    ids, distances = index.search(database[:2], k=3)
    assert ids[:, 0].tolist() == ["img00000", "img00001"]
    rows = np.char.lstrip(ids, "img").astype(int)
    reference = hamming_reference(database[:2], database)
    np.testing.assert_array_equal(
        np.take_along_axis(reference, rows, 1), distances
    )
    index.save(tmp_path / "index")
    loaded = index_lib.load_index(tmp_path / "index")
    assert loaded.metadata(["img00000", "img00002", "img00009", ""]) == [
        {"label": 4, "caption": "a black cat", "image_uri": "gs://b/0.png"},
        {"label": 6, "caption": "a car", "image_uri": "gs://b/2.png"},
        {},
        None,
    ]
    assert loaded.metadata(ids)[1][0]["caption"] == "a dog"
    with pytest.raises(KeyError, match="nope"):
        loaded.metadata(["nope"])
    for got, want in zip(loaded.search(queries, 7), index.search(queries, 7)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="img00001"):
        loaded.add(database[:1], ids=["img00001"])
    with pytest.raises(ValueError, match="ids=None"):
        loaded.add(database[:1])
    with pytest.raises(ValueError, match="Received: nan"):
        loaded.set_metadata(["img00003"], label=[float("nan")])
    with pytest.raises(ValueError, match="img99999"):
        loaded.set_metadata(["img99999"], label=[1])


def test_bad_inputs_raise_value_error_quoting_the_value(clustered):
    database, queries = clustered
    index = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
    with pytest.raises(ValueError, match=r"codes.shape=\(5000, 32\)"):
        index_lib.BinaryHammingIndex(CODE_BITS).build(database[:, :32])
    with pytest.raises(ValueError, match=r"queries.shape=\(60, 48\)"):
        index.search(queries[:, :48], 5)
    bad = queries.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"queries\[3, 7\]=nan"):
        index.search(bad, 5)
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"k={k}"):
            index.search(queries, k)
    with pytest.raises(ValueError, match="duplicates"):
        index_lib.BinaryHammingIndex(8).build(np.zeros((2, 8)), ids=[4, 4])
    with pytest.raises(ValueError, match="min\\(ids\\)=-1"):
        index_lib.BinaryHammingIndex(8).build(np.zeros((2, 8)), ids=[-1, 4])
    with pytest.raises(ValueError, match="build"):
        index_lib.BinaryHammingIndex(8).search(np.zeros((1, 8)), 1)
    with pytest.raises(ValueError, match="kind='annoy'"):
        index_lib.build_index("annoy", database)


def test_metadata_lookup_follows_added_ids_and_refuses_unknown_ones():
    codes = (np.random.default_rng(0).random((6, 16)) > 0.5)
    idx = index_lib.BinaryHammingIndex(16).build(codes[:4], ids=[10, 11, 12, 13])
    idx.set_metadata([11], label=[1])
    assert idx.metadata([11, 12]) == [{"label": 1}, {}]
    with pytest.raises(KeyError, match="14"):
        idx.metadata([14])
    idx.add(codes[4:], ids=[14, 15])
    idx.set_metadata([14], label=[4])
    assert idx.metadata([14, -1]) == [{"label": 4}, None]
    assert idx.code_width == 16

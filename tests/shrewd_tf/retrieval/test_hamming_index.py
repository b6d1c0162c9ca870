"""Tests for shrewd_tf.retrieval.hamming_index against NumPy references written here."""

import json

import faiss
import numpy as np
import pytest

from shrewd_tf.retrieval import hamming_index
from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import files as index_files
from tests.support.indexes import (
    CODE_BITS,
    clustered_codes,
    clustered_database_and_queries,
    exact_top_k,
    hamming_reference,
    random_codes,
    tie_aware_recall,
    xor_popcount_reference,
)


@pytest.fixture(scope="module")
def clustered():
    return clustered_database_and_queries()


# === Flat search ===


def test_flat_equals_numpy_hamming():
    rng = np.random.default_rng(2)
    database, queries = random_codes(rng, 3000), random_codes(rng, 40)
    index = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    ids, distances = index.search(queries, k=25)
    reference = hamming_reference(queries, database)
    assert index.is_exact
    assert distances.dtype == np.int32 and ids.dtype == np.int64
    np.testing.assert_array_equal(distances, exact_top_k(reference, 25))
    np.testing.assert_array_equal(
        np.take_along_axis(reference, ids, axis=1), distances
    )
    assert all(len(set(row)) == 25 for row in ids.tolist())
    packed_reference = xor_popcount_reference(
        np.packbits(queries > 0.5, axis=1), np.packbits(database > 0.5, axis=1)
    )
    np.testing.assert_array_equal(packed_reference, reference)


def test_binary_bits_and_float_codes_give_same_results(clustered):
    database, queries = clustered
    index = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    bits = hamming_index.BinaryHammingIndex(CODE_BITS).build(
        (database > 0.5).astype(np.uint8)
    )
    np.testing.assert_array_equal(
        index.search(queries, 10)[1], bits.search(queries > 0.5, 10)[1]
    )


# === Sub-linear methods ===


@pytest.mark.parametrize(
    "method, params",
    [
        ("mih", {"nflip": 1, "exact": False}),
        ("ivf", {"nlist": 64, "nprobe": 8}),
        ("hnsw", {"M": 16, "ef_search": 64}),
    ],
)
def test_sublinear_recall_on_clustered_codes(clustered, method, params):
    database, queries = clustered
    index = hamming_index.BinaryHammingIndex(CODE_BITS, method, **params)
    ids, distances = index.build(database).search(queries, k=20)
    reference = hamming_reference(queries, database)
    assert not index.is_exact
    found = ids >= 0
    np.testing.assert_array_equal(
        np.take_along_axis(reference, np.where(found, ids, 0), 1)[found],
        distances[found],
    )
    assert tie_aware_recall(distances, exact_top_k(reference, 20)) >= 0.95


@pytest.mark.parametrize("nhash, nflip", [(4, 1), (8, 0)])
def test_mih_exact_mode_equals_numpy(clustered, nhash, nflip):
    rng = np.random.default_rng(3)
    centres = rng.integers(0, 2, (20, CODE_BITS))
    wide_clusters = clustered_codes(rng, 3000, centres, flip=0.08)
    cases = (
        clustered,
        (wide_clusters[60:], wide_clusters[:60]),
        (random_codes(rng, 2000), random_codes(rng, 30)),
    )
    needed_fallback = False
    params = {"nhash": nhash, "nflip": nflip}
    for database, queries in cases:
        index = hamming_index.BinaryHammingIndex(CODE_BITS, "mih", **params)
        _, distances = index.build(database).search(queries, k=15)
        want = exact_top_k(hamming_reference(queries, database), 15)
        assert index.is_exact
        np.testing.assert_array_equal(distances, want)
        index.set_search_params(exact=False)
        needed_fallback |= np.any(index.search(queries, 15)[1] != want)
    assert needed_fallback


def test_mih_finds_everything_within_its_pigeonhole_radius(clustered):
    """4 tables x 1 flip: every code at distance <= 4 * 2 - 1 is found."""
    database, queries = clustered
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "mih", nhash=4, nflip=1, exact=False
    ).build(database)
    ids, distances = index.search(queries, k=30)
    reference = hamming_reference(queries, database)
    radius = 4 * 2 - 1
    for row, query_ids, query_distances in zip(reference, ids, distances):
        within = set(np.flatnonzero(row <= radius).tolist())
        returned = set(query_ids[query_distances <= radius].tolist())
        if len(within) <= 30:
            assert within == returned
        else:
            assert returned <= within and len(returned) == 30


def test_set_search_params_changes_recall_knob():
    rng = np.random.default_rng(6)
    database, queries = random_codes(rng, 3000), random_codes(rng, 30)
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=64, nprobe=1
    ).build(database)
    reference = exact_top_k(hamming_reference(queries, database), 20)
    low = tie_aware_recall(index.search(queries, 20)[1], reference)
    index.set_search_params(nprobe=64)
    full = tie_aware_recall(index.search(queries, 20)[1], reference)
    assert full == 1.0 and low < full
    with pytest.raises(ValueError, match="nlist"):
        index.set_search_params(nlist=8)


# === Re-ranking ===


def test_rerank_orders_hamming_candidates_by_float_l1(clustered):
    database, queries = clustered
    candidates = 50
    reranked = hamming_index.BinaryHammingIndex(
        CODE_BITS, rerank=True, rerank_candidates=candidates
    ).build(database)
    ids, distances = reranked.search(queries, k=10)
    plain = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    shortlist, _ = plain.search(queries, candidates)
    assert distances.dtype == np.float32 and not reranked.is_exact
    for query, row_ids, row_distances, row_shortlist in zip(
        queries, ids, distances, shortlist
    ):
        l1 = np.array(
            [
                np.abs(database[j].astype(np.float64) - query).sum()
                for j in row_shortlist
            ]
        )
        np.testing.assert_allclose(row_distances, np.sort(l1)[:10], rtol=1e-5)
        assert set(row_ids.tolist()) <= set(row_shortlist.tolist())
        own_l1 = np.abs(database[row_ids] - query).sum(axis=1)
        np.testing.assert_allclose(row_distances, own_l1, rtol=1e-5)


# === add ===


@pytest.mark.parametrize("method", ["flat", "mih", "hnsw"])
def test_add_after_build_equals_building_at_once(clustered, method):
    database, queries = clustered
    whole = hamming_index.BinaryHammingIndex(CODE_BITS, method).build(database)
    parts = hamming_index.BinaryHammingIndex(CODE_BITS, method)
    parts.build(database[:3000])
    parts.add(database[3000:])
    assert len(parts) == len(database)
    np.testing.assert_array_equal(parts.ids, np.arange(len(database)))
    reference = exact_top_k(hamming_reference(queries, database), 10)
    got = parts.search(queries, 10)[1]
    if parts.is_exact:
        np.testing.assert_array_equal(got, reference)
        np.testing.assert_array_equal(got, whole.search(queries, 10)[1])
    else:
        assert tie_aware_recall(got, reference) >= 0.95


# === Persistence ===


@pytest.mark.parametrize(
    "params",
    [
        {"method": "flat"},
        {"method": "mih", "nflip": 2},
        {"method": "ivf", "nlist": 32, "nprobe": 4},
        {"method": "hnsw", "M": 8, "ef_search": 32},
        {"method": "flat", "rerank": True, "rerank_candidates": 40},
    ],
)
def test_save_load_round_trip_gives_identical_results(
    tmp_path, clustered, params
):
    database, queries = clustered
    index = index_lib.build_index("binary_hamming", database, **params)
    index.save(tmp_path / "index")
    loaded = hamming_index.BinaryHammingIndex.load(tmp_path / "index")
    assert loaded.get_config() == index.get_config()
    assert loaded.is_exact == index.is_exact
    for got, want in zip(loaded.search(queries, 12), index.search(queries, 12)):
        np.testing.assert_array_equal(got, want)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["format_version"] == index_files.FORMAT_VERSION
    assert manifest["count"] == len(database) and manifest["code_bits"] == 64


# === Validation ===


def test_bad_hamming_inputs_raise_value_error_quoting_the_value(clustered):
    database, queries = clustered
    index = hamming_index.BinaryHammingIndex(CODE_BITS).build(database)
    bad = (queries > 0.5).astype(np.int64)
    bad[5, 1] = 3
    with pytest.raises(ValueError, match="max=3"):
        index.search(bad, 5)
    with pytest.raises(ValueError, match="code_bits=60"):
        hamming_index.BinaryHammingIndex(60)
    with pytest.raises(ValueError, match="method='lsh'"):
        hamming_index.BinaryHammingIndex(CODE_BITS, "lsh")
    with pytest.raises(ValueError, match="nprobe"):
        hamming_index.BinaryHammingIndex(CODE_BITS, "flat", nprobe=3)


def test_faiss_thread_count_is_restored(clustered):
    database, queries = clustered
    before = faiss.omp_get_max_threads()
    index = hamming_index.BinaryHammingIndex(CODE_BITS, num_threads=1)
    index.build(database).search(queries, 3)
    assert faiss.omp_get_max_threads() == before


def test_float_codes_outside_unit_range_binarise_at_half():
    codes = np.array([[-1.2, 0.49, 0.51, 1.7, 0.0, 1.0, 0.5, 2.0]], np.float32)
    index = hamming_index.BinaryHammingIndex(code_bits=8).build(codes)
    _, distances = index.search(
        np.array([[0, 0, 1, 1, 0, 1, 0, 1]], np.uint8), k=1)
    assert distances[0, 0] == 0
    with pytest.raises(ValueError, match="integer `codes` must be 0/1 bits"):
        hamming_index.BinaryHammingIndex(code_bits=8).build(
            np.full((1, 8), 2, np.int64))

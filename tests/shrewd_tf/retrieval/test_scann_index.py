"""Tests for shrewd_tf.retrieval.scann_index against NumPy references written here."""

import numpy as np
import pytest

from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import scann_index
from tests.support.indexes import (
    CODE_BITS,
    clustered_codes,
    clustered_database_and_queries,
    exact_top_k,
)


@pytest.fixture(scope="module")
def clustered():
    return clustered_database_and_queries()


def test_scann_brute_force_equals_numpy_exact(clustered):
    database, queries = clustered
    for distance in ("squared_l2", "dot_product"):
        index = scann_index.ScannIndex(distance, brute_force=True)
        index.build(database)
        ids, distances = index.search(queries, k=10)
        if distance == "squared_l2":
            diff = queries[:, None, :].astype(np.float64) - database
            reference = (diff**2).sum(axis=2)
        else:
            reference = -(queries.astype(np.float64) @ database.T)
        assert index.is_exact
        np.testing.assert_allclose(
            distances, exact_top_k(reference, 10), rtol=1e-4, atol=1e-3
        )
        np.testing.assert_allclose(
            np.take_along_axis(reference, ids, 1),
            distances,
            rtol=1e-4,
            atol=1e-3,
        )


def test_scann_tree_ah_recall_vs_brute_force():
    rng = np.random.default_rng(4)
    centres = rng.integers(0, 2, (100, CODE_BITS))
    database = clustered_codes(rng, 10000, centres)
    queries = clustered_codes(rng, 100, centres)
    brute = scann_index.ScannIndex(brute_force=True).build(database)
    exact_ids, _ = brute.search(queries, 10)
    index = scann_index.ScannIndex(num_leaves=100, num_leaves_to_search=10)
    ids, _ = index.build(database).search(queries, 10)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)]
    )
    assert not index.is_exact
    assert recall >= 0.9


def test_scann_add_pads_and_round_trips(tmp_path, clustered):
    database, queries = clustered
    index = scann_index.ScannIndex(brute_force=True)
    index.build(database[:3], ids=["a", "b", "c"])
    ids, distances = index.search(queries[:2], k=5)
    assert ids[:, 3:].tolist() == [["", ""], ["", ""]]
    assert np.all(np.isinf(distances[:, 3:]))
    index.add(database[3:6], ids=["d", "e", "f"])
    ids, distances = index.search(database[4:5], k=6)
    assert ids[0, 0] == "e" and distances[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert sorted(ids[0].tolist()) == ["a", "b", "c", "d", "e", "f"]
    index.save(tmp_path / "scann")
    loaded = index_lib.load_index(tmp_path / "scann")
    assert isinstance(loaded, scann_index.ScannIndex) and len(loaded) == 6
    for got, want in zip(loaded.search(queries, 4), index.search(queries, 4)):
        np.testing.assert_array_equal(got, want)


def test_bad_scann_inputs_raise_value_error_quoting_the_value():
    with pytest.raises(ValueError, match=r"codes\[0, 0\]=nan"):
        scann_index.ScannIndex(brute_force=True).build(np.full((4, 8), np.nan))
    with pytest.raises(ValueError, match="distance='cosine'"):
        scann_index.ScannIndex("cosine")


def test_too_few_codes_for_tree_ah_fall_back_to_exact_brute_force():
    rng = np.random.default_rng(0)
    database = rng.random((10, 16)).astype(np.float32)
    index = scann_index.ScannIndex().build(database)
    assert index.is_exact
    ids, distances = index.search(database[:2], 3)
    squared = ((database[:2, None, :] - database[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids, np.argsort(squared, axis=1)[:, :3])
    np.testing.assert_allclose(
        distances, np.sort(squared, axis=1)[:, :3], rtol=1e-5, atol=1e-6)

"""Tests for shrewd_tf.retrieval.recall: build-time recall of sub-linear
binary indexes, against NumPy references written here."""

import json

import numpy as np
import pytest

from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval import hamming_index
from shrewd_tf.retrieval import recall as recall_lib
from shrewd_tf.retrieval.arrays import HAMMING_PAD
from tests.support.indexes import CODE_BITS
from tests.support.indexes import clustered_codes
from tests.support.indexes import hamming_reference
from tests.support.indexes import random_codes
from tests.support.indexes import tie_aware_recall


@pytest.fixture(scope="module")
def codes():
    """3000 clustered codes around 30 centres (float, in [0, 1])."""
    rng = np.random.default_rng(7)
    centres = rng.integers(0, 2, (30, CODE_BITS))
    return clustered_codes(rng, 3000, centres, flip=0.08)


def _packed(codes):
    return np.packbits(codes > 0.5, axis=1)


def _reference_recall(index, codes, check, k):
    """recall@k, leave-one-out, of `index`'s current settings: numpy
    distances of the sampled rows to every code, the query's own 0
    removed from both sides, tie-aware overlap by a Python loop."""
    rows = recall_lib.sample_rows(len(codes), check.queries, check.seed)
    reference = hamming_reference(codes[rows], codes)
    exact = np.sort(reference, axis=1)[:, 1:k + 1]  # drop the self 0
    _, found = index.search(codes[rows], k + 1)
    assert np.all(found[:, 0] == 0)  # each query finds itself first
    return tie_aware_recall(found[:, 1:], exact)


# === Pieces ===


@pytest.mark.parametrize("chunk_rows", [7, 1000, 1 << 20])
def test_chunked_exact_distances_equal_numpy(codes, chunk_rows):
    queries = codes[::97]
    got = recall_lib.exact_distances(
        _packed(codes), _packed(queries), 12, chunk_rows=chunk_rows
    )
    reference = np.sort(hamming_reference(queries, codes), axis=1)[:, :12]
    np.testing.assert_array_equal(got, reference)
    assert got.dtype == np.int32
    # k beyond N: N columns.
    small = recall_lib.exact_distances(_packed(codes[:5]), _packed(queries), 9)
    assert small.shape == (len(queries), 5)


def test_hamming_recall_is_the_tie_aware_overlap():
    rng = np.random.default_rng(0)
    exact = np.sort(rng.integers(0, 6, (40, 10)), axis=1)
    found = np.sort(rng.integers(0, 6, (40, 10)), axis=1)
    assert recall_lib.hamming_recall(found, exact, 8) == pytest.approx(
        tie_aware_recall(found, exact)
    )
    assert recall_lib.hamming_recall(exact, exact, 8) == 1.0
    # Padding (missing neighbours) never matches.
    padded = exact.copy()
    padded[:, -3:] = HAMMING_PAD
    assert recall_lib.hamming_recall(padded, exact, 8) == pytest.approx(0.7)


def test_sample_rows_are_seeded_distinct_and_capped():
    rows = recall_lib.sample_rows(10_000_000, 1000, 3)
    assert len(np.unique(rows)) == 1000 and rows.max() < 10_000_000
    np.testing.assert_array_equal(rows, recall_lib.sample_rows(10**7, 1000, 3))
    np.testing.assert_array_equal(recall_lib.sample_rows(5, 1000, 0),
                                  np.arange(5))


def test_recall_check_rejects_bad_values():
    with pytest.raises(ValueError, match="queries=0"):
        recall_lib.RecallCheck(queries=0)
    with pytest.raises(ValueError, match="target=1.5"):
        recall_lib.RecallCheck(target=1.5)


# === Measured at build ===


def test_ivf_recall_equals_a_numpy_reference(codes):
    check = recall_lib.RecallCheck(queries=200, wide_k=50)
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=64, nprobe=2, recall_check=check
    ).build(codes)
    report = index.recall_report
    assert report.k == 10 and report.queries == 200 and report.count == 3000
    assert report.params == {"nprobe": 2} and len(report.tried) == 1
    assert report.leave_one_out
    assert report.recall == pytest.approx(
        _reference_recall(index, codes, check, 10)
    )
    assert report.recall_wide == pytest.approx(
        _reference_recall(index, codes, check, 50)
    )
    assert index.measured_recall == report.recall
    assert report.recall < 1.0  # nprobe=2 of 64 lists misses some


def test_nprobe_tuning_picks_the_smallest_passing_value(codes):
    check = recall_lib.RecallCheck(queries=200, target=0.999, wide_k=0)
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=64, recall_check=check
    ).build(codes)
    report = index.recall_report
    tried = [row["nprobe"] for row in report.tried]
    assert tried == [1, 2, 4, 8, 16, 32, 64][:len(tried)]
    assert len(tried) >= 2, "the set is too easy to test the tuning"
    chosen = index.params["nprobe"]
    assert chosen == tried[-1] == report.params["nprobe"]
    # Against the reference: every smaller nprobe misses the target, the
    # chosen one reaches it.
    for nprobe in tried:
        index.set_search_params(nprobe=nprobe)
        reference = _reference_recall(index, codes, check, 10)
        assert reference == pytest.approx(report.recall_for(
            {"nprobe": nprobe}))
        assert (reference >= 0.999) == (nprobe == chosen)
    index.set_search_params(nprobe=chosen)
    assert index.measured_recall == report.recall >= 0.999


def test_tuning_stops_at_nlist_and_keeps_the_best_when_none_passes():
    rng = np.random.default_rng(1)
    database = random_codes(rng, 2000)
    check = recall_lib.RecallCheck(queries=100, target=1.0, max_nprobe=4)
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=40, recall_check=check
    ).build(database)
    report = index.recall_report
    assert [row["nprobe"] for row in report.tried] == [1, 2, 4]
    assert not report.meets_target
    best = max(row["recall"] for row in report.tried)
    assert report.recall == best and index.measured_recall == best
    # The cap is nlist when smaller: nprobe = nlist scans everything.
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=3, recall_check=recall_lib.RecallCheck(
            queries=50, target=1.0)
    ).build(database)
    assert [row["nprobe"] for row in index.recall_report.tried] == [1, 2, 3]
    assert index.recall_report.recall == 1.0


@pytest.mark.parametrize(
    "method, params, measured",
    [
        ("flat", {}, False),
        ("mih", {"exact": True}, False),
        ("mih", {"exact": False, "nflip": 0}, True),
        ("hnsw", {"M": 8, "ef_search": 16}, True),
    ],
)
def test_only_sublinear_methods_are_measured(codes, method, params, measured):
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, method, recall_check=recall_lib.RecallCheck(queries=50),
        **params,
    ).build(codes)
    assert (index.recall_report is not None) == measured
    assert index.hamming_exact == (not measured)
    if measured:
        assert index.recall_report.params == index._search_settings()
        assert 0 < index.measured_recall <= 1


def test_streamed_build_measures_the_same_recall(codes):
    check = recall_lib.RecallCheck(queries=100)
    whole = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=32, recall_check=check
    ).build(codes)
    streamed = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=32, recall_check=check
    ).build_packed(_packed(codes), chunk_size=500)
    assert streamed.recall_report.recall == whole.recall_report.recall
    assert streamed.params == whole.params


def test_changed_settings_or_codes_drop_the_measured_recall(codes):
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=32, recall_check=recall_lib.RecallCheck(
            queries=50, target=0.999)
    ).build(codes[:2000])
    tried = {row["nprobe"]: row["recall"] for row in index.recall_report.tried}
    index.set_search_params(nprobe=1)
    assert index.measured_recall == tried[1]
    index.set_search_params(nprobe=5)  # never tried
    assert index.measured_recall is None
    index.add(codes[2000:2010])
    assert index.recall_report is None and index.measured_recall is None
    with pytest.raises(ValueError, match="nprobe=None"):
        index.set_search_params(nprobe=None)


# === Manifest ===


def test_recall_report_round_trips_through_the_manifest(codes, tmp_path):
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=32, recall_check=recall_lib.RecallCheck(
            queries=80)
    ).build(codes)
    index.save(str(tmp_path / "ivf"))
    manifest = json.loads((tmp_path / "ivf" / "manifest.json").read_text())
    saved = manifest["recall"]
    assert saved["k"] == 10 and saved["queries"] == 80
    assert saved["recall"] == index.recall_report.recall
    assert [row["nprobe"] for row in saved["tried"]] == [
        row["nprobe"] for row in index.recall_report.tried
    ]
    loaded = index_lib.load_index(str(tmp_path / "ivf"))
    assert loaded.recall_report == index.recall_report
    assert loaded.params == index.params
    assert loaded.measured_recall == index.measured_recall
    # Flat indexes write no recall.
    flat = hamming_index.BinaryHammingIndex(CODE_BITS).build(codes)
    flat.save(str(tmp_path / "flat"))
    manifest = json.loads((tmp_path / "flat" / "manifest.json").read_text())
    assert "recall" not in manifest


def _rewrite_manifest(directory, change):
    path = directory / index_files.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_old_manifests_without_recall_load(codes, tmp_path):
    index = hamming_index.BinaryHammingIndex(
        CODE_BITS, "ivf", nlist=32, nprobe=4,
        recall_check=recall_lib.RecallCheck(queries=50),
    ).build(codes)
    index.save(str(tmp_path / "ivf"))
    # A manifest from before this change: no recall, config nprobe=16.
    _rewrite_manifest(tmp_path / "ivf", lambda m: (
        m.pop("recall"), m["config"].update(nprobe=16)))
    loaded = index_lib.load_index(str(tmp_path / "ivf"))
    assert loaded.recall_report is None and loaded.measured_recall is None
    assert loaded.params["nprobe"] == 16
    _, distances = loaded.search(codes[:5], 3)
    assert distances[:, 0].tolist() == [0] * 5  # each finds itself
    _rewrite_manifest(tmp_path / "ivf", lambda m: m.update(recall={"k": 1}))
    with pytest.raises(index_files.IndexFormatError, match="recall"):
        index_lib.load_index(str(tmp_path / "ivf"))

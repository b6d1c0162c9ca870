"""Tests for shrewd_tf.index against NumPy references written here."""

import json
import os

import faiss
import numpy as np
import pytest

from shrewd_tf import index as index_lib

CODE_BITS = 64


# === Fixtures and references ===


def clustered_codes(rng, num, centres, flip=0.05):
    """Float codes in [0, 1] whose bits are centre bits flipped with p=flip."""
    bits = centres[rng.integers(0, len(centres), num)]
    bits = bits ^ (rng.random(bits.shape) < flip)
    noise = rng.uniform(0.0, 0.45, bits.shape)
    return np.where(bits == 1, 1.0 - noise, noise).astype(np.float32)


def random_codes(rng, num, code_bits=CODE_BITS):
    return rng.random((num, code_bits)).astype(np.float32)


def hamming_reference(queries, database):
    """Slow exact Hamming distances [Q, N] from unpacked bits."""
    q_bits = queries > 0.5
    db_bits = database > 0.5
    return (q_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)


def xor_popcount_reference(query_bytes, database_bytes):
    """Hamming distances [Q, N] from packed bytes by XOR + popcount."""
    xor = query_bytes[:, None, :] ^ database_bytes[None, :, :]
    return np.unpackbits(xor, axis=2).sum(axis=2)


def tie_aware_recall(found, exact):
    """Mean multiset overlap of per-row distance values, over k."""
    overlap = 0
    for found_row, exact_row in zip(found, exact):
        values, counts = np.unique(found_row, return_counts=True)
        found_counts = dict(zip(values.tolist(), counts.tolist()))
        values, counts = np.unique(exact_row, return_counts=True)
        overlap += sum(
            min(count, found_counts.get(value, 0))
            for value, count in zip(values.tolist(), counts)
        )
    return overlap / found.size


def exact_top_k(distances, k):
    return np.sort(distances, axis=1)[:, :k]


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (40, CODE_BITS))
    database = clustered_codes(rng, 5000, centres)
    return database, clustered_codes(rng, 60, centres)


# === Packing and flat search ===


def test_pack_codes_bit_order_is_msb_first():
    codes = np.zeros((1, 16), np.float32)
    codes[0, [0, 9, 15]] = 0.9
    codes[0, 3] = 0.5  # 0.5 is not > 0.5: bit stays 0.
    packed = index_lib.pack_codes(codes)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[0b10000000, 0b01000001]])


def test_flat_equals_numpy_hamming():
    rng = np.random.default_rng(2)
    database, queries = random_codes(rng, 3000), random_codes(rng, 40)
    index = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
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
    index = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
    bits = index_lib.BinaryHammingIndex(CODE_BITS).build(
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
    index = index_lib.BinaryHammingIndex(CODE_BITS, method, **params)
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
        index = index_lib.BinaryHammingIndex(CODE_BITS, "mih", **params)
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
    index = index_lib.BinaryHammingIndex(
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
    index = index_lib.BinaryHammingIndex(
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
    reranked = index_lib.BinaryHammingIndex(
        CODE_BITS, rerank=True, rerank_candidates=candidates
    ).build(database)
    ids, distances = reranked.search(queries, k=10)
    plain = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
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


# === ScaNN ===


def test_scann_brute_force_equals_numpy_exact(clustered):
    database, queries = clustered
    for distance in ("squared_l2", "dot_product"):
        index = index_lib.ScannIndex(distance, brute_force=True).build(database)
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
    brute = index_lib.ScannIndex(brute_force=True).build(database)
    exact_ids, _ = brute.search(queries, 10)
    index = index_lib.ScannIndex(num_leaves=100, num_leaves_to_search=10)
    ids, _ = index.build(database).search(queries, 10)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)]
    )
    assert not index.is_exact
    assert recall >= 0.9


def test_scann_add_pads_and_round_trips(tmp_path, clustered):
    database, queries = clustered
    index = index_lib.ScannIndex(brute_force=True)
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
    assert isinstance(loaded, index_lib.ScannIndex) and len(loaded) == 6
    for got, want in zip(loaded.search(queries, 4), index.search(queries, 4)):
        np.testing.assert_array_equal(got, want)


# === add, padding, ids, metadata ===


@pytest.mark.parametrize("method", ["flat", "mih", "hnsw"])
def test_add_after_build_equals_building_at_once(clustered, method):
    database, queries = clustered
    whole = index_lib.BinaryHammingIndex(CODE_BITS, method).build(database)
    parts = index_lib.BinaryHammingIndex(CODE_BITS, method)
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
    loaded = index_lib.BinaryHammingIndex.load(tmp_path / "index")
    assert loaded.get_config() == index.get_config()
    assert loaded.is_exact == index.is_exact
    for got, want in zip(loaded.search(queries, 12), index.search(queries, 12)):
        np.testing.assert_array_equal(got, want)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["format_version"] == index_lib.FORMAT_VERSION
    assert manifest["count"] == len(database) and manifest["code_bits"] == 64


def saved_flat_index(tmp_path, clustered):
    database, _ = clustered
    index = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    return tmp_path / "index" / manifest["data_dir"], manifest


def test_load_refuses_truncated_file(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    path = data_dir / "faiss.index"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        index_lib.IndexFormatError, match="faiss.index.*truncated"
    ):
        index_lib.load_index(tmp_path / "index")


def test_load_refuses_missing_file(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    (data_dir / "metadata.jsonl").unlink()
    with pytest.raises(
        index_lib.IndexFormatError, match="metadata.jsonl is missing"
    ):
        index_lib.load_index(tmp_path / "index")


def test_load_refuses_wrong_checksum(tmp_path, clustered):
    data_dir, _ = saved_flat_index(tmp_path, clustered)
    path = data_dir / "ids.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(index_lib.IndexFormatError, match="ids.npy.*sha256"):
        index_lib.BinaryHammingIndex.load(tmp_path / "index")


def test_load_refuses_other_format_version_and_type(tmp_path, clustered):
    _, manifest = saved_flat_index(tmp_path, clustered)
    path = tmp_path / "index" / "manifest.json"
    path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(
        index_lib.IndexFormatError, match="manifest.json.*format_version=99"
    ):
        index_lib.load_index(tmp_path / "index")
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        index_lib.IndexFormatError, match="manifest.json.*'binary_hamming'"
    ):
        index_lib.ScannIndex.load(tmp_path / "index")
    with pytest.raises(index_lib.IndexFormatError, match="missing"):
        index_lib.load_index(tmp_path / "nothing_here")


def data_dirs(path):
    return len([n for n in os.listdir(path) if n.startswith("data-")])


def test_failed_save_keeps_previous_index(tmp_path, clustered, monkeypatch):
    database, queries = clustered
    old = index_lib.BinaryHammingIndex(CODE_BITS).build(database)
    old.save(tmp_path / "index")
    want = old.search(queries, 5)

    def failing_write(engine, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index_binary", failing_write)
    new = index_lib.BinaryHammingIndex(CODE_BITS).build(database[:100])
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


# === Validation ===


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
    with pytest.raises(ValueError, match=r"codes\[0, 0\]=nan"):
        index_lib.ScannIndex(brute_force=True).build(np.full((4, 8), np.nan))
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"k={k}"):
            index.search(queries, k)
    bad = queries.copy()
    bad[5, 1] = 3.0
    with pytest.raises(ValueError, match="max=3.0"):
        index.search(bad, 5)
    with pytest.raises(ValueError, match="code_bits=60"):
        index_lib.BinaryHammingIndex(60)
    with pytest.raises(ValueError, match="method='lsh'"):
        index_lib.BinaryHammingIndex(CODE_BITS, "lsh")
    with pytest.raises(ValueError, match="nprobe"):
        index_lib.BinaryHammingIndex(CODE_BITS, "flat", nprobe=3)
    with pytest.raises(ValueError, match="duplicates"):
        index_lib.BinaryHammingIndex(8).build(np.zeros((2, 8)), ids=[4, 4])
    with pytest.raises(ValueError, match="min\\(ids\\)=-1"):
        index_lib.BinaryHammingIndex(8).build(np.zeros((2, 8)), ids=[-1, 4])
    with pytest.raises(ValueError, match="build"):
        index_lib.BinaryHammingIndex(8).search(np.zeros((1, 8)), 1)
    with pytest.raises(ValueError, match="kind='annoy'"):
        index_lib.build_index("annoy", database)
    with pytest.raises(ValueError, match="distance='cosine'"):
        index_lib.ScannIndex("cosine")


def test_faiss_thread_count_is_restored(clustered):
    database, queries = clustered
    before = faiss.omp_get_max_threads()
    index = index_lib.BinaryHammingIndex(CODE_BITS, num_threads=1)
    index.build(database).search(queries, 3)
    assert faiss.omp_get_max_threads() == before

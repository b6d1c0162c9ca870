"""Tests for shrewd_tf.retrieval.base: packing, ids, metadata, registry,
factories, validation (through the package, which re-exports base)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from shrewd_tf import contract
from shrewd_tf import retrieval as index_lib
from shrewd_tf.retrieval import base
from shrewd_tf.retrieval import registry
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval import hamming_index
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


def test_package_exports_the_registered_index_classes():
    assert index_lib.BinaryHammingIndex is hamming_index.BinaryHammingIndex
    assert index_lib.ScannIndex is scann_index.ScannIndex
    assert index_lib.IndexFormatError is index_files.IndexFormatError
    assert index_lib.load_index is registry.load_index
    for kind in contract.INDEX_KIND_TABLE:
        cls = getattr(index_lib, kind.class_name)
        assert registry.index_class(kind.name) is cls
        assert registry.index_class(kind.index_type) is cls
        assert (cls.kind, cls.index_type) == (kind.name, kind.index_type)
    assert not hasattr(base, "BinaryHammingIndex")  # no import-cycle patch


def test_load_index_imports_the_index_module_on_first_use(tmp_path):
    """A fresh process that imports only the registry still loads the
    index."""
    index_lib.BinaryHammingIndex(8).build(np.eye(8)).save(tmp_path)
    script = (
        "import sys\n"
        "from shrewd_tf.retrieval import registry\n"
        "assert 'shrewd_tf.retrieval.hamming_index' not in sys.modules\n"
        "print(type(registry.load_index(sys.argv[1])).__name__)\n"
    )
    name = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert name == "BinaryHammingIndex"


def test_build_index_takes_kinds_and_manifest_names():
    codes = np.eye(8, dtype=np.float32)
    for name in ("binary", "binary_hamming"):
        index = index_lib.build_index(name, codes)
        assert isinstance(index, index_lib.BinaryHammingIndex)
        assert index.code_bits == 8
    assert isinstance(
        index_lib.build_index("scann", codes, brute_force=True),
        index_lib.ScannIndex,
    )


def test_register_index_refuses_unknown_and_taken_kinds():
    class Annoy(base.RetrievalIndex):
        kind = "annoy"

    with pytest.raises(ValueError, match="kind='annoy'"):
        registry.register_index(Annoy)

    class OtherBinary(base.RetrievalIndex):
        kind = contract.BINARY_INDEX

    with pytest.raises(ValueError, match="already registered"):
        registry.register_index(OtherBinary)

    class ManifestSpelling(base.RetrievalIndex):
        kind = "binary_hamming"

    with pytest.raises(ValueError, match="not a manifest name"):
        registry.register_index(ManifestSpelling)
    assert registry.index_class("binary") is hamming_index.BinaryHammingIndex


def test_manifests_keep_the_format_1_index_type_names(tmp_path):
    """Saved indexes stay readable by every format-1 reader."""
    codes = np.eye(8, dtype=np.float32)
    index_lib.BinaryHammingIndex(8).build(codes).save(tmp_path / "b")
    index_lib.ScannIndex(brute_force=True).build(codes).save(tmp_path / "s")
    types = [
        json.loads((tmp_path / d / index_files.MANIFEST_FILE).read_text())[
            "index_type"
        ]
        for d in ("b", "s")
    ]
    assert types == ["binary_hamming", "scann"]


def test_load_index_refuses_an_unknown_manifest_kind(tmp_path):
    index_lib.BinaryHammingIndex(8).build(np.eye(8)).save(tmp_path)
    path = tmp_path / index_files.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["index_type"] = "annoy"
    path.write_text(json.dumps(manifest))
    with pytest.raises(index_files.IndexFormatError, match="'annoy'"):
        index_lib.load_index(tmp_path)


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

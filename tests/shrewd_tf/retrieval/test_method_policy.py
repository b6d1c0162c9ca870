"""Tests for shrewd_tf.retrieval.method_policy: the "auto" binary method."""

import json
import logging

import numpy as np
import pytest

from shrewd_tf.retrieval import builder as index_builder
from shrewd_tf.retrieval import method_policy
from shrewd_tf.retrieval.recall import RecallCheck
from tests.support.indexes import CODE_BITS
from tests.support.indexes import clustered_codes
from tests.support.indexes import random_codes


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 2, (20, CODE_BITS))
    return clustered_codes(rng, 3000, centres, flip=0.04)


def _packed(codes):
    return np.packbits(codes > 0.5, axis=1)


@pytest.fixture
def small_threshold(monkeypatch):
    """"auto" chooses ivf above 1,000 codes (instead of 1M)."""
    monkeypatch.setattr(method_policy, "AUTO_FLAT_MAX_CODES", 1000)


def test_auto_nlist_is_two_sqrt_n_capped():
    assert method_policy.auto_nlist(10_000) == 200
    assert method_policy.auto_nlist(10_000_000) == 1024
    assert method_policy.auto_nlist(1) == 1


def test_auto_is_flat_up_to_the_threshold(clustered):
    index = method_policy.build_binary_index(
        CODE_BITS, "auto", _packed(clustered)
    )
    assert len(clustered) <= method_policy.AUTO_FLAT_MAX_CODES
    assert index.method == "flat" and index.is_exact
    assert index.recall_report is None


def test_auto_serves_ivf_when_its_recall_reaches_the_target(
    clustered, small_threshold
):
    check = RecallCheck(queries=200)
    index = method_policy.build_binary_index(
        CODE_BITS, "auto", _packed(clustered), recall_check=check
    )
    assert index.method == "ivf" and not index.is_exact
    assert index.params["nlist"] == method_policy.auto_nlist(len(clustered))
    report = index.recall_report
    assert report.meets_target and index.measured_recall >= 0.99
    # The smallest passing nprobe: every one tried before it missed.
    assert all(row["recall"] < 0.99 for row in report.tried[:-1])
    assert report.params == {"nprobe": index.params["nprobe"]}


def test_auto_falls_back_to_flat_when_ivf_misses(small_threshold, caplog):
    database = random_codes(np.random.default_rng(2), 3000)
    with caplog.at_level(logging.WARNING, logger=method_policy.__name__):
        index = method_policy.build_binary_index(
            CODE_BITS, "auto", _packed(database),
            recall_check=RecallCheck(queries=100, max_nprobe=2),
        )
    assert index.method == "flat" and index.is_exact
    assert "serving the exact flat index instead" in caplog.text
    assert len(index) == 3000


def test_explicit_methods_are_built_as_asked(clustered, small_threshold):
    packed = _packed(clustered)
    ivf = method_policy.build_binary_index(
        CODE_BITS, "ivf", packed, nlist=16, nprobe=3,
        recall_check=RecallCheck(queries=50),
    )
    assert ivf.method == "ivf" and ivf.params == {"nlist": 16, "nprobe": 3}
    assert [row["nprobe"] for row in ivf.recall_report.tried] == [3]
    flat = method_policy.build_binary_index(CODE_BITS, "flat", packed)
    assert flat.method == "flat"


def test_auto_rejects_parameters_of_other_methods():
    with pytest.raises(ValueError, match="'auto'.*\\['nhash'\\]"):
        method_policy.new_binary_index(CODE_BITS, "auto", nhash=4)
    with pytest.raises(ValueError, match="binary_method='annoy'"):
        method_policy.new_binary_index(CODE_BITS, "annoy")
    with pytest.raises(ValueError, match="nprobe"):
        method_policy.new_binary_index(CODE_BITS, "auto", nprobe=0)


def test_builders_use_the_policy_and_save_the_recall(
    clustered, small_threshold, tmp_path
):
    ids = np.arange(len(clustered))
    directories = index_builder.build_indexes(
        clustered, ids, str(tmp_path), kinds="binary", rerank=False,
        binary_params={"recall_check": RecallCheck(queries=100)},
    )
    manifest = json.loads(
        (tmp_path / "binary" / "manifest.json").read_text()
    )
    assert manifest["config"]["method"] == "ivf"
    assert manifest["recall"]["recall"] >= 0.99
    assert manifest["recall"]["queries"] == 100
    assert directories == {"binary": str(tmp_path / "binary")}

"""Tests for shrewd_tf.retrieval.metadata: id membership and rows."""

import numpy as np
import pytest

from shrewd_tf.retrieval.metadata import SortedIds
from shrewd_tf.retrieval.metadata import metadata_rows


@pytest.mark.parametrize(
    "ids",
    [
        np.arange(0, 200, 3),  # sorted: kept as is
        np.random.default_rng(0).permutation(np.arange(0, 200, 3)),
        np.array(["b7", "a1", "zz", "c", "a10"]),
    ],
)
def test_sorted_ids_membership_equals_a_python_set(ids):
    known = set(ids.tolist())
    if ids.dtype.kind == "U":
        keys = np.array(["a1", "a", "zz", "zzz", "c", "", "b7 "])
    else:
        keys = np.arange(-5, 210)
    got = SortedIds(ids).contains(keys)
    assert got.tolist() == [key in known for key in keys.tolist()]


def test_sorted_ids_keep_a_sorted_array_without_copying():
    ids = np.arange(10, dtype=np.int64)
    assert SortedIds(ids).ids is ids
    assert SortedIds(ids[::-1]).ids.tolist() == list(range(10))


def test_sorted_ids_refuse_keys_of_the_other_id_type():
    assert not SortedIds(np.arange(5)).contains(np.array(["3"])).any()
    assert not SortedIds(np.array(["3"])).contains(np.array([3])).any()
    assert not SortedIds(np.arange(0)).contains(np.array([0])).any()


def test_metadata_rows_pad_unknown_and_2d():
    ids = np.array([5, 2, 9])
    table = {2: {"label": 1}}
    known = SortedIds(ids)
    assert metadata_rows(table, [2, -1, 9], known, -1) == [
        {"label": 1}, None, {}
    ]
    assert metadata_rows(table, np.array([[2], [5]]), known, -1) == [
        [{"label": 1}], [{}]
    ]
    with pytest.raises(KeyError, match="id 3 "):
        metadata_rows(table, [2, 3], known, -1)

"""Tests for shrewd_tf.ops.validation: the one positive-int validator."""

import numpy as np
import pytest

from shrewd_tf.ops.validation import check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_ints_come_back_as_python_ints(value):
    checked = check_positive_int("k", value)
    assert checked == value and type(checked) is int


@pytest.mark.parametrize("value", [0, -2, 2.0, 8.5, True, "3", None])
def test_other_values_raise_quoting_the_value(value):
    with pytest.raises(ValueError, match=f"Received: k={value!r}"):
        check_positive_int("k", value)


def test_none_passes_only_when_allowed():
    assert check_positive_int("nlist", None, allow_none=True) is None
    assert check_positive_int("nlist", 4, allow_none=True) == 4

"""Codes, ids and results of the retrieval indexes as NumPy arrays.

The checks of codes, ids and k (each raises ValueError quoting the value
received; sizes use `shrewd_tf.ops.validation.check_positive_int`),
packing codes for faiss and padding short results. The conventions they
enforce are in the `shrewd_tf.retrieval.base` docstring.
"""

import numpy as np

from shrewd_tf.ops.bits import pack_bits
from shrewd_tf.ops.validation import check_positive_int

# What pads missing neighbours in search results: the id (int or string
# ids) and the Hamming distance (int32 max, as faiss does).
INT_ID_PAD = -1
STR_ID_PAD = ""
HAMMING_PAD = int(np.iinfo(np.int32).max)


def check_k(k):
    """Returns the number of neighbours `k` as an int >= 1."""
    return check_positive_int("k", k)


def as_codes(codes, name, width=None, unit_range=False):
    """Returns `codes` as a finite 2-D numeric array or raises ValueError."""
    array = np.asarray(codes)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"`{name}` must be numeric or boolean. "
            f"Received: {name}.dtype={array.dtype}"
        )
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array [num_codes, code_bits]. "
            f"Received: {name}.shape={array.shape}"
        )
    if width is not None and array.shape[1] != width:
        raise ValueError(
            f"`{name}` must have {width} columns. "
            f"Received: {name}.shape={array.shape}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"`{name}` must be finite. Received: {name}[{bad[0]}, {bad[1]}]="
            f"{array[bad[0], bad[1]]}"
        )
    # Float codes of any value binarise at 0.5 (a trained code head is
    # linear and may overshoot [0, 1]); integer arrays must be 0/1 bits.
    if unit_range and array.size and array.dtype.kind in "iu":
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise ValueError(
                f"integer `{name}` must be 0/1 bits. "
                f"Received: {name} with min={low}, max={high}"
            )
    return array


def _duplicates(array):
    """The ids found more than once in `array` (sorted ids: no sort copy)."""
    if len(array) < 2:
        return array[:0]
    if np.all(array[1:] >= array[:-1]):
        return np.unique(array[1:][array[1:] == array[:-1]])
    unique, counts = np.unique(array, return_counts=True)
    return unique[counts > 1]


def as_ids(ids, count, start, existing, copy=True):
    """Returns new ids as int64 or str [count], checked against `existing`.

    `copy=False` returns `ids` itself when it is int64 or str already.
    """
    if ids is None:
        if existing is not None and existing.dtype.kind == "U":
            raise ValueError(
                "`ids` are required: this index holds string ids. "
                "Received: ids=None"
            )
        return np.arange(start, start + count, dtype=np.int64)
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"`ids` must be 1-D with one id per code ({count}). "
            f"Received: ids.shape={array.shape}"
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.int64, copy=copy)
        if count and array.min() < 0:
            raise ValueError(
                "Integer `ids` must be >= 0 (-1 pads missing neighbours). "
                f"Received: min(ids)={array.min()}"
            )
    elif array.dtype.kind == "U" or (
        array.dtype.kind == "O" and all(isinstance(x, str) for x in array)
    ):
        array = array.astype(str, copy=copy)
        if count and np.any(array == STR_ID_PAD):
            raise ValueError(
                'String `ids` must be non-empty ("" pads missing '
                f"neighbours). Received: ids={array[array == ''][:3]!r}"
            )
    else:
        raise ValueError(
            "`ids` must be integers or strings. "
            f"Received: ids.dtype={array.dtype}"
        )
    if existing is not None and len(existing) and (
        (existing.dtype.kind == "U") != (array.dtype.kind == "U")
    ):
        raise ValueError(
            f"`ids` must match the index's id type ({existing.dtype}). "
            f"Received: ids.dtype={array.dtype}"
        )
    duplicates = _duplicates(array)
    if len(duplicates):
        raise ValueError(
            "`ids` must be unique. "
            f"Received duplicates: {duplicates[:5]!r}"
        )
    if existing is not None and len(existing):
        clash = np.isin(array, existing)
        if np.any(clash):
            raise ValueError(
                "`ids` already in the index. "
                f"Received: ids={array[clash][:5]!r}"
            )
    return array


def pack_codes(codes):
    """Binarises codes at 0.5 and packs them MSB-first, as faiss expects.

    `shrewd_tf.ops.bits.pack_bits` with the checks of an index's codes.

    Args:
        codes: finite float codes (bit = code > 0.5) or 0/1 bits,
            [N, code_bits] with code_bits a multiple of 8.

    Returns:
        uint8 [N, code_bits // 8]: bit j (`codes[:, j] > 0.5`) is bit
        7 - j % 8 of byte j // 8 (`np.packbits` order).

    Raises:
        ValueError: if codes are not 2-D, not finite, integers other than
            0/1, or their width is not a multiple of 8.
    """
    array = as_codes(codes, "codes", unit_range=True)
    if array.shape[1] % 8:
        raise ValueError(
            "`codes` width must be a multiple of 8. "
            f"Received: codes.shape={array.shape}"
        )
    return pack_bits(array)


def pad_columns(rows, distances, k, pad_distance):
    """Pads [Q, k'] results to [Q, k] with id row -1 and `pad_distance`."""
    missing = k - rows.shape[1]
    if missing <= 0:
        return rows, distances
    rows = np.pad(rows, ((0, 0), (0, missing)), constant_values=-1)
    distances = np.pad(
        distances, ((0, 0), (0, missing)), constant_values=pad_distance
    )
    return rows, distances

"""Binary codes: binarise at 0.5 and pack MSB-first, the one convention.

Bit j of a code is `code[..., j] > BIT_THRESHOLD` (0.5 itself is 0). Packed
codes hold bit j in byte j // 8 at position 7 - j % 8 (`np.packbits`
order, what faiss binary indexes read and the exported SavedModel's
`bits` output returns); a width that is not a multiple of 8 is padded
with 0 bits at the end of the last byte.

NumPy only: the exported graph packs with TensorFlow ops of its own,
checked against `pack_bits` by the export tests.

Example:
    >>> pack_bits(np.array([[0.9, 0.1, 0.5, 0.7, 0, 0, 0, 1]]))
    array([[145]], dtype=uint8)  # 0b10010001
"""

import numpy as np

from shrewd_tf.contract import BIT_THRESHOLD


def binarise(codes):
    """Returns the bits of `codes` as a bool array (code > 0.5).

    Args:
        codes: float codes of any shape, or 0/1 (bool, int) bits.
    """
    return np.asarray(codes) > BIT_THRESHOLD


def pack_bits(codes):
    """Binarises `codes` and packs the last axis MSB-first.

    Args:
        codes: [..., d] float codes, or 0/1 (bool, int) bits.

    Returns:
        uint8 [..., ceil(d / 8)]: bit j is bit 7 - j % 8 of byte j // 8.
    """
    return np.packbits(binarise(codes), axis=-1)


def unpack_bits(packed, code_bits=None):
    """Inverse of `pack_bits` on binary codes: uint8 0/1 [..., code_bits].

    Args:
        packed: uint8 [..., num_bytes].
        code_bits: bits to keep (default 8 * num_bytes).
    """
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=-1, count=code_bits)

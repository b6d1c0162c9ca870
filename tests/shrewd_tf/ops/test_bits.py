"""Tests for shrewd_tf.ops.bits: the one binarise-and-pack convention."""

import numpy as np

from shrewd_tf.ops import bits


def test_bit_j_is_bit_7_minus_j_mod_8_of_byte_j_div_8():
    codes = np.zeros((1, 16), np.float32)
    codes[0, [0, 9, 15]] = 0.9
    codes[0, 3] = 0.5  # 0.5 is not > 0.5: the bit stays 0.
    packed = bits.pack_bits(codes)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[0b10000000, 0b01000001]])


def test_float_bool_and_int_codes_pack_alike_and_unpack_back():
    rng = np.random.default_rng(0)
    codes = rng.normal(0.5, 1.0, size=(5, 24))  # overshoots [0, 1]
    as_bool = codes > 0.5
    packed = bits.pack_bits(codes)
    np.testing.assert_array_equal(packed, bits.pack_bits(as_bool))
    np.testing.assert_array_equal(packed, bits.pack_bits(as_bool.astype(int)))
    np.testing.assert_array_equal(bits.unpack_bits(packed), as_bool)


def test_widths_off_a_byte_are_padded_with_zero_bits():
    codes = np.ones((2, 10))
    packed = bits.pack_bits(codes)
    np.testing.assert_array_equal(packed, [[255, 0b11000000]] * 2)
    np.testing.assert_array_equal(bits.unpack_bits(packed, 10), codes)
    assert bits.pack_bits(np.ones((3, 4, 8))).shape == (3, 4, 1)

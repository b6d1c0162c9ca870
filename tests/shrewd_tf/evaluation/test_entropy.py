"""Tests for shrewd_tf.evaluation.entropy: analytic values, exact
enumeration of uniform codes, clusters and an error-correcting code."""

import itertools
import math

import numpy as np
import pytest
from scipy import special

from shrewd_tf.evaluation import entropy


def test_binary_entropy_analytic_values():
    log_ball_3 = 1.5 * math.log(math.pi) - special.gammaln(2.5)  # log V_3
    # All 8 corners of {0,1}^3 (noisy around the 0.5 threshold): every
    # nearest neighbour is at distance 1, so H = psi(8) - psi(1) + log V_3.
    corners = np.array(list(itertools.product([0, 1], repeat=3)), float)
    noisy = np.where(corners > 0, 0.5 + 1e-3, 0.5)  # 0.5 itself -> 0
    expected = special.digamma(8) - special.digamma(1) + log_ball_3
    assert entropy.binary_entropy(noisy) == pytest.approx(expected, abs=1e-12)
    # Every code duplicated: distances 0 are floored at 0.5.
    doubled = np.repeat(corners, 2, axis=0)
    expected = (
        special.digamma(16) - special.digamma(1) + log_ball_3
        + 3 * math.log(0.5)
    )
    estimate = entropy.binary_entropy(doubled)
    assert estimate == pytest.approx(expected, abs=1e-12)


def ref_uniform_mean_log2_hamming(n, d, k):
    """E[log2 max(rho_k, 1/2)] by enumerating every draw of the n - 1 other
    codes (the query fixed at 0 by symmetry of the cube)."""
    cube = list(itertools.product([0, 1], repeat=d))
    total, count = 0.0, 0
    for others in itertools.product(cube, repeat=n - 1):
        distances = sorted(sum(code) for code in others)
        total += math.log2(max(distances[k - 1], 0.5))
        count += 1
    return total / count


@pytest.mark.parametrize("n, d, k", [(2, 3, 1), (4, 3, 1), (4, 3, 2), (3, 4, 2)])
def test_uniform_mean_log2_hamming_matches_enumeration(n, d, k):
    assert entropy.uniform_mean_log2_hamming(n, d, k) == pytest.approx(
        ref_uniform_mean_log2_hamming(n, d, k), abs=1e-12
    )


def test_binary_entropy_bits_of_uniform_codes_is_log2_n():
    rng = np.random.default_rng(0)
    for n, d in ((1000, 64), (2048, 16)):
        codes = rng.random((n, d))  # binarised: i.i.d. uniform bits
        assert entropy.binary_entropy_bits(codes) == pytest.approx(
            math.log2(n), abs=0.05
        )
    assert entropy.binary_entropy_bits(
        rng.random((2000, 64)), k=3
    ) == pytest.approx(math.log2(2000), abs=0.05)


def test_binary_entropy_bits_of_clusters_and_of_an_error_correcting_code():
    rng = np.random.default_rng(1)
    # 1024 codes in 8 clusters (each bit of the centre flipped w.p. 1/64):
    # neighbours at Hamming ~1 instead of ~19 for uniform codes.
    centres = rng.random((8, 64)) > 0.5
    flips = rng.random((1024, 64)) < 1 / 64
    clustered = (centres[rng.integers(0, 8, 1024)] ^ flips).astype(float)
    assert entropy.binary_entropy_bits(clustered) < math.log2(1024) - 3
    # All codes identical: every rho is 0 -> 1/2, so H = log2 N - 1 - E_U.
    same = np.ones((1024, 64))
    assert entropy.binary_entropy_bits(same) == pytest.approx(
        10 - 1 - entropy.uniform_mean_log2_hamming(1024, 64), abs=1e-12
    )
    # The first-order Reed-Muller code RM(1, 6): the 64 rows of a Sylvester
    # Hadamard matrix and their complements, 128 codewords of 64 bits at
    # Hamming distance >= 32 from each other (every nearest neighbour at
    # exactly 32). Uniform codes of that N are nearer (about 21): H > 7.
    hadamard = np.array([[1]])
    for _ in range(6):
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    reed_muller = np.concatenate([hadamard > 0, hadamard < 0]).astype(float)
    expected = 7 + 5 - entropy.uniform_mean_log2_hamming(128, 64)
    assert entropy.binary_entropy_bits(reed_muller) == pytest.approx(
        expected, abs=1e-12
    )
    assert expected > 7.4


def test_binary_entropy_bits_validation():
    with pytest.raises(ValueError, match="more than k=2"):
        entropy.binary_entropy_bits(np.zeros((2, 4)), k=2)
    with pytest.raises(ValueError, match="num_codes=1"):
        entropy.uniform_mean_log2_hamming(1, 4)

"""Entropy of binarised codes: how evenly codes spread over {0, 1}^d.

* `binary_entropy_bits`: the paper's "binary entropy" (Tables 3 and 4), in
  bits, calibrated exactly so that N uniformly drawn codes score log2 N
  (`uniform_mean_log2_hamming` gives the uniform codes' expectation).
* `binary_entropy`: the Kozachenko-Leonenko estimate on the binarised codes,
  in nats (not on the paper's scale).

Codes are binarised at 0.5 (code > 0.5 -> 1). A duplicated code counts as
distance 1/2, half the lattice spacing of {0, 1}^d, instead of giving
log 0. The kNN distances come from `shrewd_tf.ops.estimators`.
"""

import numpy as np
from scipy import stats

from shrewd_tf.evaluation.ranking import _codes
from shrewd_tf.ops.bits import binarise
from shrewd_tf.ops.validation import check_positive_int

__all__ = [
    "binary_entropy",
    "binary_entropy_bits",
    "uniform_mean_log2_hamming",
]


def binary_entropy(codes, k=1):
    """Kozachenko-Leonenko entropy (nats) of the binarised codes.

    Not on the paper's scale (see `binary_entropy_bits` for that): the
    continuous estimator's factor d makes collapsed codes strongly negative.

    Codes are binarised at 0.5 (code > 0.5 -> 1.0, else 0.0) and passed to
    `estimators.knn_entropy` with min_distance=0.5: half the {0, 1}^d
    lattice spacing, so duplicated codes count as a cell of radius 1/2
    instead of giving log 0.

    Args:
        codes: float [n, d], n > k.
        k: neighbour rank.

    Returns:
        float, nats.
    """
    from shrewd_tf.ops import estimators  # pylint: disable=import-outside-toplevel

    bits = binarise(_codes(codes, "codes")).astype(np.float64)
    return estimators.knn_entropy(bits, k=k, min_distance=0.5)


def _log2_floored(hamming):
    """log2 of Hamming distances, 0 (duplicates) floored at 1/2."""
    return np.log2(np.maximum(np.asarray(hamming, np.float64), 0.5))


def uniform_mean_log2_hamming(num_codes, bits, k=1):
    """E[log2 max(rho_k, 1/2)] for `num_codes` i.i.d. uniform codes.

    rho_k is the Hamming distance from one code to its k-th nearest other
    code. For uniform codes in {0, 1}^bits the distances from x_i to the
    n - 1 others are i.i.d. Binomial(bits, 1/2) (independent given x_i,
    whatever x_i is), so with F(r) = P(Binomial(bits, 1/2) <= r):
    P(rho_k > r) = P(Binomial(n - 1, F(r)) < k), and the expectation is
    g(0) + sum_{r=1..bits} (g(r) - g(r - 1)) P(rho_k > r - 1) exactly, with
    g(r) = log2 max(r, 1/2). Duplicates (which uniform codes have when n is
    not much smaller than 2^bits) are included.

    Args:
        num_codes: n > k.
        bits: d >= 1.
        k: neighbour rank >= 1.

    Returns:
        float, bits.
    """
    n, d, k = (check_positive_int(name, v) for v, name in
               ((num_codes, "num_codes"), (bits, "bits"), (k, "k")))
    if n <= k:
        raise ValueError(
            f"Need more than k={k} codes. Received: num_codes={n}"
        )
    radii = np.arange(d + 1)
    within = stats.binom.cdf(radii, d, 0.5)  # F(r)
    beyond = stats.binom.cdf(k - 1, n - 1, within)  # P(rho_k > r)
    steps = np.diff(_log2_floored(radii))  # g(r) - g(r - 1), r = 1..d
    return float(_log2_floored(0) + np.sum(steps * beyond[:-1]))


def binary_entropy_bits(codes, k=1):
    """Entropy of the binarised codes in bits, on the paper's scale.

    The paper (Tables 3 and 4) reports a Kozachenko-Leonenko "binary
    entropy" on which N uniformly drawn codes score log2 N (19.93 for
    10^6 codes), codes spread more evenly than uniform draws score more,
    and clustered classifier codes less (about 16.4). This is such a
    measure, calibrated exactly:

        H = log2 N + mean_i log2 max(rho_i, 1/2) - E_U[log2 max(rho, 1/2)]

    rho_i: Hamming distance from binarised code i (code > 0.5) to its k-th
    nearest other code; E_U: the same mean for N i.i.d. uniform codes in
    {0, 1}^d, computed exactly (`uniform_mean_log2_hamming`).

    Derivation. The Kozachenko-Leonenko estimate is
    psi(N) - psi(k) + log V_d + d mean_i log rho_i: only the mean log
    distance to the k-th neighbour depends on the codes. Taking the
    difference to its expected value for uniform codes cancels psi(N),
    psi(k) and the ball volume; adding log2 N puts uniform codes at
    log2 N. The factor d of the continuous estimator is replaced by 1, as
    in the entropy term of eq. 4 (-mean_b log nu(z_b; z), which has no d):
    codes on {0, 1}^d are not a d-dimensional continuous density (the
    estimator's local uniformity fails on a lattice), and with factor d the
    value swings by hundreds of bits between collapsed and spread codes
    (the nats estimate `binary_entropy`). Distances are Hamming (the
    squared Euclidean distance of 0/1 vectors), the metric of retrieval.

    Assumptions and reading:
    * E[H] = log2 N exactly for uniform codes, any N and d (duplicates
      included); its sampling error is a few hundredths of a bit for
      N >= 1000.
    * H > log2 N: neighbours farther apart than uniform draws, e.g. an
      error-correcting code (the paper's "spread more evenly").
    * H < log2 N: neighbours closer than uniform, e.g. codes in clusters;
      all codes identical give log2 N - 1 - E_U (a duplicate counts as
      distance 1/2, half the lattice spacing, as in `binary_entropy`).
    * It is not the Shannon entropy of the code distribution (d bits for
      uniform codes); it compares nearest-neighbour spacing with uniform
      codes of the same N and d, so compare values at equal N.

    Args:
        codes: float [N, d], N > k (binarised at 0.5).
        k: neighbour rank.

    Returns:
        float, bits.
    """
    from shrewd_tf.ops import estimators  # pylint: disable=import-outside-toplevel

    bits = binarise(_codes(codes, "codes")).astype(np.float64)
    n, d = bits.shape
    k = check_positive_int("k", k)
    if n <= k:
        raise ValueError(
            f"binary_entropy_bits needs more than k={k} codes. "
            f"Received: codes.shape={bits.shape}"
        )
    euclidean = estimators.knn_distances(bits, bits, k=k, exclude_self=True)
    hamming = np.rint(np.square(euclidean[:, k - 1]))
    return float(
        np.log2(n)
        + np.mean(_log2_floored(hamming))
        - uniform_mean_log2_hamming(n, d, k)
    )

"""Tests for the kNN entropy and KL estimators against analytic values and a
slow Python-loop reference."""

import math

import numpy as np
import pytest
from scipy import special

from shrewd_tf.ops import estimators


# === Independent references ===


def loop_kth_distance(query_index, x, points, k, exclude_self):
    distances = []
    for j, point in enumerate(points):
        if exclude_self and j == query_index:
            continue
        distances.append(
            math.sqrt(sum((a - b) ** 2 for a, b in zip(x, point)))
        )
    return sorted(distances)[k - 1]


def loop_entropy(x, k, min_distance):
    n, d = len(x), len(x[0])
    log_volume = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1)
    total = 0.0
    for i in range(n):
        rho = loop_kth_distance(i, x[i], x, k, exclude_self=True)
        total += math.log(max(rho, min_distance))
    return (
        special.digamma(n)
        - special.digamma(k)
        + log_volume
        + d * total / n
    )


def loop_kl(x, y, k, min_distance):
    n, d, m = len(x), len(x[0]), len(y)
    total = 0.0
    for i in range(n):
        rho = loop_kth_distance(i, x[i], x, k, exclude_self=True)
        nu = loop_kth_distance(i, x[i], y, k, exclude_self=False)
        total += math.log(max(nu, min_distance)) - math.log(
            max(rho, min_distance)
        )
    return d * total / n + math.log(m / (n - 1))


def gaussian_entropy(cov):
    d = cov.shape[0]
    return 0.5 * math.log((2 * math.pi * math.e) ** d * np.linalg.det(cov))


def gaussian_kl(mean_p, cov_p, mean_q, cov_q):
    d = cov_p.shape[0]
    inv_q = np.linalg.inv(cov_q)
    delta = mean_q - mean_p
    return 0.5 * (
        np.trace(inv_q @ cov_p)
        + delta @ inv_q @ delta
        - d
        + math.log(np.linalg.det(cov_q) / np.linalg.det(cov_p))
    )


def random_covariance(rng, d, scale=1.0):
    """A random rotation of a diagonal with eigenvalues in scale*[0.5, 2]."""
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eigenvalues = scale * rng.uniform(0.5, 2.0, size=d)
    return rotation @ np.diag(eigenvalues) @ rotation.T


# === knn_distances ===


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_knn_distances_match_brute_force(exclude_self, chunk_size):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(11, 3))
    queries = points if exclude_self else rng.normal(size=(8, 3))
    got = estimators.knn_distances(
        queries, points, k=3, exclude_self=exclude_self, chunk_size=chunk_size
    )
    for i, query in enumerate(queries):
        for rank in (1, 2, 3):
            expected = loop_kth_distance(i, query, points, rank, exclude_self)
            assert got[i, rank - 1] == pytest.approx(expected, abs=1e-12)


def test_knn_distances_exact_for_duplicates_far_from_centre():
    # Two clusters at +-1e6: the Gram expansion alone has an error of order
    # 1e12 * 1e-16 in squared distances here; the exact re-ranking has none.
    offsets = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    points = np.concatenate([offsets + 1e6, offsets - 1e6])
    nearest = estimators.knn_distances(points, points, k=1, exclude_self=True)
    np.testing.assert_array_equal(
        nearest[:, 0], [0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0]
    )
    got = estimators.knn_distances(points, points, k=2, exclude_self=True)
    assert got[0, 0] == 0.0 and got[3, 0] == 0.0
    assert got[4, 0] == 0.0 and got[7, 0] == 0.0
    assert got[0, 1] == 1.0
    assert got[1, 0] == 1.0
    assert got[2, 0] == 2.0


# === Slow-loop reference ===


@pytest.mark.parametrize("k", [1, 2, 3])
def test_entropy_matches_loop_reference(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(7, 3))
    expected = loop_entropy(x.tolist(), k, 1e-10)
    assert estimators.knn_entropy(x, k=k) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kl_matches_loop_reference(k):
    rng = np.random.default_rng(10 + k)
    x = rng.normal(size=(7, 2))
    y = rng.normal(loc=0.5, size=(5, 2))
    expected = loop_kl(x.tolist(), y.tolist(), k, 1e-10)
    got = estimators.knn_kl_divergence(x, y, k=k)
    assert got == pytest.approx(expected, abs=1e-10)


# === Analytic values ===


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_entropy_of_gaussian(d):
    # Over 40 seeds at n = 4000 the k=1 error was within 0.012 +- 0.033
    # for d = 1..4; the tolerance is about 5 std.
    rng = np.random.default_rng(100 + d)
    cov = random_covariance(rng, d)
    x = rng.multivariate_normal(np.zeros(d), cov, size=4000)
    got = estimators.knn_entropy(x, k=1)
    assert got == pytest.approx(gaussian_entropy(cov), abs=0.15)


def test_entropy_with_larger_k_is_also_consistent():
    rng = np.random.default_rng(7)
    cov = random_covariance(rng, 3)
    x = rng.multivariate_normal(np.zeros(3), cov, size=4000)
    got = estimators.knn_entropy(x, k=4)
    assert got == pytest.approx(gaussian_entropy(cov), abs=0.08)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_entropy_of_uniform_cube_is_zero(d):
    # Boundary bias grows with d: 0.05 +- 0.03 at d = 3 over 10 seeds.
    rng = np.random.default_rng(200 + d)
    x = rng.random(size=(4000, d))
    assert estimators.knn_entropy(x, k=1) == pytest.approx(0.0, abs=0.15)


@pytest.mark.parametrize("d, tolerance", [(1, 0.15), (2, 0.15), (4, 0.4)])
def test_kl_between_gaussians(d, tolerance):
    # q is wider than p so that log q is well sampled in p's tails. Over 12
    # seeds at n = m = 4000 the error was -0.03 +- 0.03 for d <= 3 and
    # -0.04 +- 0.09 at d = 4 (true KL 0.1 to 0.7).
    rng = np.random.default_rng(300 + d)
    cov_p = random_covariance(rng, d)
    cov_q = random_covariance(rng, d, scale=1.5)
    mean_q = rng.normal(scale=0.5, size=d)
    x = rng.multivariate_normal(np.zeros(d), cov_p, size=4000)
    y = rng.multivariate_normal(mean_q, cov_q, size=4000)
    expected = gaussian_kl(np.zeros(d), cov_p, mean_q, cov_q)
    got = estimators.knn_kl_divergence(x, y, k=1)
    assert got == pytest.approx(expected, abs=tolerance)


def test_kl_of_identical_distributions_is_near_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, 3))
    y = rng.normal(size=(3000, 3))
    assert estimators.knn_kl_divergence(x, y) == pytest.approx(0.0, abs=0.1)


# === Duplicates and the min_distance floor ===


def test_duplicates_give_finite_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    x = np.concatenate([x, x[:10]])
    assert np.isfinite(estimators.knn_entropy(x))
    assert np.isfinite(estimators.knn_kl_divergence(x, x[::-1]))


def test_binary_codes_with_half_lattice_floor():
    # Every code of {0,1}^3 appears twice, so every rho_1 = 0, floored at
    # 0.5: H = psi(n) - psi(1) + log V_3 + 3 log(1/2), V_3 = 4 pi / 3.
    lattice = np.array(
        [[(i >> b) & 1 for b in range(3)] for i in range(8)], dtype=float
    )
    codes = np.concatenate([lattice, lattice])
    n = 16
    expected = (
        special.digamma(n)
        - special.digamma(1)
        + math.log(4 * math.pi / 3)
        + 3 * math.log(0.5)
    )
    got = estimators.knn_entropy(codes, k=1, min_distance=0.5)
    assert got == pytest.approx(expected, abs=1e-12)
    # Unique lattice points: rho_1 = 1 (one bit apart), above the floor.
    got = estimators.knn_entropy(lattice, k=1, min_distance=0.5)
    expected = (
        special.digamma(8) - special.digamma(1) + math.log(4 * math.pi / 3)
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_unit_ball_volume():
    assert math.exp(estimators.unit_ball_log_volume(1)) == pytest.approx(2.0)
    assert math.exp(estimators.unit_ball_log_volume(2)) == pytest.approx(
        math.pi
    )
    assert math.exp(estimators.unit_ball_log_volume(3)) == pytest.approx(
        4 * math.pi / 3
    )


# === Validation ===


def test_rejects_non_2d_input():
    with pytest.raises(ValueError, match=r"x.shape=\(10,\)"):
        estimators.knn_entropy(np.zeros(10))


def test_rejects_too_few_samples():
    with pytest.raises(ValueError, match=r"k=3.*x.shape=\(3, 2\)"):
        estimators.knn_entropy(np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match=r"y.shape=\(1, 2\)"):
        estimators.knn_kl_divergence(np.zeros((5, 2)), np.zeros((1, 2)), k=2)


def test_rejects_mismatched_dims():
    with pytest.raises(ValueError, match=r"y.shape=\(5, 3\)"):
        estimators.knn_kl_divergence(np.zeros((5, 2)), np.zeros((5, 3)))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_rejects_bad_k(k):
    with pytest.raises(ValueError, match="Received: k="):
        estimators.knn_entropy(np.zeros((5, 2)), k=k)


def test_rejects_bad_min_distance_and_non_finite():
    with pytest.raises(ValueError, match="min_distance=-1"):
        estimators.knn_entropy(np.zeros((5, 2)), min_distance=-1.0)
    x = np.zeros((5, 2))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        estimators.knn_entropy(x)

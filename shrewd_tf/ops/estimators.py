"""k-nearest-neighbour entropy and KL divergence estimators (NumPy, float64).

These are the evaluation-side counterparts of the training losses in
`shrewd_tf.losses`: they keep every constant of the estimators, so their
values are in nats and comparable across sample sizes and dimensions.

* `knn_entropy`: Kozachenko-Leonenko differential entropy estimate.
* `knn_kl_divergence`: Wang-Kulkarni-Verdu (2006) KL divergence estimate.
* `knn_distances`: exact Euclidean k-NN distances, chunked over queries so
  that n = 60,000 points in d = 64 dimensions fit in a few hundred MiB.

Zero distances and the `min_distance` floor: both estimators take the log of
nearest-neighbour distances, which is -inf for duplicated points. Samples of
a continuous density have no duplicates, but binary hash codes have many
(every code lies on the lattice {0, 1}^d). Distances below `min_distance`
are therefore raised to `min_distance` before the log. The default (1e-10)
only guards against exact duplicates in continuous data; for binary codes
use `min_distance=0.5`, half the lattice spacing of {0, 1}^d, which treats
a duplicated code as if it occupied a cell of radius 1/2 around its lattice
point (the value `shrewd_tf.evaluation.entropy` uses for the binary entropy).

Reference:
    L. F. Kozachenko, N. N. Leonenko. Sample estimate of the entropy of a
    random vector. Problems Inform. Transmission 23 (1987).
    Q. Wang, S. R. Kulkarni, S. Verdu. A nearest-neighbor approach to
    estimating divergence between continuous random vectors. ISIT 2006.
"""

import math

import numpy as np
from scipy import special

# Bytes of float64 scratch per query chunk ([chunk, n] distance block, plus
# about as much again for the selection); 64 MiB keeps n = 60k at ~140 rows.
_CHUNK_BYTES = 64 * 2**20


def _as_samples(x, name):
    """Returns `x` as a finite float64 [n, d] array or raises ValueError."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array [num_samples, dim]. "
            f"Received: {name}.shape={array.shape}"
        )
    if array.shape[1] < 1:
        raise ValueError(
            f"`{name}` must have at least one dimension. "
            f"Received: {name}.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite. Received: {name}={x!r}")
    return array


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
    return int(k)


def _check_min_distance(min_distance):
    if not (min_distance >= 0.0 and math.isfinite(min_distance)):
        raise ValueError(
            "`min_distance` must be a finite number >= 0. "
            f"Received: min_distance={min_distance!r}"
        )
    return float(min_distance)


def knn_distances(queries, points, k=1, exclude_self=False, chunk_size=None):
    """Euclidean distances from each query to its k nearest points.

    Candidates are found with the Gram expansion |q|^2 + |p|^2 - 2 q.p on
    mean-centred float64 data (one BLAS matmul per chunk), then the distances
    to the selected candidates are recomputed exactly as |q - p|, so exact
    duplicates give exactly 0 and small distances keep full precision. (Among
    points whose squared distances differ by less than the expansion's
    rounding, ~1e-16 |x|^2, the selection may pick either.)

    Args:
        queries: float array [n, d].
        points: float array [m, d].
        k: number of neighbours, >= 1.
        exclude_self: if True, `queries` and `points` must be the same set
            (row i of both is the same sample) and row i's own point is not
            counted as its neighbour. Other rows that duplicate it are.
        chunk_size: queries per chunk; default keeps the [chunk, m] float64
            block near 64 MiB. Peak memory is O(chunk_size * m).

    Returns:
        float64 array [n, k]: distances to the 1st..k-th nearest neighbour,
        ascending.

    Raises:
        ValueError: on non-2-D or non-finite inputs, mismatched dims, fewer
            than k candidate points, or `exclude_self` with n != m.
    """
    k = _check_k(k)
    queries = _as_samples(queries, "queries")
    points = _as_samples(points, "points")
    n, d = queries.shape
    m = points.shape[0]
    if points.shape[1] != d:
        raise ValueError(
            "`queries` and `points` must have the same dimension. "
            f"Received: queries.shape={queries.shape}, "
            f"points.shape={points.shape}"
        )
    if exclude_self and n != m:
        raise ValueError(
            "`exclude_self=True` needs queries and points to be the same "
            f"set. Received: queries.shape={queries.shape}, "
            f"points.shape={points.shape}"
        )
    candidates = m - 1 if exclude_self else m
    if candidates < k:
        raise ValueError(
            f"Need at least k={k} candidate points per query. Received: "
            f"{m} points (exclude_self={exclude_self})."
        )
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (8 * m))
    elif int(chunk_size) < 1:
        raise ValueError(
            f"`chunk_size` must be >= 1. Received: chunk_size={chunk_size}"
        )
    chunk_size = int(chunk_size)

    # Centring reduces cancellation in the Gram expansion. For k > 1 a few
    # spare candidates make the exact re-ranking robust to near ties; for
    # k = 1 a plain argmin is 5x cheaper than a partition, and it can only
    # pick a wrong neighbour among points within ~1e-7 relative distance.
    # Augmented rows [-2q, 1, |q|^2] . [p, |p|^2, 1] give |q - p|^2 in one
    # matmul, without extra passes over the [chunk, m] block.
    centre = points.mean(axis=0)
    centred_points = points - centre
    augmented_points = np.concatenate(
        [
            centred_points,
            np.einsum("ij,ij->i", centred_points, centred_points)[:, None],
            np.ones((m, 1)),
        ],
        axis=1,
    )
    num_candidates = 1 if k == 1 else min(candidates, k + 4)
    out = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        block = queries[start:stop] - centre
        augmented_block = np.concatenate(
            [
                -2.0 * block,
                np.ones((stop - start, 1)),
                np.einsum("ij,ij->i", block, block)[:, None],
            ],
            axis=1,
        )
        sq = augmented_block @ augmented_points.T  # [c, m]
        rows = np.arange(stop - start)
        if exclude_self:
            sq[rows, rows + start] = np.inf
        if num_candidates == 1:
            index = np.argmin(sq, axis=1)[:, None]
        else:
            index = np.argpartition(sq, num_candidates - 1, axis=1)
            index = index[:, :num_candidates]
        diff = queries[start:stop, None, :] - points[index]
        exact = np.sqrt(np.einsum("ick,ick->ic", diff, diff))
        exact.sort(axis=1)
        out[start:stop] = exact[:, :k]
    return out


def unit_ball_log_volume(d):
    """log of the volume of the unit Euclidean ball in d dimensions.

    Args:
        d: dimension, >= 1.

    Returns:
        float: log(pi^(d/2) / Gamma(d/2 + 1)).
    """
    return 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1.0)


def knn_entropy(x, k=1, min_distance=1e-10):
    """Kozachenko-Leonenko estimate of differential entropy, in nats.

    H = psi(n) - psi(k) + log V_d + (d / n) sum_i log rho_k(i), where rho_k(i)
    is the Euclidean distance of x_i to its k-th nearest neighbour among the
    other samples and V_d = pi^(d/2) / Gamma(d/2 + 1) is the unit-ball volume.

    Distances below `min_distance` are raised to it before the log (see the
    module docstring): duplicated samples would otherwise give -inf. For
    binary codes in {0, 1}^d pass `min_distance=0.5`, half the lattice
    spacing.

    Args:
        x: float array [n, d], samples of the density; n > k.
        k: neighbour rank, >= 1.
        min_distance: floor for rho_k, >= 0 (0 disables it).

    Returns:
        float: entropy estimate in nats (may be -inf if min_distance=0 and
        a sample has k duplicates).

    Raises:
        ValueError: if x is not a finite 2-D array, n <= k, or k or
            min_distance are invalid.
    """
    k = _check_k(k)
    min_distance = _check_min_distance(min_distance)
    x = _as_samples(x, "x")
    n, d = x.shape
    if n <= k:
        raise ValueError(
            f"knn_entropy needs more than k={k} samples. "
            f"Received: x.shape={x.shape}"
        )
    rho = knn_distances(x, x, k=k, exclude_self=True)[:, k - 1]
    rho = np.maximum(rho, min_distance)
    with np.errstate(divide="ignore"):
        mean_log_rho = np.mean(np.log(rho))
    return float(
        special.digamma(n)
        - special.digamma(k)
        + unit_ball_log_volume(d)
        + d * mean_log_rho
    )


def knn_kl_divergence(x, y, k=1, min_distance=1e-10):
    """Wang-Kulkarni-Verdu kNN estimate of KL(p || q), in nats.

    D = (d / n) sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1)), where
    nu_k(i) is the distance from x_i to its k-th nearest neighbour in y and
    rho_k(i) the distance to its k-th nearest neighbour in x without x_i.
    Both distances are floored at `min_distance` before the log.

    `shrewd_tf.ops.empirical_kl.empirical_kl_loss` is
    mean_i log(nu_k(i) / rho_k(i)): this estimate without the factor d and
    the constant log(m / (n - 1)).

    Args:
        x: float array [n, d], samples of p; n > k.
        y: float array [m, d], samples of q; m >= k.
        k: neighbour rank, >= 1.
        min_distance: floor for nu_k and rho_k, >= 0.

    Returns:
        float: divergence estimate in nats (can be negative by estimation
        error).

    Raises:
        ValueError: on non-finite or non-2-D inputs, mismatched d, n <= k,
            m < k, or invalid k / min_distance.
    """
    k = _check_k(k)
    min_distance = _check_min_distance(min_distance)
    x = _as_samples(x, "x")
    y = _as_samples(y, "y")
    n, d = x.shape
    m = y.shape[0]
    if y.shape[1] != d:
        raise ValueError(
            "`x` and `y` must have the same dimension. "
            f"Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    if n <= k:
        raise ValueError(
            f"knn_kl_divergence needs more than k={k} samples in x. "
            f"Received: x.shape={x.shape}"
        )
    if m < k:
        raise ValueError(
            f"knn_kl_divergence needs at least k={k} samples in y. "
            f"Received: y.shape={y.shape}"
        )
    rho = knn_distances(x, x, k=k, exclude_self=True)[:, k - 1]
    nu = knn_distances(x, y, k=k)[:, k - 1]
    rho = np.maximum(rho, min_distance)
    nu = np.maximum(nu, min_distance)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log_ratio = np.mean(np.log(nu) - np.log(rho))
    return float(d * mean_log_ratio + math.log(m / (n - 1)))

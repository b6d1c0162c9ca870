"""Retrieval metrics: mAHP@k, mAP@k, the hP@k curve, Kendall's tau, flat
hit@K and code statistics (NumPy, chunked over queries). The binary entropy
of the codes is in `shrewd_tf.evaluation.entropy`.

Ranking. Queries [Q, d] are ranked against a database [N, d]: float codes by
Manhattan (L1) distance computed in float32 (faiss), binary codes
(`binary=True`: code > 0.5) by Hamming distance. Items at exactly the same
distance form a tie group; `ties` says how a tie group is ordered:

* `"aware"` (default): the exact expectation of the metric over uniformly
  random orders within every tie group. Hamming ranking makes huge tie
  groups (a whole shell of the cube), whose order alone moves mAHP@250 by
  about +-10 points at 16 bits, so any fixed order is arbitrary.
* `"random"`: one uniformly random order per query and tie group, drawn
  from `seed` (reproducible for the same seed and input shapes).
* `"index"`: ties kept in database order (stable sort by db index).

A tie group may straddle rank k; the whole group (every database item at
that distance, not only those among the first k found) enters the
expectation. Peak memory is O(chunk * N) with chunk * N ~ 4M entries. The
distance blocks and the tie-group expectations are in `shrewd_tf.evaluation.ranking`.

Reference:
    J. Deng, A. C. Berg, L. Fei-Fei. Hierarchical semantic indexing for
    large scale image retrieval. CVPR 2011.
    B. Barz, J. Denzler. Hierarchy-based image embeddings for semantic image
    retrieval. WACV 2019 (github.com/cvjena/semantic-embeddings).
    K. He, F. Cakir, S. A. Bargal, S. Sclaroff. Hashing as tie-aware
    learning to rank. CVPR 2018.
"""

import numpy as np
from scipy import stats

from shrewd_tf.evaluation.ranking import TIE_MODES
from shrewd_tf.evaluation.ranking import _check_ties
from shrewd_tf.evaluation.ranking import _codes
from shrewd_tf.evaluation.ranking import _expected_average_precision
from shrewd_tf.evaluation.ranking import _expected_cumulative_weight
from shrewd_tf.evaluation.ranking import _labels
from shrewd_tf.evaluation.ranking import _query_and_db_labels
from shrewd_tf.evaluation.ranking import _ranked_groups
from shrewd_tf.evaluation.ranking import _Retrieval
from shrewd_tf.ops.bits import binarise
from shrewd_tf.ops.bits import pack_bits
from shrewd_tf.ops.validation import check_positive_int

__all__ = [
    "TIE_MODES",
    "code_statistics",
    "flat_hit_at_k",
    "hierarchical_precision_curve",
    "kendall_tau",
    "labels_ranked_by_retrieval",
    "mean_average_hierarchical_precision",
    "mean_average_precision",
]


# === Hierarchical precision ===


def _class_similarity(class_similarity):
    sim = np.asarray(class_similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 1:
        raise ValueError(
            "`class_similarity` must be a square [C, C] matrix. "
            f"Received: class_similarity.shape={sim.shape}"
        )
    if not np.all(np.isfinite(sim)) or sim.min() < 0:
        raise ValueError(
            "`class_similarity` must be finite and >= 0 (from class "
            "distances use semantics.class_similarity: max(0, 1 - d)). "
            f"Received: min={np.nanmin(sim)}"
        )
    return sim


def _ideal_cumulative_similarity(sim, db_labels, labels, k, exclude_self):
    """Best achievable cumulative similarity at ranks 1..k per class, [C, k]
    (rows only for `labels`): the db similarities sorted descending."""
    counts = np.bincount(db_labels, minlength=sim.shape[0])
    ideal = np.zeros((sim.shape[0], k))
    ranks = np.arange(1, k + 1)
    for label in np.unique(labels):
        label_counts = counts.copy()
        label_counts[label] -= int(exclude_self)  # the query's own item
        order = np.argsort(-sim[label], kind="stable")
        ends = np.cumsum(label_counts[order])
        at_rank = order[np.searchsorted(ends, ranks)]  # class at rank i
        ideal[label] = np.cumsum(sim[label, at_rank])
    return ideal


def _hierarchical_precision_blocks(
    query_codes, query_labels, db_codes, db_labels, class_similarity, k,
    binary, ties, exclude_self, seed,
):
    """Yields E[HP@1..k] per query chunk, [B, k]."""
    _check_ties(ties)
    sim = _class_similarity(class_similarity)
    retrieval = _Retrieval(query_codes, db_codes, binary, exclude_self)
    k = retrieval.check_k(k)
    query_labels, db_labels = _query_and_db_labels(
        retrieval, query_labels, db_labels, sim.shape[0]
    )
    ideal = _ideal_cumulative_similarity(
        sim, db_labels, query_labels, k, exclude_self
    )
    rng = np.random.default_rng(seed)
    for start, stop, sizes, weights in _ranked_groups(
        retrieval, db_labels, lambda labels: sim[labels], query_labels, k,
        ties, rng,
    ):
        cumulative = _expected_cumulative_weight(sizes, weights, k)
        best = ideal[query_labels[start:stop]]
        yield np.where(best > 0, cumulative / np.where(best > 0, best, 1), 0.0)


def mean_average_hierarchical_precision(
    query_codes, query_labels, db_codes, db_labels, class_similarity, k=250,
    binary=False, ties="aware", exclude_self=False, seed=0,
):
    """mAHP@k (Deng et al. 2011, as computed by Barz & Denzler).

    For a query q with ranked results r_1..r_N and class similarity
    s = class_similarity: HP@i = sum_{j<=i} s(q, r_j) / (the same sum for
    the database similarities sorted descending, the best any ranking can
    do). AHP@k = (sum_{i<=k} HP@i - (HP@1 + HP@k) / 2) / k, the trapezoid
    rule with unit spacing divided by k, so a perfect ranking gives
    (k - 1) / k. mAHP@k is the mean over queries. HP@i is 0 where the best
    achievable sum is 0. With `ties="aware"` this is exactly E[mAHP@k] over
    uniform tie orders (linear in the expected cumulative similarity).

    Args:
        query_codes: float [Q, d]; db_codes: float [N, d].
        query_labels: int [Q]; db_labels: int [N]; class ids in [0, C).
        class_similarity: float [C, C] >= 0, s[c, c] = 1; from class
            distances d use `semantics.class_similarity(d)` = max(0, 1 - d).
        k: cut-off rank, 1 <= k <= N (N - 1 with exclude_self).
        binary: rank binarised codes (code > 0.5) by Hamming distance
            instead of float codes by L1 distance.
        ties: "aware", "random" or "index" (see module docstring).
        exclude_self: query i is database item i (same arrays); item i is
            removed from query i's database and from its ideal ranking.
        seed: RNG seed for ties="random".

    Returns:
        float in [0, (k - 1) / k].

    Raises:
        ValueError: on mismatched shapes, labels out of range, invalid k or
            ties, or exclude_self with different query and database arrays.
    """
    total, count = 0.0, 0
    for precision in _hierarchical_precision_blocks(
        query_codes, query_labels, db_codes, db_labels, class_similarity, k,
        binary, ties, exclude_self, seed,
    ):
        ends = precision[:, 0] + precision[:, -1]
        area = precision.sum(axis=1) - 0.5 * ends  # trapezoid rule
        total += float(np.sum(area)) / precision.shape[1]
        count += precision.shape[0]
    return total / count


def hierarchical_precision_curve(
    query_codes, query_labels, db_codes, db_labels, class_similarity, k=250,
    binary=False, ties="aware", exclude_self=False, seed=0, ks=None,
):
    """Mean HP@i over queries (for plots); arguments as in
    `mean_average_hierarchical_precision`.

    Args:
        ks: optional 1-based ranks; when given the curve runs to max(ks)
            (`k` is ignored) and only those ranks are returned.

    Returns:
        float64 [k] (HP@1..HP@k) or [len(ks)].
    """
    if ks is not None:
        ks = np.asarray([check_positive_int("ks", r) for r in np.ravel(ks)])
        if ks.size == 0:
            raise ValueError(f"`ks` must not be empty. Received: ks={ks}")
        k = int(ks.max())
    total, count = 0.0, 0
    for precision in _hierarchical_precision_blocks(
        query_codes, query_labels, db_codes, db_labels, class_similarity, k,
        binary, ties, exclude_self, seed,
    ):
        total = total + precision.sum(axis=0)
        count += precision.shape[0]
    curve = total / count
    return curve if ks is None else curve[ks - 1]


def mean_average_precision(
    query_codes, query_labels, db_codes, db_labels, k=250, binary=False,
    ties="aware", exclude_self=False, seed=0,
):
    """mAP@k with relevant = same label (the usual hashing protocol).

    AP@k = (1 / R_k) sum_{i<=k} rel_i * P@i, where P@i = (relevant in the
    first i) / i and R_k = relevant items in the top k; 0 when R_k = 0.

    With `ties="aware"` this is the exact E[AP@k] over uniform orders within
    every tie group (He et al. 2018 extended to @k), averaged over queries.
    Groups wholly inside the top k contribute, at in-group position j of a
    group with n items, m relevant and R relevant before it,
    E[rel * cumrel] / i = (m / n)(R + 1 + (j - 1)(m - 1)/(n - 1)) / i. For the
    group straddling rank k (t of its n items inside the top k), R_k = R + X
    with X ~ Hypergeometric(n, m, t) and, given X = x, the same formula with
    (n, m) -> (t, x); the expectation of the ratio is summed over x exactly.

    Args:
        query_codes, query_labels, db_codes, db_labels, k, binary, ties,
        exclude_self, seed: as in `mean_average_hierarchical_precision`.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: as `mean_average_hierarchical_precision`.
    """
    _check_ties(ties)
    retrieval = _Retrieval(query_codes, db_codes, binary, exclude_self)
    k = retrieval.check_k(k)
    query_labels, db_labels = _query_and_db_labels(
        retrieval, query_labels, db_labels, None
    )
    # Compact ids so the [chunk, classes] relevance table stays small.
    classes, compact = np.unique(
        np.concatenate([query_labels, db_labels]), return_inverse=True
    )
    query_labels, db_labels = np.split(compact.ravel(), [query_labels.size])
    classes = np.arange(classes.size)

    def relevance(labels):
        return (labels[:, None] == classes[None, :]).astype(np.float64)

    rng = np.random.default_rng(seed)
    total = 0.0
    for _, _, sizes, relevant in _ranked_groups(
        retrieval, db_labels, relevance, query_labels, k, ties, rng
    ):
        total += float(np.sum(_expected_average_precision(sizes, relevant, k)))
    return total / retrieval.num_queries


# === Other metrics ===


def code_statistics(codes, tolerance=0.1):
    """How binary, balanced and diverse continuous codes are.

    These are the quantities the empirical KL term of eq. 4 is meant to
    drive: values piled at 0 and 1 (so thresholding at 0.5 loses little),
    every bit on for half the items, and distinct codes for distinct items.

    Args:
        codes: float [n, d] continuous codes (binarised at 0.5).
        tolerance: a value is near-binary when it is within this distance
            of 0 or 1.

    Returns:
        dict of floats:
        * near_binary: fraction of values within `tolerance` of {0, 1};
        * bit_balance_deviation: mean over bits of |P(bit on) - 0.5|
          (0: balanced, 0.5: a constant bit);
        * distinct_codes: number of distinct binarised codes;
        * distinct_fraction: distinct_codes / n.
    """
    codes = _codes(codes, "codes")
    if not tolerance >= 0:
        raise ValueError(
            f"`tolerance` must be >= 0. Received: tolerance={tolerance}"
        )
    near = (np.abs(codes) <= tolerance) | (np.abs(codes - 1.0) <= tolerance)
    bits = binarise(codes)
    distinct = len(np.unique(pack_bits(bits), axis=0))
    return {
        "near_binary": float(near.mean()),
        "bit_balance_deviation": float(np.abs(bits.mean(axis=0) - 0.5).mean()),
        "distinct_codes": float(distinct),
        "distinct_fraction": float(distinct / len(codes)),
    }


def kendall_tau(code_distances, target_distances):
    """Kendall's tau-b between two distance vectors, O(n log n).

    Args:
        code_distances, target_distances: float [n], n >= 2, e.g. flattened
            upper triangles or one query's distances to the database.

    Returns:
        float in [-1, 1]; nan if either vector is constant (tau-b undefined).
    """
    x = np.asarray(code_distances, dtype=np.float64)
    y = np.asarray(target_distances, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(
            "Expected two 1-D arrays of the same length >= 2. Received: "
            f"code_distances.shape={x.shape}, "
            f"target_distances.shape={y.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("Distances must be finite. Received: nan or inf.")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(stats.kendalltau(x, y, variant="b").statistic)


def labels_ranked_by_retrieval(
    query_codes, db_codes, db_labels, binary=False, exclude_self=False,
    max_labels=None,
):
    """Distinct database labels per query in order of first retrieval.

    A label's rank is the distance to its nearest database item; labels
    first reached at the same distance are ordered by how many of their
    items lie at that distance (more first), then by label id (smaller
    first). This turns retrieval into zero-shot label predictions.

    Args:
        query_codes: float [Q, d]; db_codes: float [N, d]; db_labels: int [N].
        binary, exclude_self: as in `mean_average_hierarchical_precision`.
        max_labels: keep only the first max_labels labels.

    Returns:
        int64 [Q, L], L = distinct db labels (or max_labels if smaller);
        padded with -1 where exclude_self removed a label's only item.
    """
    retrieval = _Retrieval(query_codes, db_codes, binary, exclude_self)
    db_labels = _labels(db_labels, "db_labels", retrieval.num_db)
    order = np.argsort(db_labels, kind="stable")
    labels, starts, counts = np.unique(
        db_labels[order], return_index=True, return_counts=True
    )
    num_labels = labels.size
    if max_labels is not None:
        num_labels = min(
            num_labels, check_positive_int("max_labels", max_labels)
        )
    segment = np.repeat(np.arange(labels.size), counts)
    out = np.empty((retrieval.num_queries, num_labels), dtype=np.int64)
    for start, stop, dist in retrieval.blocks(db_permutation=order):
        num_rows = stop - start
        nearest = np.minimum.reduceat(dist, starts, axis=1)  # [B, L]
        rows, cols = np.nonzero(dist == np.repeat(nearest, counts, axis=1))
        at_nearest = np.bincount(
            rows * labels.size + segment[cols],
            minlength=num_rows * labels.size,
        ).reshape(num_rows, labels.size)
        ids = np.broadcast_to(labels, nearest.shape)
        rank = np.lexsort((ids, -at_nearest, nearest), axis=-1)
        rank = rank[:, :num_labels]
        ranked = np.take_along_axis(ids, rank, axis=1).copy()
        only_self = nearest == retrieval.excluded_distance
        ranked[np.take_along_axis(only_self, rank, axis=1)] = -1
        out[start:stop] = ranked
    return out


def flat_hit_at_k(ranked_labels, true_labels, ks=(1, 2, 5, 10)):
    """Fraction of queries whose true label is among the first k predictions.

    Args:
        ranked_labels: int [Q, L] (e.g. from `labels_ranked_by_retrieval`;
            -1 = padding) or a list of Q label sequences.
        true_labels: int [Q].
        ks: cut-offs, each >= 1 (k > L uses all L).

    Returns:
        dict {k: float in [0, 1]}.
    """
    if isinstance(ranked_labels, np.ndarray):
        ranked = ranked_labels
    else:
        rows = [np.asarray(r, dtype=np.int64).ravel() for r in ranked_labels]
        width = max((r.size for r in rows), default=0)
        ranked = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            ranked[i, : r.size] = r
    true_labels = np.asarray(true_labels)
    if ranked.ndim != 2 or true_labels.shape != (ranked.shape[0],):
        raise ValueError(
            "Expected ranked_labels [Q, L] and true_labels [Q]. Received: "
            f"ranked_labels.shape={ranked.shape}, "
            f"true_labels.shape={true_labels.shape}"
        )
    if ranked.shape[0] == 0:
        raise ValueError("Need at least one query. Received: 0 queries.")
    hits = ranked == true_labels[:, None]
    ks = [check_positive_int("ks", k) for k in ks]
    return {k: float(np.mean(np.any(hits[:, :k], axis=1))) for k in ks}

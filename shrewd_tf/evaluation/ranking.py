"""Ranking machinery behind `shrewd_tf.evaluation.metrics` (private to the package).

`_Retrieval` validates a query/database pair and yields [chunk, N] distance
blocks: float32 Manhattan (L1) distances (faiss) between float codes, or
Hamming distances between binarised codes (code > 0.5) by XOR + popcount
of packed uint64 words. A chunk's ranking is then summarised as
rank-ordered tie groups (items at exactly the same distance), either
complete (`ties="aware"`) or as one realized order (`"random"`, `"index"`);
`_expected_cumulative_weight` and `_expected_average_precision` give the
exact expectations over uniform orders within every tie group. Peak memory
is O(chunk * N) with chunk * N ~ 4M entries.

Reference:
    K. He, F. Cakir, S. A. Bargal, S. Sclaroff. Hashing as tie-aware
    learning to rank. CVPR 2018.
"""

import numpy as np
from scipy import special

from shrewd_tf.ops.bits import pack_bits
from shrewd_tf.ops.validation import check_positive_int

TIE_MODES = ("aware", "random", "index")
# Entries of the [chunk, N] distance block per chunk (float32: 16 MiB).
_CHUNK_ENTRIES = 2**22


# === Validation ===


def _codes(x, name):
    array = np.asarray(x, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"`{name}` must be a non-empty 2-D array [num_items, dim]. "
            f"Received: {name}.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"`{name}` must be finite. Received: "
            f"{np.size(array) - np.isfinite(array).sum()} non-finite entries"
        )
    return array


def _labels(x, name, size, num_classes=None):
    array = np.asarray(x)
    if array.shape != (size,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be an integer array of shape ({size},). "
            f"Received: {name}.shape={array.shape}, dtype={array.dtype}"
        )
    high = num_classes if num_classes is not None else np.inf
    if size and (array.min() < 0 or array.max() >= high):
        raise ValueError(
            f"`{name}` must lie in [0, {high}). Received: min={array.min()}, "
            f"max={array.max()}"
        )
    return array.astype(np.int64)


def _check_ties(ties):
    if ties not in TIE_MODES:
        raise ValueError(
            f"`ties` must be one of {TIE_MODES}. Received: ties={ties!r}"
        )


# === Retrieval ===


class _Retrieval:
    """Validated query/database pair; yields [chunk, N] distance blocks."""

    def __init__(self, query_codes, db_codes, binary, exclude_self):
        self.query = _codes(query_codes, "query_codes")
        self.db = _codes(db_codes, "db_codes")
        if self.query.shape[1] != self.db.shape[1]:
            raise ValueError(
                "Query and database codes must have the same dimension. "
                f"Received: query_codes.shape={self.query.shape}, "
                f"db_codes.shape={self.db.shape}"
            )
        if exclude_self and not np.array_equal(self.query, self.db):
            raise ValueError(
                "`exclude_self=True` means query i is database item i, so "
                "query_codes and db_codes must be the same array. Received: "
                f"query_codes.shape={self.query.shape}, "
                f"db_codes.shape={self.db.shape}"
            )
        self.binary = bool(binary)
        self.exclude_self = bool(exclude_self)
        self.num_queries, self.num_db = self.query.shape[0], self.db.shape[0]
        self.num_candidates = self.num_db - int(self.exclude_self)
        self.dim = self.query.shape[1]
        if self.binary:
            self.query = _packed_words(self.query)  # [Q, words]
            self.db = _packed_words(self.db)  # [N, words]

    def check_k(self, k):
        k = check_positive_int("k", k)
        if k > self.num_candidates:
            raise ValueError(
                f"`k` must not exceed the number of database items a query "
                f"can retrieve ({self.num_candidates}, exclude_self="
                f"{self.exclude_self}). Received: k={k}"
            )
        return k

    @property
    def excluded_distance(self):
        """Distance given to a query's own item (ranks after all others)."""
        return self.dim + 1 if self.binary else np.inf

    def blocks(self, db_permutation=None):
        """Yields (start, stop, distances [stop - start, N]): float32 L1,
        or integer Hamming (uint8, uint16 past 254 bits) if binary."""
        db = self.db if db_permutation is None else self.db[db_permutation]
        if self.exclude_self:
            self_columns = np.arange(self.num_db)
            if db_permutation is not None:
                self_columns = np.argsort(db_permutation)
        if self.binary:
            db_words = np.ascontiguousarray(db.T)  # [words, N]
            dtype = np.uint8 if self.dim < 255 else np.uint16
        else:
            import faiss  # pylint: disable=import-outside-toplevel
        chunk = max(1, _CHUNK_ENTRIES // self.num_db)
        for start in range(0, self.num_queries, chunk):
            stop = min(self.num_queries, start + chunk)
            if self.binary:
                # XOR + popcount row by row: each row stays in cache.
                dist = np.zeros((stop - start, self.num_db), dtype=dtype)
                for row, words in zip(dist, self.query[start:stop]):
                    for db_word, word in zip(db_words, words):
                        row += np.bitwise_count(db_word ^ word)
            else:
                dist = faiss.pairwise_distances(
                    self.query[start:stop], db, faiss.METRIC_L1
                )
                dist += 0.0  # -0.0 -> +0.0 so equal distances compare equal
            if self.exclude_self:
                rows = np.arange(stop - start)
                dist[rows, self_columns[start:stop]] = self.excluded_distance
            yield start, stop, dist


def _packed_words(codes):
    """Codes [n, d] -> their bits (`pack_bits`) as uint64 [n, ceil(d / 64)],
    zero-padded (bit order is irrelevant to XOR + popcount)."""
    packed = pack_bits(codes)
    pad = -packed.shape[1] % 8
    packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _query_and_db_labels(retrieval, query_labels, db_labels, num_classes):
    query_labels = _labels(
        query_labels, "query_labels", retrieval.num_queries, num_classes
    )
    db_labels = _labels(db_labels, "db_labels", retrieval.num_db, num_classes)
    if retrieval.exclude_self and not np.array_equal(query_labels, db_labels):
        raise ValueError(
            "`exclude_self=True` needs query_labels == db_labels. Received: "
            f"{np.sum(query_labels != db_labels)} differing labels"
        )
    return query_labels, db_labels


# === Tie groups ===
# A chunk's ranking is summarised as rank-ordered tie groups: sizes [B, G]
# and weight sums [B, G] (weight of db item j for query b: table[b, label_j];
# similarity for HP, relevance for AP). Every group up to and including the
# one holding rank k is complete; zero-size padding groups are allowed.


def _hamming_groups(dist, table, db_labels, num_levels):
    """Group sizes and weights per Hamming distance, [B, num_levels] each."""
    sizes = np.empty((dist.shape[0], num_levels))
    weights = np.empty((dist.shape[0], num_levels))
    for b, row in enumerate(dist):  # per-row bincounts stay in cache
        sizes[b] = np.bincount(row, minlength=num_levels)
        if table is not None:
            weights[b] = np.bincount(
                row, weights=table[b][db_labels], minlength=num_levels
            )
    return sizes, weights


def _kth_distance(dist, k, num_levels):
    """The k-th smallest distance per row, [B]."""
    if not num_levels:
        return np.partition(dist, k - 1, axis=1)[:, k - 1]
    sizes, _ = _hamming_groups(dist, None, None, num_levels)
    return np.argmax(np.cumsum(sizes, axis=1) >= k, axis=1).astype(dist.dtype)


def _tie_groups_aware(dist, table, db_labels, k, num_levels):
    """Complete tie groups up to rank k (see the section comment)."""
    if num_levels:  # Hamming: one group per distance value, no sorting.
        return _hamming_groups(dist, table, db_labels, num_levels)
    # Floats: every item at or below the k-th distance, sorted.
    kth = _kth_distance(dist, k, num_levels)
    rows, cols = np.nonzero(dist <= kth[:, None])
    values = dist[rows, cols]
    order = np.lexsort((values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    is_start = np.ones(rows.size, dtype=bool)
    is_start[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    starts = np.flatnonzero(is_start)
    group_rows = rows[starts]
    slot = np.arange(starts.size) - np.searchsorted(group_rows, group_rows)
    shape = (dist.shape[0], slot.max() + 1)
    sizes, weights = np.zeros(shape), np.zeros(shape)
    sizes[group_rows, slot] = np.diff(np.append(starts, rows.size))
    weights[group_rows, slot] = np.add.reduceat(
        table[rows, db_labels[cols]], starts
    )
    return sizes, weights


def _tie_groups_realized(dist, table, db_labels, k, num_levels, ties, rng):
    """One realized order (`ties` = "random" or "index") as size-1 groups."""
    num_rows = dist.shape[0]
    kth = _kth_distance(dist, k, num_levels)
    f_rows, f_cols = np.nonzero(dist < kth[:, None])  # all in the top k
    needed = k - np.bincount(f_rows, minlength=num_rows)
    b_rows, b_cols = np.nonzero(dist == kth[:, None])
    if ties == "index":
        f_keys, b_keys = f_cols.astype(np.float64), b_cols.astype(np.float64)
    else:
        f_keys, b_keys = rng.random(f_cols.size), rng.random(b_cols.size)
    # Keep the `needed` boundary items with the smallest keys per row.
    order = np.lexsort((b_keys, b_rows))
    b_rows, b_cols, b_keys = b_rows[order], b_cols[order], b_keys[order]
    rank = np.arange(b_rows.size) - np.searchsorted(b_rows, b_rows)
    keep = rank < needed[b_rows]
    rows = np.concatenate([f_rows, b_rows[keep]])
    cols = np.concatenate([f_cols, b_cols[keep]])
    keys = np.concatenate([f_keys, b_keys[keep]])
    order = np.lexsort((keys, dist[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    weights = table[rows, db_labels[cols]].reshape(num_rows, k)
    return np.ones((num_rows, k)), weights


def _ranked_groups(retrieval, db_labels, weight_table, query_labels, k,
                   ties, rng):
    """Yields (start, stop, sizes [B, G], weights [B, G]) per query chunk;
    weight_table(query_labels) -> [B, C] weight of each db class."""
    num_levels = retrieval.dim + 2 if retrieval.binary else 0
    for start, stop, dist in retrieval.blocks():
        table = weight_table(query_labels[start:stop])
        if ties == "aware":
            groups = _tie_groups_aware(dist, table, db_labels, k, num_levels)
        else:
            groups = _tie_groups_realized(
                dist, table, db_labels, k, num_levels, ties, rng
            )
        yield start, stop, *groups


def _group_of_rank(sizes, weights, k):
    """Per rank i = 1..k: (group size n, weight W, first rank - 1, weight
    before the group), all [B, k], for rank-ordered groups with sum >= k."""
    num_rows, num_groups = sizes.shape
    ends = np.cumsum(sizes, axis=1)
    cum_weights = np.cumsum(weights, axis=1)
    # One searchsorted for all rows: shift row b by b * span.
    span = ends[:, -1].max() + 1.0
    shift = np.arange(num_rows)[:, None] * span
    ranks = np.arange(1, k + 1)[None, :]
    group = np.searchsorted((ends + shift).ravel(), (ranks + shift).ravel())
    group = group.reshape(num_rows, k)
    group -= np.arange(num_rows)[:, None] * num_groups
    size = np.take_along_axis(sizes, group, axis=1)
    weight = np.take_along_axis(weights, group, axis=1)
    first = np.take_along_axis(ends, group, axis=1) - size
    before = np.take_along_axis(cum_weights, group, axis=1) - weight
    return size, weight, first, before


def _expected_cumulative_weight(sizes, weights, k):
    """E[sum of weights at ranks 1..i] for i = 1..k, [B, k] (exact)."""
    size, weight, first, before = _group_of_rank(sizes, weights, k)
    ranks = np.arange(1, k + 1)[None, :]
    return before + (ranks - first) * weight / size


def _log_choose(n, r):
    return (
        special.gammaln(n + 1)
        - special.gammaln(r + 1)
        - special.gammaln(n - r + 1)
    )


def _expected_average_precision(sizes, relevant, k):
    """Exact E[AP@k] over uniform tie orders, [B]; see
    `mean_average_precision`. `relevant` = relevant items per group."""
    n, m, first, r_before = _group_of_rank(sizes, relevant, k)
    ranks = np.arange(1, k + 1)[None, :].astype(np.float64)
    j = ranks - first  # 1-based position within the group
    pair = np.where(n > 1, (m - 1) / np.maximum(n - 1, 1), 0.0)
    # E[rel_i * cumrel_i] / i for a fully ranked group.
    terms = (m / n) * (r_before + 1 + (j - 1) * pair) / ranks
    in_boundary = first == first[:, -1:]
    expected_before = np.sum(np.where(in_boundary, 0.0, terms), axis=1)
    h1 = np.sum(np.where(in_boundary, 1.0 / ranks, 0.0), axis=1)
    h2 = np.sum(np.where(in_boundary, (j - 1) / ranks, 0.0), axis=1)
    n_b, m_b, r_b = n[:, -1:], m[:, -1:], r_before[:, -1:]
    t = k - first[:, -1:]  # boundary positions inside the top k
    # X = relevant among the t boundary items in the top k: hypergeometric.
    x = np.arange(k + 1, dtype=np.float64)[None, :]
    valid = (x <= m_b) & (x <= t) & (t - x <= n_b - m_b)
    log_pmf = (
        _log_choose(m_b, np.minimum(x, m_b))
        + _log_choose(n_b - m_b, np.clip(t - x, 0, n_b - m_b))
        - _log_choose(n_b, t)
    )
    pmf = np.where(valid, np.exp(log_pmf), 0.0)
    pmf /= pmf.sum(axis=1, keepdims=True)
    pair_b = np.where(t > 1, x * (x - 1) / np.maximum(t * (t - 1), 1), 0.0)
    numerator = (
        expected_before[:, None]
        + (x / t) * (r_b + 1) * h1[:, None]
        + pair_b * h2[:, None]
    )
    retrieved = r_b + x
    ap = np.where(retrieved > 0, numerator / np.maximum(retrieved, 1), 0.0)
    return np.sum(pmf * ap, axis=1)


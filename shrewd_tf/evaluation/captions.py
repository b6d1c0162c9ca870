"""Caption supervision (records with caption embeddings e_i; the paper's
Conceptual Captions protocol, Table 4). Queries = database, each query left
out of its own database:

* caption mAHP@250: mAHP with instance similarity s(i, j) =
  clip(cos(e_i, e_j), 0, 1): every item is its own "class" and the ideal
  ranking is the database sorted by caption similarity to the query;
* Kendall tau-b: for query i, tau-b between the code distances
  D(z_i, z_j) (L1 on float codes, Hamming on binary codes) and the caption
  distances 1 - cos(e_i, e_j) over all database items j != i; averaged
  over queries (those where tau-b is defined: codes not all at the same
  distance). 1: codes rank the database exactly as the captions do.
"""

import logging

import numpy as np

from shrewd_tf.evaluation import metrics
from shrewd_tf.ops.bits import binarise

log = logging.getLogger(__name__)

# Queries of the per-query Kendall tau (evenly spaced over the test set,
# each against the whole database): scipy's tau-b costs ~10 ms per query
# over 10k items on one core.
KENDALL_QUERIES = 1000


def _unit_rows(embeddings):
    """float64 [N, E] rows scaled to unit L2 norm (zero rows stay 0)."""
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or not np.all(np.isfinite(embeddings)):
        raise ValueError(
            "embeddings must be a finite [N, E] array. Received: "
            f"shape={embeddings.shape}"
        )
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def caption_similarity_matrix(embeddings, chunk_rows=1024):
    """Instance similarity s_ij = clip(cos(e_i, e_j), 0, 1), float64 [N, N].

    Built in row chunks (float32 products) into one float64 array, so the
    peak is 8 N^2 bytes (0.8 GB at N = 10,000). The diagonal is 1.
    """
    unit = _unit_rows(embeddings).astype(np.float32)
    n = unit.shape[0]
    similarity = np.empty((n, n), np.float64)
    for start in range(0, n, chunk_rows):
        similarity[start : start + chunk_rows] = (
            unit[start : start + chunk_rows] @ unit.T
        )
    np.clip(similarity, 0.0, 1.0, out=similarity)
    np.fill_diagonal(similarity, 1.0)
    return similarity


def _query_rows(num_items, max_queries):
    if max_queries is None or max_queries >= num_items:
        return np.arange(num_items)
    return np.unique(
        np.linspace(0, num_items - 1, int(max_queries)).round().astype(int)
    )


def kendall_tau_per_query(codes, embeddings, binary=False, queries=None):
    """Kendall tau-b between code and caption rankings, per query.

    For query i: tau-b (`metrics.kendall_tau`) between the code distances
    to every other item j != i (L1 between float codes, or Hamming between
    binarised codes `code > 0.5` with `binary`) and the caption distances
    1 - cos(e_i, e_j).

    Args:
        codes: float [N, d]; embeddings: float [N, E]; N >= 3.
        binary: rank binary codes by Hamming distance.
        queries: int indices of the queries (default: all N).

    Returns:
        float64 [Q]: tau-b per query, nan where undefined (all code or all
        caption distances equal).

    Raises:
        ValueError: mismatched shapes or fewer than 3 items.
    """
    codes = np.asarray(codes, np.float32)
    unit = _unit_rows(embeddings)
    if codes.ndim != 2 or codes.shape[0] != unit.shape[0] or len(codes) < 3:
        raise ValueError(
            "codes [N, d] and embeddings [N, E] must have the same N >= 3. "
            f"Received: codes.shape={codes.shape}, "
            f"embeddings.shape={unit.shape}"
        )
    points = binarise(codes) if binary else codes.astype(np.float64)
    queries = np.arange(len(codes)) if queries is None else np.asarray(queries)
    taus = np.empty(len(queries))
    for row, i in enumerate(queries):
        if binary:
            code_distances = np.count_nonzero(points != points[i], axis=1)
        else:
            code_distances = np.abs(points - points[i]).sum(axis=1)
        caption_distances = 1.0 - np.clip(unit @ unit[i], -1.0, 1.0)
        others = np.arange(len(codes)) != i
        taus[row] = metrics.kendall_tau(
            code_distances[others].astype(np.float64),
            caption_distances[others],
        )
    return taus


def mean_kendall_tau(codes, embeddings, binary=False, max_queries=None):
    """Mean over queries of `kendall_tau_per_query` (nan ones left out).

    Args:
        max_queries: use this many queries, evenly spaced over the items
            (None: all); each still ranks the whole database.

    Returns:
        float in [-1, 1]; nan if tau-b is undefined for every query.
    """
    taus = kendall_tau_per_query(
        codes, embeddings, binary, _query_rows(len(codes), max_queries)
    )
    defined = taus[np.isfinite(taus)]
    if defined.size < taus.size:
        log.warning(
            "Kendall tau undefined for %d of %d queries (all code distances "
            "equal); they are left out of the mean",
            taus.size - defined.size, taus.size,
        )
    return float(defined.mean()) if defined.size else float("nan")


def caption_retrieval_metrics(codes, embeddings, k=250, ties="aware",
                              kendall_queries=KENDALL_QUERIES):
    """Caption-supervised retrieval metrics (see the module docstring).

    Queries = database, each query excluded from its own database.

    Args:
        codes: float [N, d].
        embeddings: float [N, E] caption embeddings.
        k: mAHP cut-off (capped at N - 1).
        ties: tie handling of the mAHP rankings (see `metrics`).
        kendall_queries: queries of the Kendall tau (None: all N).

    Returns:
        dict: mahp_caption_float, mahp_caption_binary (mAHP@k with
        s(i, j) = clip(cos(e_i, e_j), 0, 1)), kendall_tau_float,
        kendall_tau_binary.

    Memory: the [N, N] float64 similarity, 8 N^2 bytes.
    """
    codes = np.asarray(codes, np.float32)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != codes.shape[0]:
        raise ValueError(
            "embeddings must be [N, E] for codes [N, d]. Received: "
            f"embeddings.shape={embeddings.shape}, codes.shape={codes.shape}"
        )
    k = min(k, len(codes) - 1)
    similarity = caption_similarity_matrix(embeddings)
    items = np.arange(len(codes))  # every item is its own "class"
    result = {}
    for name, binary in (("float", False), ("binary", True)):
        result[f"mahp_caption_{name}"] = (
            metrics.mean_average_hierarchical_precision(
                codes, items, codes, items, similarity, k=k, binary=binary,
                ties=ties, exclude_self=True,
            )
        )
    del similarity
    for name, binary in (("float", False), ("binary", True)):
        result[f"kendall_tau_{name}"] = mean_kendall_tau(
            codes, embeddings, binary, kendall_queries
        )
    return result

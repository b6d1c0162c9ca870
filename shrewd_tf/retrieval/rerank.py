"""Re-ranking of a Hamming shortlist by L1 distance between float codes.

`BinaryHammingIndex(rerank=True)` searches the Hamming top-C and re-orders
it with `rerank_l1`, in chunks of queries whose float scratch
([chunk, C, d]) stays under `RERANK_CHUNK_BYTES`.
"""

import numpy as np

RERANK_CHUNK_BYTES = 32 * 2**20


def rerank_l1(float_codes, queries, rows, k):
    """Re-orders a Hamming shortlist by float L1 distance; returns top k.

    Args:
        float_codes: float32 [N, d] database codes.
        queries: float32 [Q, d].
        rows: int64 [Q, C] shortlist rows (-1: none).
        k: neighbours kept (at most C).

    Returns:
        (rows int64 [Q, k], L1 float32 [Q, k]); a stable sort, so L1 ties
        keep the Hamming order; missing rows get L1 = inf.
    """
    num_queries, shortlist = rows.shape
    k = min(k, shortlist)
    row_bytes = max(1, 4 * shortlist * float_codes.shape[1])
    chunk = max(1, RERANK_CHUNK_BYTES // row_bytes)
    out_rows = np.empty((num_queries, k), np.int64)
    out_distances = np.empty((num_queries, k), np.float32)
    for start in range(0, num_queries, chunk):
        part = slice(start, start + chunk)
        block = rows[part]
        candidates = float_codes[np.where(block < 0, 0, block)]
        l1 = np.abs(candidates - queries[part, None, :]).sum(
            axis=2, dtype=np.float32
        )
        l1[block < 0] = np.inf
        order = np.argsort(l1, axis=1, kind="stable")[:, :k]
        out_rows[part] = np.take_along_axis(block, order, 1)
        out_distances[part] = np.take_along_axis(l1, order, 1)
    return out_rows, out_distances

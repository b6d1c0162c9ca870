"""Recall@k of an approximate Hamming search, measured at build time.

A sub-linear `BinaryHammingIndex` (ivf, hnsw, mih with exact=False) is
checked when it is built: a seeded sample of the indexed codes is searched
with the index and, exactly, with a chunked flat scan of the same codes;
`RecallReport` records recall@k, the sample and every search setting
tried, and is saved in the index manifest ("recall"). For ivf with
`nprobe=None` the settings tried are nprobe = 1, 2, 4, ... up to
`RecallCheck.max_nprobe` (and nlist), and the smallest reaching
`RecallCheck.target` is kept.

Recall is tie-aware: the overlap of the multisets of found and exact
Hamming distances, over the exact count (ids among equal distances are
arbitrary, so an id-based recall would punish correct answers).

Defaults: k = 10, what `/v1/search` answers by default (its "k"), and
k = 250 (`wide_k`, the evaluation cut-off, mAP@250) reported next to it;
1,000 queries (a 0.99 recall@10 is then measured over 10,000 neighbours).
The queries are codes of the index itself, left out of their own answer
(`RecallCheck.leave_one_out`, default): each query searches k + 1 and
one distance-0 neighbour (itself) is removed from the found and the exact
lists, so recall is that of a new code from the same distribution. Without
it every query finds itself in its own IVF list: at 10M clustered codes
nprobe=1 measured 0.9901 with the self-matches and 0.9891 without, so the
self-matches alone would have passed it.

Memory: the exact side scans the codes in chunks of `EXACT_CHUNK_ROWS`
with `faiss.knn_hamming` (no copy of the codes, no second index); besides
the codes the index holds, it costs O(queries * k) plus the chunk's
top-k, whatever N.
"""

import dataclasses
import os

import faiss
import numpy as np

from shrewd_tf.retrieval.arrays import HAMMING_PAD
from shrewd_tf.retrieval.files import MANIFEST_FILE
from shrewd_tf.retrieval.files import IndexFormatError

# Rows of packed codes per exact-search chunk (faiss reads them in place).
EXACT_CHUNK_ROWS = 1 << 20
# nprobe values tried, in order, when ivf tunes nprobe at build.
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class RecallCheck:
    """How a sub-linear index's recall is measured at build time.

    Attributes:
        k: neighbours per query for the recall that decides (10: the
            default k of `/v1/search`).
        wide_k: a second, reported recall@wide_k (250: the evaluation
            cut-off); 0 skips it.
        queries: codes of the index sampled as queries (at most N).
        seed: seed of the sample.
        target: the recall an ivf nprobe must reach to be chosen.
        max_nprobe: the largest nprobe tried when tuning.
        leave_one_out: remove each query's own code from its results.
    """

    k: int = 10
    wide_k: int = 250
    queries: int = 1000
    seed: int = 0
    target: float = 0.99
    max_nprobe: int = 256
    leave_one_out: bool = True

    def __post_init__(self):
        for name in ("k", "queries", "max_nprobe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (
                value < 1
            ):
                raise ValueError(
                    f"RecallCheck.{name} must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        if not isinstance(self.wide_k, int) or self.wide_k < 0:
            raise ValueError(
                "RecallCheck.wide_k must be an integer >= 0. "
                f"Received: wide_k={self.wide_k!r}"
            )
        if not 0.0 < self.target <= 1.0:
            raise ValueError(
                "RecallCheck.target must be in (0, 1]. "
                f"Received: target={self.target!r}"
            )


@dataclasses.dataclass(frozen=True)
class RecallReport:
    """Recall of an index's search settings, as saved in its manifest.

    Attributes:
        recall: recall@k of `params`, the settings the index serves with.
        k: its cut-off.
        params: the served search settings, e.g. {"nprobe": 8}.
        tried: one {**settings, "recall": r@k, "recall_wide": r@wide_k or
            None} per setting tried, in order.
        queries: queries measured (sampled codes of the index).
        seed: the sample's seed.
        target: the recall the check aimed at.
        count: codes in the index when measured.
        wide_k: the second cut-off (0: none).
        recall_wide: recall@wide_k of `params` (None without wide_k).
        leave_one_out: queries were left out of their own results.
    """

    recall: float
    k: int
    params: dict
    tried: tuple
    queries: int
    seed: int
    target: float
    count: int
    wide_k: int = 0
    recall_wide: float | None = None
    leave_one_out: bool = False

    @property
    def meets_target(self):
        return self.recall >= self.target

    def recall_for(self, params):
        """recall@k of search settings `params` if they were tried, else
        None."""
        for row in self.tried:
            if all(row.get(name) == value for name, value in params.items()):
                return row["recall"]
        return None

    def to_json(self):
        value = dataclasses.asdict(self)
        value["tried"] = [dict(row) for row in self.tried]
        return value

    @classmethod
    def from_json(cls, value):
        """The report of a manifest's "recall" object.

        Raises:
            ValueError: when fields are missing or of the wrong type.
        """
        try:
            report = cls(**{**value, "tried": tuple(value["tried"])})
            float(report.recall), int(report.k), int(report.count)
            dict(report.params)
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"invalid recall report {value!r}: {e}") from e
        return report


def report_of_manifest(manifest, data_dir):
    """The `RecallReport` of a loaded manifest, None without "recall".

    Raises:
        IndexFormatError: a malformed "recall", naming the manifest.
    """
    if "recall" not in manifest:
        return None
    try:
        return RecallReport.from_json(manifest["recall"])
    except ValueError as e:
        path = os.path.join(os.path.dirname(data_dir), MANIFEST_FILE)
        raise IndexFormatError(f"{path}: {e}") from e


# === Measuring ===


def nprobe_settings(nlist, check):
    """The nprobe values ivf tuning tries: NPROBE_STEPS below the cap
    min(check.max_nprobe, nlist), then the cap itself."""
    cap = min(check.max_nprobe, nlist)
    return [{"nprobe": p} for p in NPROBE_STEPS if p < cap] + [
        {"nprobe": cap}
    ]


def sample_rows(count, size, seed):
    """Sorted distinct rows of [0, count), `min(size, count)` of them."""
    size = min(size, count)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=size, replace=False))


def exact_distances(packed, queries, k, chunk_rows=EXACT_CHUNK_ROWS):
    """The k smallest Hamming distances per query, by a chunked flat scan.

    Args:
        packed: uint8 [N, B] packed database codes (read in place).
        queries: uint8 [Q, B] packed queries.
        k: neighbours (at most N are returned).
        chunk_rows: database rows per `faiss.knn_hamming` call.

    Returns:
        int32 [Q, min(k, N)], ascending per row.
    """
    k = min(k, len(packed))
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    best = np.full((len(queries), k), HAMMING_PAD, np.int32)
    for start in range(0, len(packed), chunk_rows):
        chunk = np.ascontiguousarray(packed[start:start + chunk_rows])
        found, _ = faiss.knn_hamming(queries, chunk, min(k, len(chunk)))
        merged = np.concatenate([best, found.astype(np.int32)], axis=1)
        best = np.sort(merged, axis=1)[:, :k]
    return best


def hamming_recall(found, exact, code_bits):
    """Tie-aware recall: multiset overlap of found and exact distances.

    Args:
        found: [Q, >= k] distances returned (padding HAMMING_PAD never
            matches).
        exact: [Q, k] exact distances.
        code_bits: codes' width (distances are in [0, code_bits]).

    Returns:
        A float in [0, 1]: matched distances / exact.size (1.0 when empty).
    """
    exact = np.asarray(exact)
    if exact.size == 0:
        return 1.0
    found = np.asarray(found)[:, : exact.shape[1]]
    bins = code_bits + 2  # 0..code_bits, then one bin for padding

    def histogram(distances):
        d = np.minimum(distances, bins - 1).astype(np.int64)
        offsets = np.arange(len(d))[:, None] * bins
        counts = np.bincount((d + offsets).ravel(), minlength=len(d) * bins)
        return counts.reshape(len(d), bins)[:, :-1]

    overlap = np.minimum(histogram(found), histogram(exact)).sum()
    return float(overlap / np.sum(exact != HAMMING_PAD))


def _without_self(distances):
    """Drops one distance-0 entry per ascending row (the query itself),
    else the last column."""
    self_found = distances[:, :1] == 0
    return np.where(self_found, distances[:, 1:], distances[:, :-1])


def measure_recall(packed, settings, search, check, code_bits):
    """Measures `search` under each setting; keeps the first reaching target.

    Args:
        packed: uint8 [N, B] the index's codes (queries are sampled rows).
        settings: search-parameter dicts, tried in order; the first whose
            recall@k reaches `check.target` is chosen (none does: the one
            with the highest recall@k, the earliest among equals).
        search: callable(setting, packed_queries, k) -> distances [Q, k].
        check: a `RecallCheck`.
        code_bits: code width.

    Returns:
        A `RecallReport` whose `params` is the chosen setting.
    """
    rows = sample_rows(len(packed), check.queries, check.seed)
    queries = np.ascontiguousarray(packed[rows])
    extra = int(check.leave_one_out)
    wide_k = min(check.wide_k, len(packed) - extra)
    k = min(check.k, len(packed) - extra)
    exact = exact_distances(packed, queries, max(k, wide_k) + extra)

    def recall_at(setting, cut):
        found = search(setting, queries, cut + extra)
        truth = exact[:, :cut + extra]
        if extra:
            found, truth = _without_self(found), _without_self(truth)
        return hamming_recall(found, truth, code_bits)

    tried, chosen = [], None
    for setting in settings:
        recall = recall_at(setting, k)
        wide = recall_at(setting, wide_k) if wide_k else None
        tried.append({**setting, "recall": recall, "recall_wide": wide})
        if recall >= check.target:
            chosen = tried[-1]
            break
    if chosen is None:
        chosen = max(tried, key=lambda row: row["recall"])
    return RecallReport(
        recall=chosen["recall"],
        k=k,
        params={name: chosen[name] for name in settings[0]},
        tried=tuple(tried),
        queries=len(rows),
        seed=check.seed,
        target=check.target,
        count=len(packed),
        wide_k=wide_k,
        recall_wide=chosen["recall_wide"],
        leave_one_out=bool(extra),
    )

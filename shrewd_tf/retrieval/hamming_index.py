"""`BinaryHammingIndex`: k-NN in Hamming distance over packed binary codes.

faiss binary indexes behind the `shrewd_tf.retrieval.base.RetrievalIndex`
interface: exact `flat` scan (`IndexBinaryFlat`), multi-index hashing `mih`
(`IndexBinaryMultiHash`, exact by default), `ivf` (`IndexBinaryIVF`) and
`hnsw` (`IndexBinaryHNSW`), with optional re-ranking of a Hamming shortlist
by L1 distance between float codes. Bit, id, padding and file conventions
are in the `shrewd_tf.retrieval.base` docstring. Kind "binary"
(`shrewd_tf.contract`), registered on import.

Threads: faiss runs on `num_threads` OpenMP threads (default 1) set around
each faiss call and restored after it; on a loaded 2-core machine faiss
with 2 threads fell from 1,818 to 217 queries/s while 1 thread held. The
OpenMP count is process-wide, so concurrent searches from several Python
threads share it; never `add` while another thread searches.
"""

import logging
import math
import os

import faiss
import numpy as np

from shrewd_tf.contract import BINARY_INDEX
from shrewd_tf.ops.bits import pack_bits
from shrewd_tf.ops.validation import check_positive_int
from shrewd_tf.retrieval.arrays import HAMMING_PAD
from shrewd_tf.retrieval.arrays import as_codes
from shrewd_tf.retrieval.arrays import as_ids
from shrewd_tf.retrieval.arrays import pad_columns
from shrewd_tf.retrieval.base import RetrievalIndex
from shrewd_tf.retrieval.registry import register_index
from shrewd_tf.retrieval.files import IndexFormatError
from shrewd_tf.retrieval.hamming_params import METHOD_PARAMS
from shrewd_tf.retrieval.hamming_params import SEARCH_PARAMS
from shrewd_tf.retrieval.hamming_params import checked_params
from shrewd_tf.retrieval.recall import RecallCheck
from shrewd_tf.retrieval.recall import measure_recall
from shrewd_tf.retrieval.recall import nprobe_settings
from shrewd_tf.retrieval.recall import report_of_manifest
from shrewd_tf.retrieval import faiss_engines
from shrewd_tf.retrieval.rerank import rerank_l1

log = logging.getLogger(__name__)


@register_index
class BinaryHammingIndex(RetrievalIndex):
    """k-NN in Hamming distance over packed binary codes (faiss).

    Methods (`method=`, parameters as keywords):

    * "flat": exact scan, `faiss.IndexBinaryFlat`. Memory code_bits / 8
      bytes per code (+ 8 bytes of id).
    * "mih": multi-index hashing, `faiss.IndexBinaryMultiHash` with `nhash`
      tables over disjoint substrings of b = code_bits // nhash bits (default
      b = 16) probed with up to `nflip` flipped bits (default 1). A code at
      Hamming distance r <= R = nhash * (nflip + 1) - 1 from the query
      differs in at most nflip bits on some substring (pigeonhole), so it is
      always found; with `exact=True` (default) every query whose k-th
      distance exceeds R is re-searched with the flat scan, making results
      exact. Measured (benchmarks/bench_index.py, 1M clustered codes,
      k=250): faiss's per-query hash-set shortlist made mih slower than the
      flat scan; it suits small k and tight clusters, not k=250.
    * "ivf": `faiss.IndexBinaryIVF` with `nlist` Hamming k-means lists
      (default 2 sqrt(N), set at build) and `nprobe` probed lists (default
      None: tuned at build, the smallest of 1, 2, 4, ... reaching
      `recall_check.target`, see below).
      Trained at build on up to 256 codes per list (faiss default; about
      70 s on one thread for nlist=2000); `add` does not retrain. The best
      sub-linear method in the benchmark.
    * "hnsw": `faiss.IndexBinaryHNSW` with `M` links per node (32),
      `ef_construction` (40) and `ef_search` (128; raised to k when smaller).

    Recall (`recall_check`, a `shrewd_tf.retrieval.recall.RecallCheck`):
    building a sub-linear index (ivf, hnsw, mih with exact=False) measures
    recall@k of its Hamming search against an exact scan on a seeded
    sample of its own codes; `recall_report` (saved in the manifest as
    "recall") holds it, `measured_recall` the recall of the settings in
    use. `add` drops the report (the codes changed).

    Re-ranking (`rerank=True`): the Hamming top-C (C = max(k,
    `rerank_candidates`), default C = 4k) is re-ordered by L1 distance
    between the float query and the float database codes (stable, so L1 ties
    keep the Hamming order) and cut to k. Float codes are kept (4 code_bits
    bytes per code) only when re-ranking; distances are then L1 (float32).

    Args:
        code_bits: code length, a positive multiple of 8.
        method: "flat", "mih", "ivf" or "hnsw".
        rerank: re-rank a Hamming shortlist by float L1 distance.
        rerank_candidates: shortlist size C (None: 4k).
        num_threads: OpenMP threads for faiss calls (default 1).
        recall_check: how recall is measured at build (None: the
            `RecallCheck` defaults); a build policy, not saved.
        **params: method parameters listed above.

    Raises:
        ValueError: on an unknown method or parameter, or bad values.
    """

    kind = BINARY_INDEX

    def __init__(
        self,
        code_bits,
        method="flat",
        rerank=False,
        rerank_candidates=None,
        num_threads=1,
        recall_check=None,
        **params,
    ):
        super().__init__()
        code_bits = check_positive_int("code_bits", code_bits)
        if code_bits % 8:
            raise ValueError(
                "`code_bits` must be a multiple of 8. "
                f"Received: code_bits={code_bits}"
            )
        if method not in METHOD_PARAMS:
            raise ValueError(
                f"`method` must be one of {sorted(METHOD_PARAMS)}. "
                f"Received: method={method!r}"
            )
        unknown = set(params) - set(METHOD_PARAMS[method])
        if unknown:
            raise ValueError(
                f"Unknown parameters for method={method!r}: {sorted(unknown)}. "
                f"Allowed: {sorted(METHOD_PARAMS[method])}"
            )
        self.code_bits = code_bits
        self.method = method
        self.rerank = bool(rerank)
        self.rerank_candidates = check_positive_int(
            "rerank_candidates", rerank_candidates, allow_none=True
        )
        self.num_threads = check_positive_int("num_threads", num_threads)
        self.params = self._checked_params(
            {**METHOD_PARAMS[method], **params}
        )
        # What the caller asked for; build-time defaults (nlist) come from N.
        self._requested_params = dict(self.params)
        self.recall_check = recall_check or RecallCheck()
        self.recall_report = None
        self._engine = None
        self._float_codes = None

    @classmethod
    def default_params(cls, codes):
        """code_bits: the width of `codes`."""
        return {"code_bits": as_codes(codes, "codes").shape[1]}

    def _checked_params(self, params):
        """Returns a validated copy of `params` (nhash resolved)."""
        return checked_params(self.method, self.code_bits, params)

    @property
    def is_exact(self):
        """True when search returns the exact top-k Hamming distances.

        flat and mih with exact=True; False for ivf, hnsw, and whenever
        `rerank` is on (an L1 re-ranking of a Hamming shortlist is not an
        exact L1 search).
        """
        return self.hamming_exact and not self.rerank

    @property
    def hamming_exact(self):
        """True when the Hamming search scans or certifies every code (flat,
        mih with exact=True), re-ranked or not; False: sub-linear."""
        return self.method == "flat" or (
            self.method == "mih" and self.params["exact"]
        )

    @property
    def measured_recall(self):
        """recall@k measured at build for the search settings in use (k in
        `recall_report`), or None: exact, not measured, or settings or
        codes changed since."""
        report = self.recall_report
        if self.hamming_exact or report is None or report.count != len(self):
            return None
        return report.recall_for(self._search_settings())

    def _search_settings(self):
        return {n: self.params[n] for n in SEARCH_PARAMS[self.method]}

    def get_config(self):
        return {
            "code_bits": self.code_bits,
            "method": self.method,
            "rerank": self.rerank,
            "rerank_candidates": self.rerank_candidates,
            "num_threads": self.num_threads,
            **self.params,
        }

    def set_search_params(self, **params):
        """Changes search-time parameters without rebuilding.

        mih: nflip, exact; ivf: nprobe; hnsw: ef_search.

        Raises:
            ValueError: for parameters that need a rebuild, or bad values.
        """
        allowed = SEARCH_PARAMS[self.method]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(
                f"Search parameters of method={self.method!r} are "
                f"{list(allowed)}. Received: {sorted(unknown)}"
            )
        if self._engine is not None and params.get("nprobe", 0) is None:
            raise ValueError(
                "nprobe=None (tuned) applies at build; give a number. "
                "Received: nprobe=None"
            )
        self.params = self._checked_params({**self.params, **params})
        self._requested_params.update(params)
        if self._engine is not None:
            self._apply_search_params()

    def _check_codes(self, codes, name):
        return as_codes(codes, name, width=self.code_bits, unit_range=True)

    def _new_engine(self, packed):
        if self.method == "ivf":  # nlist from the codes at hand
            nlist = self._requested_params["nlist"]
            self.params["nlist"] = nlist if nlist is not None else min(
                len(packed), max(1, round(2 * math.sqrt(len(packed))))
            )
        return faiss_engines.new_engine(
            self.method, self.code_bits, self.params, packed
        )

    def _apply_search_params(self):
        faiss_engines.apply_search_params(
            self._engine, self.method, self.params
        )

    def _build_engine(self, codes):
        packed = pack_bits(codes)
        with faiss_engines.faiss_threads(self.num_threads):
            engine = self._new_engine(packed)
            engine.add(packed)
        self._engine = engine
        self._apply_search_params()
        self._check_recall(packed)
        self._float_codes = (
            codes.astype(np.float32) if self.rerank else None
        )

    def build_packed(
        self, packed, ids=None, float_codes=None, chunk_size=None
    ):
        """Replaces the content with packed binary codes, added in chunks.

        The same index as `build(codes, ids)` when `packed` is
        `pack_bits(codes)`, without the float codes unless re-ranking.

        Args:
            packed: uint8 [N, code_bits / 8] (`shrewd_tf.ops.bits`).
            ids: as `build`; kept as is (not copied) when int64 or str.
            float_codes: float32 [N, code_bits], kept as is (not copied)
                for re-ranking; required when `rerank`, ignored otherwise.
            chunk_size: codes per faiss `add` (None: all at once).

        Returns:
            self.

        Raises:
            ValueError: on a bad shape or dtype, or float codes missing.
        """
        packed = np.asarray(packed)
        if packed.dtype != np.uint8 or packed.shape[1:] != (
            self.code_bits // 8,
        ):
            raise ValueError(
                f"`packed` must be uint8 [N, {self.code_bits // 8}]. "
                f"Received: packed.dtype={packed.dtype}, "
                f"packed.shape={packed.shape}"
            )
        if self.rerank:
            if float_codes is None or np.shape(float_codes) != (
                len(packed), self.code_bits
            ):
                shape = None if float_codes is None else np.shape(float_codes)
                raise ValueError(
                    "`float_codes` [N, code_bits] are needed to re-rank. "
                    f"Received: float_codes.shape={shape}"
                )
            float_codes = as_codes(float_codes, "float_codes")
            float_codes = np.asarray(float_codes, np.float32)
        ids = as_ids(ids, len(packed), 0, None, copy=False)
        step = chunk_size or max(1, len(packed))
        with faiss_engines.faiss_threads(self.num_threads):
            engine = self._new_engine(packed)
            for start in range(0, len(packed), step):
                engine.add(packed[start:start + step])
        self._engine = engine
        self._apply_search_params()
        self._check_recall(packed)
        self._float_codes = float_codes if self.rerank else None
        self._code_width = self.code_bits
        self._ids = ids
        self._metadata = {}
        return self

    def _check_recall(self, packed):
        """Measures recall at build (`recall.measure_recall`); ivf with
        nprobe=None keeps the smallest nprobe reaching the target."""
        self.recall_report = None
        if self.hamming_exact or not len(packed):
            return
        settings = [self._search_settings()]
        if self.method == "ivf" and self._requested_params["nprobe"] is None:
            settings = nprobe_settings(self.params["nlist"], self.recall_check)

        def search(setting, queries, k):
            self.params.update(setting)
            return self._hamming_search(queries, k)[1]

        report = measure_recall(
            packed, settings, search, self.recall_check, self.code_bits
        )
        self.params.update(report.params)
        self._apply_search_params()
        self.recall_report = report
        log.info("%s over %d codes: recall@%d %.4f at %s (tried %s)",
                 self.method, len(packed), report.k, report.recall,
                 report.params, report.tried)

    def _add_engine(self, codes):
        self.recall_report = None  # measured over other codes
        with faiss_engines.faiss_threads(self.num_threads):
            self._engine.add(pack_bits(codes))
        if self.rerank:
            self._float_codes = np.concatenate(
                [self._float_codes, codes.astype(np.float32)]
            )

    def _hamming_search(self, packed, k):
        """Returns (rows int64 [Q, k'], Hamming int32 [Q, k']), k' <= k."""
        k = min(k, self._engine.ntotal)
        if k == 0 or len(packed) == 0:
            return (
                np.empty((len(packed), 0), np.int64),
                np.empty((len(packed), 0), np.int32),
            )
        params = None
        if self.method == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.params["ef_search"], k)
        elif self.method == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = self.params["nprobe"]
        with faiss_engines.faiss_threads(self.num_threads):
            distances, rows = self._engine.search(packed, k, params=params)
            if self.method == "mih" and self.params["exact"]:
                self._certify_mih(packed, rows, distances, k)
        return rows, distances

    def _certify_mih(self, packed, rows, distances, k):
        """Re-searches with the flat storage the rows MIH cannot certify."""
        radius = self.params["nhash"] * (self.params["nflip"] + 1) - 1
        last = distances[:, k - 1]
        certified = last <= radius
        if k == self._engine.ntotal:
            certified |= last != HAMMING_PAD
        redo = np.flatnonzero(~certified)
        if len(redo):
            storage = faiss.downcast_IndexBinary(self._engine.storage)
            redo_distances, redo_rows = storage.search(packed[redo], k)
            distances[redo], rows[redo] = redo_distances, redo_rows

    def _search_rows(self, queries, k):
        packed = pack_bits(queries)
        if not self.rerank:
            rows, distances = self._hamming_search(packed, k)
            return pad_columns(rows, distances, k, HAMMING_PAD)
        shortlist = max(k, self.rerank_candidates or 4 * k)
        rows, _ = self._hamming_search(packed, shortlist)
        rows, distances = rerank_l1(
            self._float_codes, queries.astype(np.float32), rows, k
        )
        return pad_columns(rows, distances, k, np.inf)

    def _manifest_fields(self):
        if self.recall_report is None:
            return {}
        return {"recall": self.recall_report.to_json()}

    def _write_engine(self, data_dir):
        path = os.path.join(data_dir, "faiss.index")
        faiss.write_index_binary(self._engine, path)
        if self.rerank:
            path = os.path.join(data_dir, "float_codes.npy")
            np.save(path, self._float_codes)

    def _read_engine(self, data_dir, manifest):
        path = os.path.join(data_dir, "faiss.index")
        engine = faiss.read_index_binary(path)
        if engine.ntotal != manifest["count"] or engine.d != self.code_bits:
            raise IndexFormatError(
                f"{path} holds {engine.ntotal} "
                f"codes of {engine.d} bits; the manifest says "
                f"{manifest['count']} of {self.code_bits}"
            )
        self._engine = engine
        self._apply_search_params()
        self.recall_report = report_of_manifest(manifest, data_dir)
        if self.rerank:
            self._float_codes = np.load(
                os.path.join(data_dir, "float_codes.npy"), allow_pickle=False
            )

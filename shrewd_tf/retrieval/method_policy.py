"""Which `BinaryHammingIndex` method a database gets: the "auto" policy.

`binary_method="auto"` (the default of `shrewd index build` and the
pipeline's index stage) chooses by the number of codes N:

* N <= `AUTO_FLAT_MAX_CODES` (1,000,000): "flat", the exact scan. At 1M
  64-bit codes one query scans 8 MB in about 1.5 ms on one thread
  (docs/benchmarks.md), within the 5 ms p99 goal with HTTP on top.
* larger: "ivf" with nlist = min(2 sqrt(N), `AUTO_MAX_NLIST`) and nprobe
  tuned at build (`shrewd_tf.retrieval.recall`: the smallest nprobe whose
  recall@10 on 1,000 of the codes reaches 0.99). If no nprobe up to the
  cap reaches it (codes without cluster structure), the exact "flat"
  index is built instead and a warning says so. nlist is capped because
  IVF training costs about 256 nlist^2 code-centroid distances per k-means
  pass: nlist = 1000 trains in about 72 s on one thread, 2 sqrt(N) at 10M
  (6,325) would take half an hour.

Any other method name builds that method as asked (its recall is still
measured when it is sub-linear). `build_binary_index` is the one entry
point of the builder and the benchmarks.
"""

import logging
import math

from shrewd_tf.retrieval.registry import index_class
from shrewd_tf import contract

log = logging.getLogger(__name__)

AUTO = "auto"
METHODS = (AUTO, "flat", "mih", "ivf", "hnsw")
AUTO_FLAT_MAX_CODES = 1_000_000
AUTO_MAX_NLIST = 1024
# Parameters "auto" passes on: to ivf (nlist, nprobe) and to both.
_AUTO_PARAMS = ("nlist", "nprobe", "rerank_candidates", "recall_check")


def auto_nlist(count):
    """IVF lists "auto" uses for `count` codes."""
    return max(1, min(count, AUTO_MAX_NLIST, round(2 * math.sqrt(count))))


def new_binary_index(code_bits, method, **kwargs):
    """An empty `BinaryHammingIndex` for `method` ("auto": a flat one, the
    policy chooses at build); checks the parameters early.

    Raises:
        ValueError: an unknown method or parameters the method does not take.
    """
    cls = index_class(contract.BINARY_INDEX)
    if method not in METHODS:
        raise ValueError(
            f"`binary_method` must be one of {list(METHODS)}. "
            f"Received: binary_method={method!r}"
        )
    if method != AUTO:
        return cls(code_bits=code_bits, method=method, **kwargs)
    _check_auto_params(kwargs)
    ivf_only = {name: kwargs.pop(name) for name in ("nlist", "nprobe")
                if name in kwargs}
    cls(code_bits=code_bits, method="ivf", **kwargs, **ivf_only)  # checks
    return cls(code_bits=code_bits, method="flat", **kwargs)


def _check_auto_params(kwargs):
    known = {"rerank", "num_threads", *_AUTO_PARAMS}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"binary_method='auto' takes {sorted(_AUTO_PARAMS)} (flat or "
            f"ivf); use an explicit method for {unknown}"
        )


def build_binary_index(
    code_bits, method, packed, ids=None, float_codes=None, chunk_size=None,
    **kwargs,
):
    """Builds a `BinaryHammingIndex` over packed codes by `method`.

    Args:
        code_bits: code width.
        method: "auto" (see the module docstring) or a method name.
        packed, ids, float_codes, chunk_size: as
            `BinaryHammingIndex.build_packed`.
        **kwargs: constructor arguments (rerank, num_threads,
            recall_check, method parameters).

    Returns:
        The built index; `index.method` says which was chosen.

    Raises:
        ValueError: as `new_binary_index`, or from the build.
    """
    build = dict(ids=ids, float_codes=float_codes, chunk_size=chunk_size)
    if method != AUTO:
        index = new_binary_index(code_bits, method, **kwargs)
        return index.build_packed(packed, **build)
    flat = new_binary_index(code_bits, AUTO, **kwargs)  # checks kwargs
    count = len(packed)
    if count <= AUTO_FLAT_MAX_CODES:
        log.info("auto: %d codes <= %d, flat (exact) index", count,
                 AUTO_FLAT_MAX_CODES)
        return flat.build_packed(packed, **build)
    ivf_kwargs = dict(kwargs)
    if ivf_kwargs.get("nlist") is None:
        ivf_kwargs["nlist"] = auto_nlist(count)
    ivf = new_binary_index(code_bits, "ivf", **ivf_kwargs)
    ivf.build_packed(packed, **build)
    report = ivf.recall_report
    if report is not None and report.meets_target:
        log.info(
            "auto: ivf nlist=%d nprobe=%d, recall@%d %.4f >= %.2f",
            ivf.params["nlist"], ivf.params["nprobe"], report.k,
            report.recall, report.target,
        )
        return ivf
    if report is None:
        log.warning(
            "auto: ivf recorded no recall (recall_check off); serving the "
            "exact flat index instead"
        )
    else:
        log.warning(
            "auto: ivf reached recall@%d %.4f < %.2f (tried %s); serving "
            "the exact flat index instead",
            report.k, report.recall, report.target,
            [row["nprobe"] for row in report.tried],
        )
    del ivf
    return flat.build_packed(packed, **build)

"""Method parameters of `BinaryHammingIndex`: defaults and checks.

`METHOD_PARAMS` lists each method's parameters with their defaults (None:
set at build from N, or tuned at build), `SEARCH_PARAMS` those that change
without a rebuild, `checked_params` validates a method's parameters (each
error quotes the value received). What each parameter does is in the
`shrewd_tf.retrieval.hamming_index.BinaryHammingIndex` docstring.
"""

import numpy as np

from shrewd_tf.ops.validation import check_positive_int

METHOD_PARAMS = {
    "flat": {},
    # nhash tables of b = code_bits // nhash bits; a bucket probe flips up
    # to nflip bits; exact: re-scan rows the probe radius cannot certify.
    "mih": {"nhash": None, "nflip": 1, "exact": True},
    # nprobe None: tuned at build (`shrewd_tf.retrieval.recall`).
    "ivf": {"nlist": None, "nprobe": None},
    "hnsw": {"M": 32, "ef_construction": 40, "ef_search": 128},
}
SEARCH_PARAMS = {
    "flat": (),
    "mih": ("nflip", "exact"),
    "ivf": ("nprobe",),
    "hnsw": ("ef_search",),
}


def checked_params(method, code_bits, params):
    """Returns a validated copy of `params` of `method` (nhash resolved).

    Raises:
        ValueError: a bad value, quoting it.
    """
    p = dict(params)
    if method == "mih":
        if p["nhash"] is None:
            p["nhash"] = max(1, code_bits // 16)
        check_positive_int("nhash", p["nhash"])
        bits = code_bits // p["nhash"]
        if bits < 1 or bits > 64:
            raise ValueError(
                "`nhash` must give substrings of 1..64 bits "
                f"(code_bits // nhash). Received: nhash={p['nhash']}"
            )
        if isinstance(p["nflip"], bool) or not isinstance(
            p["nflip"], (int, np.integer)
        ) or not 0 <= p["nflip"] <= bits:
            raise ValueError(
                f"`nflip` must be an integer in [0, {bits}]. "
                f"Received: nflip={p['nflip']!r}"
            )
        p["exact"] = bool(p["exact"])
    elif method == "ivf":
        check_positive_int("nlist", p["nlist"], allow_none=True)
        check_positive_int("nprobe", p["nprobe"], allow_none=True)
    elif method == "hnsw":
        for name in ("M", "ef_construction", "ef_search"):
            check_positive_int(name, p[name])
    return p

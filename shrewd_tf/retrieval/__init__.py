"""Retrieval indexes over codes: the interface and registry (`base`), the
binary Hamming index on faiss (`hamming_index`), ScaNN (`scann_index`),
their checksummed files (`files`) and building them from a model's codes
(`builder`).

    from shrewd_tf import retrieval
    index = retrieval.BinaryHammingIndex(64).build(codes, ids)
    retrieval.load_index("indexes/fmnist")
"""

from shrewd_tf.retrieval.base import *  # noqa: F401,F403 (base.__all__)
from shrewd_tf.retrieval.base import __all__ as _BASE_ALL

__all__ = [*_BASE_ALL, "BinaryHammingIndex", "ScannIndex"]


def __getattr__(name):
    """The index classes, imported on first use (faiss, ScaNN)."""
    if name == "BinaryHammingIndex":
        from shrewd_tf.retrieval.hamming_index import BinaryHammingIndex

        return BinaryHammingIndex
    if name == "ScannIndex":
        from shrewd_tf.retrieval.scann_index import ScannIndex

        return ScannIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Retrieval indexes over codes: the interface (`base`), the registry
(`registry`), the
binary Hamming index on faiss (`hamming_index`), ScaNN (`scann_index`),
array checks (`arrays`), the metadata table (`metadata`), their
checksummed files (`files`) and building them from a model's codes
(`builder`).

    from shrewd_tf import retrieval
    index = retrieval.BinaryHammingIndex(64).build(codes, ids)
    index = retrieval.build_index("binary", codes, ids)
    retrieval.load_index("indexes/fmnist/binary")

The index classes are imported on first use (faiss, ScaNN), through the
registry (`registry`): `retrieval.ScannIndex is
retrieval.index_class("scann")`.
"""

from shrewd_tf import contract
from shrewd_tf.retrieval.base import *  # noqa: F401,F403 (base.__all__)
from shrewd_tf.retrieval.base import __all__ as _BASE_ALL
from shrewd_tf.retrieval.registry import *  # noqa: F401,F403
from shrewd_tf.retrieval.registry import __all__ as _REGISTRY_ALL
from shrewd_tf.retrieval.registry import index_class

_CLASS_KINDS = {
    kind.class_name: kind.name for kind in contract.INDEX_KIND_TABLE
}

__all__ = [*_BASE_ALL, *_REGISTRY_ALL, *_CLASS_KINDS]


def __getattr__(name):
    """The index classes by name, imported on first use."""
    if name in _CLASS_KINDS:
        return index_class(_CLASS_KINDS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The registry of index classes by kind and the factories over it.

`register_index` registers an index class under its kind
(`shrewd_tf.contract.INDEX_KINDS`); `index_class(kind)` imports a kind's
module on first use; `build_index(kind, codes)` and `load_index(directory)`
look the kind up here. This module never imports the implementations (they
import it).
"""

import importlib

from shrewd_tf import contract
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval.base import _manifest_kind

__all__ = ["build_index", "index_class", "load_index", "register_index"]

# {kind: index class}, filled by `register_index` when an index module is
# imported. `index_class` imports the module of a kind on first use, so
# this module never imports the implementations (they import it).
_REGISTRY = {}
_MODULES = {
    contract.BINARY_INDEX: "shrewd_tf.retrieval.hamming_index",
    contract.SCANN_INDEX: "shrewd_tf.retrieval.scann_index",
}


def register_index(cls):
    """Class decorator: registers an index class under its `kind`.

    Sets `cls.index_type`, the kind's manifest name (`shrewd_tf.contract`).

    Raises:
        ValueError: an unknown kind, or a kind registered by another class.
    """
    kind = contract.index_kind(cls.kind)
    if kind.name != cls.kind:
        raise ValueError(
            f"{cls.__name__}.kind must be a kind name, not a manifest name. "
            f"Received: kind={cls.kind!r}"
        )
    registered = _REGISTRY.get(kind.name)
    if registered is not None and registered.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"Index kind {kind.name!r} is already registered by "
            f"{registered.__qualname__}. Received: {cls.__qualname__}"
        )
    cls.index_type = kind.index_type
    _REGISTRY[kind.name] = cls
    return cls


def index_class(kind):
    """Returns the index class of `kind` (a kind or a manifest index_type).

    Imports the class's module on first use (faiss for "binary").

    Raises:
        ValueError: an unknown or unregistered kind, quoting it.
    """
    name = contract.index_kind(kind).name
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise ValueError(
            f"No index class is registered for kind={kind!r}. "
            f"Registered: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[name]


def build_index(kind, codes, ids=None, **params):
    """Builds an index of `kind` over `codes`.

    Args:
        kind: "binary" (`BinaryHammingIndex`; code_bits defaults to
            codes.shape[1]) or "scann" (`ScannIndex`); the manifest names
            "binary_hamming" and "scann" are accepted too.
        codes: [N, code_bits] codes.
        ids: optional ids [N].
        **params: constructor arguments of the index class.

    Returns:
        The built index.

    Raises:
        ValueError: on an unknown kind or bad codes / parameters.
    """
    cls = index_class(kind)
    params = {**cls.default_params(codes), **params}
    return cls(**params).build(codes, ids)


def load_index(directory):
    """Loads any saved index, dispatching on its manifest's index_type.

    Raises:
        IndexFormatError: naming the bad file (see `RetrievalIndex.load`).
    """
    manifest, _ = index_files.read_manifest(directory, verify_files=False)
    return index_class(_manifest_kind(directory, manifest)).load(directory)

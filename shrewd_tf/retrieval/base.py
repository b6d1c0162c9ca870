"""Retrieval indexes over hash codes: the interface and the registry.

`RetrievalIndex` is the one interface every index implements (TFRS
`TopK`-like), `register_index` the registry of index classes by kind
(`shrewd_tf.contract.INDEX_KINDS`), `build_index(kind, codes)` and
`load_index(directory)` the factories that look the kind up there. The
indexes live in their own modules, which import this one and register
their class; `index_class(kind)` imports a kind's module on first use:

* "binary": `BinaryHammingIndex` (`shrewd_tf.retrieval.hamming_index`):
  Hamming search over packed binary codes with faiss binary indexes (flat,
  mih, ivf, hnsw), with optional re-ranking of a Hamming shortlist by L1
  distance between float codes.
* "scann": `ScannIndex` (`shrewd_tf.retrieval.scann_index`): ScaNN
  (pybind searcher, no TF ops) over float codes, either brute force or
  tree + asymmetric hashing (AH) + exact re-ordering.

Every index has `build(codes, ids=None)`, `add(codes, ids=None)`,
`search(queries, k) -> (ids [Q, k], distances [Q, k])`, `save(directory)`,
`load(directory)` (classmethod), `len()`, `is_exact` and a metadata table
(`set_metadata(ids, label=..., caption=..., image_uri=...)`,
`metadata(ids)`).

Conventions:

* Bits: bit j of a code is `codes[:, j] > 0.5` (so 0.5 itself is 0),
  packed MSB-first (`shrewd_tf.ops.bits.pack_bits`, `np.packbits` order:
  bit j in byte j // 8 at position 7 - j % 8). `code_bits` must be a
  multiple of 8 (faiss stores whole bytes). `BinaryHammingIndex` takes
  float codes (any finite value) or 0/1 (bool, int) arrays; `ScannIndex`
  any finite floats.
* Ids: int64 (>= 0) or strings (non-empty), unique within an index; default
  `arange`. Missing neighbours (k > len(index), or an approximate method
  that found fewer than k candidates) are padded with id -1 (int ids) or ""
  (string ids) and distance `HAMMING_PAD` (int32 max, as faiss does) for
  Hamming distances or `inf` for float distances.
* Distances, smaller is nearer: Hamming (int32, number of differing bits);
  L1 between float codes (float32) when `rerank=True`; squared L2 (float32)
  or the negated inner product -<q, x> (float32) for `ScannIndex`.
* Files: `save(directory)` commits atomically and `load` refuses missing,
  truncated or corrupted files with an `IndexFormatError` naming the file
  (layout and guarantees in `shrewd_tf.retrieval.files`). The manifest
  names the kind by its `index_type` ("binary_hamming", "scann"; see
  `shrewd_tf.contract`).

Example:
    index = retrieval.build_index("binary", db_codes, ids=db_ids)
    ids, hamming = index.search(query_codes, k=250)
    index.save("/tmp/hamming_index")
    same = retrieval.load_index("/tmp/hamming_index")
"""

import logging
import os
import threading

import numpy as np

from shrewd_tf import contract
from shrewd_tf import io as shrewd_io
from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval.files import FORMAT_VERSION
from shrewd_tf.retrieval.files import IDS_FILE
from shrewd_tf.retrieval.files import MANIFEST_FILE
from shrewd_tf.retrieval.files import METADATA_FILE
from shrewd_tf.retrieval.files import IndexFormatError
from shrewd_tf.retrieval.metadata import SortedIds
from shrewd_tf.retrieval.metadata import metadata_rows
from shrewd_tf.retrieval.metadata import update_metadata
from shrewd_tf.retrieval.arrays import HAMMING_PAD
from shrewd_tf.retrieval.arrays import INT_ID_PAD
from shrewd_tf.retrieval.arrays import STR_ID_PAD
from shrewd_tf.retrieval.arrays import as_ids
from shrewd_tf.retrieval.arrays import check_k
from shrewd_tf.retrieval.arrays import pack_codes

# Guards the sorted-id caches' first build (one sort per id array).
_KNOWN_IDS_LOCK = threading.Lock()

__all__ = [
    "FORMAT_VERSION",
    "HAMMING_PAD",
    "IDS_FILE",
    "INT_ID_PAD",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "STR_ID_PAD",
    "IndexFormatError",
    "RetrievalIndex",
    "pack_codes",
]

# === Interface ===


class RetrievalIndex:
    """Shared interface: ids, padding, metadata and the manifest-based files.

    Subclasses set `kind` (a `shrewd_tf.contract.INDEX_KINDS` name),
    implement `_check_codes`, `_build_engine`, `_add_engine`,
    `_search_rows`, `_write_engine`, `_read_engine`, `get_config` and
    `is_exact`, and register with `@register_index`.
    """

    kind = None
    # The kind's name in manifest.json (set by `register_index`).
    index_type = None

    def __init__(self):
        self._ids = None
        self._metadata = {}
        self._code_width = None

    def __len__(self):
        return 0 if self._ids is None else len(self._ids)

    @property
    def is_exact(self):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    def _manifest_fields(self):
        """Extra manifest fields of the subclass (read in `_read_engine`)."""
        return {}

    @classmethod
    def default_params(cls, codes):
        """Constructor arguments `build_index` derives from `codes`."""
        del codes
        return {}

    @property
    def ids(self):
        """Read-only ids in insertion order (row r has id ids[r])."""
        if self._ids is None:
            return None
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def build(self, codes, ids=None):
        """Replaces the index content with `codes`.

        Args:
            codes: [N, code_bits] codes (see the subclass for the dtype).
            ids: None (`arange(N)`), int64 >= 0 or non-empty strings [N],
                unique.

        Returns:
            self.

        Raises:
            ValueError: on bad codes or ids, quoting the value.
        """
        codes = self._check_codes(codes, "codes")
        ids = as_ids(ids, len(codes), 0, None)
        self._build_engine(codes)
        self._code_width = codes.shape[1]
        self._ids = ids
        self._metadata = {}
        return self

    def add(self, codes, ids=None):
        """Appends `codes` to a built index (no retraining of IVF / ScaNN).

        Args:
            codes: [M, code_bits] codes.
            ids: None (continues `arange` after the largest int id), or
                new unique ids of the index's id type.

        Returns:
            self.

        Raises:
            ValueError: if the index is not built, or on bad codes or ids.
        """
        self._require_built()
        codes = self._check_codes(codes, "codes")
        start = 0
        if len(self._ids) and self._ids.dtype.kind != "U":
            start = int(self._ids.max()) + 1
        ids = as_ids(ids, len(codes), start, self._ids)
        if len(codes):
            self._add_engine(codes)
        self._ids = (
            np.concatenate([self._ids, ids]) if len(self._ids) else ids
        )
        return self

    def search(self, queries, k):
        """Returns the `k` nearest ids and their distances for each query.

        Args:
            queries: [Q, code_bits] codes.
            k: positive number of neighbours.

        Returns:
            (ids [Q, k], distances [Q, k]), nearest first; rows with fewer
            than k neighbours are padded (see the module docstring).

        Raises:
            ValueError: on bad queries or k, quoting the value.
        """
        self._require_built()
        k = check_k(k)
        queries = self._check_codes(queries, "queries")
        rows, distances = self._search_rows(queries, k)
        return self._rows_to_ids(rows), distances

    # --- metadata ---

    def set_metadata(self, ids, **columns):
        """Stores columns (e.g. label, caption, image_uri) for existing ids.

        Args:
            ids: [M] ids already in the index.
            **columns: name -> [M] JSON-serialisable values; merged into the
                id's existing row.

        Raises:
            ValueError: on unknown ids, length mismatch or the column "id".
        """
        self._require_built()
        update_metadata(self._metadata, ids, self._ids, columns)

    def metadata(self, ids):
        """Returns the metadata rows of `ids` ([M] or [Q, k] from search).

        Returns:
            A list (of lists for 2-D ids) of dicts; {} for ids without
            metadata, None for padding ids.

        Raises:
            KeyError: for ids that are neither in the index nor padding.
        """
        self._require_built()
        return metadata_rows(
            self._metadata, ids, self._known_ids(), self._id_pad()
        )

    @property
    def code_width(self):
        """Bits (binary) or float dimensions the index was built with."""
        return self._code_width

    def _known_ids(self):
        """The ids, sorted for binary search (`metadata.SortedIds`), cached
        until the id array changes: a search result's metadata costs
        microseconds, not a scan of N."""
        cache = getattr(self, "_known_ids_cache", None)
        if cache is None or cache[0] is not self._ids:
            with _KNOWN_IDS_LOCK:  # Concurrent first searches sort once.
                cache = getattr(self, "_known_ids_cache", None)
                if cache is None or cache[0] is not self._ids:
                    cache = (self._ids, SortedIds(self._ids))
                    self._known_ids_cache = cache
        return cache[1]

    # --- persistence ---

    def save(self, directory):
        """Writes the index to `directory` atomically (see module docstring).

        Args:
            directory: folder path; created if missing. Other files in it
                are left alone, except older `data-<12 hex>` folders.
        """
        self._require_built()
        manifest = {
            "index_type": self.index_type,
            "code_bits": self._code_width,
            "count": len(self),
            "id_type": "str" if self._ids.dtype.kind == "U" else "int64",
            "config": self.get_config(),
            **self._manifest_fields(),
        }

        def write_data(data_dir):
            index_files.write_ids_and_metadata(
                data_dir, self._ids, self._metadata
            )
            self._write_engine(data_dir)

        index_files.save_index_files(directory, write_data, manifest)
        logging.info(
            "Saved %s (%d codes) to %s", self.index_type, len(self), directory
        )

    @classmethod
    def load(cls, directory):
        """Reads an index written by `save`.

        Raises:
            IndexFormatError: naming the file that is missing, truncated,
                corrupted, of another format version or another index type.
        """
        if not shrewd_io.is_local(directory):
            # faiss and ScaNN read local files: load from a local copy.
            index_files.read_manifest(directory)  # names remote files
            with index_files.local_copy(directory) as local:
                return cls.load(local)
        manifest, data_dir = index_files.read_manifest(directory)
        if _manifest_kind(directory, manifest) != cls.kind:
            raise IndexFormatError(
                f"{os.path.join(directory, MANIFEST_FILE)} holds a "
                f"{manifest['index_type']!r} index, not {cls.index_type!r}"
            )
        try:
            index = cls(**manifest["config"])
        except (TypeError, ValueError) as e:
            raise IndexFormatError(
                f"{os.path.join(directory, MANIFEST_FILE)} has an invalid "
                f"config: {e}"
            ) from e
        index._code_width = manifest["code_bits"]
        index._ids = index_files.read_ids(data_dir)
        index._read_engine(data_dir, manifest)
        index._metadata = index_files.read_metadata(data_dir)
        if len(index._ids) != manifest["count"]:
            raise IndexFormatError(
                f"{os.path.join(data_dir, IDS_FILE)} holds {len(index._ids)} "
                f"ids but the manifest says {manifest['count']}"
            )
        return index

    # --- helpers ---

    def _require_built(self):
        if self._ids is None:
            raise ValueError(
                f"The {type(self).__name__} is empty: call build() first."
            )

    def _id_pad(self):
        if self._ids is not None and self._ids.dtype.kind == "U":
            return STR_ID_PAD
        return INT_ID_PAD

    def _rows_to_ids(self, rows):
        if not len(self._ids):
            return np.full(rows.shape, self._id_pad(), dtype=self._ids.dtype)
        missing = rows < 0
        if not missing.any():  # the usual case: one gather, no masks
            return self._ids[rows]
        ids = self._ids[np.where(missing, 0, rows)]
        ids[missing] = self._id_pad()
        return ids


# === Manifests ===


def _manifest_kind(directory, manifest):
    """The kind name a manifest's index_type stands for."""
    try:
        return contract.index_kind(manifest["index_type"]).name
    except ValueError:
        raise IndexFormatError(
            f"{os.path.join(directory, MANIFEST_FILE)} has unknown "
            f"index_type={manifest['index_type']!r}"
        ) from None

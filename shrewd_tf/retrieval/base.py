"""Retrieval indexes over hash codes, behind one TFRS `TopK`-like interface.

This module holds the shared interface (`RetrievalIndex`), the factory
`build_index(kind, codes, ...)`, the manifest-dispatching loader
`load_index(directory)`, `pack_codes` and the conventions below. The
indexes live in their own modules and are re-exported here:

* `BinaryHammingIndex` (`shrewd_tf.retrieval.hamming_index`): Hamming search over
  packed binary codes with faiss binary indexes (flat, mih, ivf, hnsw),
  with optional re-ranking of a Hamming shortlist by L1 distance between
  float codes.
* `ScannIndex` (`shrewd_tf.retrieval.scann_index`): ScaNN (pybind searcher, no TF
  ops) over float codes, either brute force or tree + asymmetric hashing
  (AH) + exact re-ordering.

Every index has `build(codes, ids=None)`, `add(codes, ids=None)`,
`search(queries, k) -> (ids [Q, k], distances [Q, k])`, `save(directory)`,
`load(directory)` (classmethod), `len()`, `is_exact` and a metadata table
(`set_metadata(ids, label=..., caption=..., image_uri=...)`,
`metadata(ids)`).

Conventions:

* Bits: bit j of a code is `codes[:, j] > 0.5` (so 0.5 itself is 0); codes
  are packed with `np.packbits(bits, axis=1)`, MSB-first within each byte,
  bit j in byte j // 8 at position 7 - j % 8. `code_bits` must be a multiple
  of 8 (faiss stores whole bytes). `BinaryHammingIndex` takes float codes
  (any finite value, bit = code > 0.5) or 0/1 (bool, int) arrays;
  `ScannIndex` any finite floats.
* Ids: int64 (>= 0) or strings (non-empty), unique within an index; default
  `arange`. Missing neighbours (k > len(index), or an approximate method
  that found fewer than k candidates) are padded with id -1 (int ids) or ""
  (string ids) and distance `HAMMING_PAD` (int32 max, as faiss does) for
  Hamming distances or `inf` for float distances.
* Distances, smaller is nearer: Hamming (int32, number of differing bits);
  L1 between float codes (float32) when `rerank=True`; squared L2 (float32)
  or the negated inner product -<q, x> (float32) for `ScannIndex`.
* Threads: faiss runs on `num_threads` OpenMP threads (default 1), see
  `shrewd_tf.retrieval.hamming_index`.
* Files: `save(directory)` writes the data files into a fresh
  `directory/data-<hex>/` folder, then commits by atomically replacing
  `directory/manifest.json` (format_version, index type, code_bits, count,
  config, and size + sha256 of every data file); only then are older
  `data-*` folders removed. A save that fails leaves the previous index
  loadable. `load` refuses a missing, truncated or corrupted data file and
  any other format version with an `IndexFormatError` naming the file.
  One writer per directory: a reader racing a save may find its data folder
  removed and should retry. The metadata table is `metadata.jsonl`, one
  JSON object per id: `{"id": 3, "label": 1, "caption": "...",
  "image_uri": "..."}`. The file helpers are in `shrewd_tf.retrieval.files`.

Example:

```python
index = BinaryHammingIndex(code_bits=64, method="flat")
index.build(db_codes, ids=db_ids)
ids, hamming = index.search(query_codes, k=250)
index.save("/tmp/hamming_index")
same = load_index("/tmp/hamming_index")
```
"""

import json
import logging
import os

import numpy as np

from shrewd_tf.retrieval import files as index_files
from shrewd_tf.retrieval.files import FORMAT_VERSION
from shrewd_tf.retrieval.files import IDS_FILE
from shrewd_tf.retrieval.files import MANIFEST_FILE
from shrewd_tf.retrieval.files import METADATA_FILE
from shrewd_tf.retrieval.files import IndexFormatError

# Also `BinaryHammingIndex` and `ScannIndex`, served by `__getattr__` below.
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
    "build_index",
    "load_index",
    "pack_codes",
]

INT_ID_PAD = -1
STR_ID_PAD = ""
HAMMING_PAD = int(np.iinfo(np.int32).max)


# === Validation ===



def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
    return int(k)


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _as_codes(codes, name, width=None, unit_range=False):
    """Returns `codes` as a finite 2-D numeric array or raises ValueError."""
    array = np.asarray(codes)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"`{name}` must be numeric or boolean. "
            f"Received: {name}.dtype={array.dtype}"
        )
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array [num_codes, code_bits]. "
            f"Received: {name}.shape={array.shape}"
        )
    if width is not None and array.shape[1] != width:
        raise ValueError(
            f"`{name}` must have {width} columns. "
            f"Received: {name}.shape={array.shape}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"`{name}` must be finite. Received: {name}[{bad[0]}, {bad[1]}]="
            f"{array[bad[0], bad[1]]}"
        )
    # Float codes of any value binarise at 0.5 (a trained code head is
    # linear and may overshoot [0, 1]); integer arrays must be 0/1 bits.
    if unit_range and array.size and array.dtype.kind in "iu":
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise ValueError(
                f"integer `{name}` must be 0/1 bits. "
                f"Received: {name} with min={low}, max={high}"
            )
    return array


def pack_codes(codes):
    """Binarises codes at 0.5 and packs them MSB-first, as faiss expects.

    Args:
        codes: finite float codes (bit = code > 0.5) or 0/1 bits,
            [N, code_bits] with
            code_bits a multiple of 8.

    Returns:
        uint8 [N, code_bits // 8]: bit j (`codes[:, j] > 0.5`) is bit
        7 - j % 8 of byte j // 8 (`np.packbits` order).

    Raises:
        ValueError: if codes are not 2-D, not finite, outside [0, 1], or
            their width is not a multiple of 8.
    """
    array = _as_codes(codes, "codes", unit_range=True)
    if array.shape[1] % 8:
        raise ValueError(
            "`codes` width must be a multiple of 8. "
            f"Received: codes.shape={array.shape}"
        )
    return np.packbits(array > 0.5, axis=1)


def _as_ids(ids, count, start, existing):
    """Returns new ids as int64 or str [count], checked against `existing`."""
    if ids is None:
        if existing is not None and existing.dtype.kind == "U":
            raise ValueError(
                "`ids` are required: this index holds string ids. "
                "Received: ids=None"
            )
        return np.arange(start, start + count, dtype=np.int64)
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"`ids` must be 1-D with one id per code ({count}). "
            f"Received: ids.shape={array.shape}"
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.int64)
        if count and array.min() < 0:
            raise ValueError(
                "Integer `ids` must be >= 0 (-1 pads missing neighbours). "
                f"Received: min(ids)={array.min()}"
            )
    elif array.dtype.kind == "U" or (
        array.dtype.kind == "O" and all(isinstance(x, str) for x in array)
    ):
        array = array.astype(str)
        if count and np.any(array == STR_ID_PAD):
            raise ValueError(
                'String `ids` must be non-empty ("" pads missing '
                f"neighbours). Received: ids={array[array == ''][:3]!r}"
            )
    else:
        raise ValueError(
            "`ids` must be integers or strings. "
            f"Received: ids.dtype={array.dtype}"
        )
    if existing is not None and len(existing) and (
        (existing.dtype.kind == "U") != (array.dtype.kind == "U")
    ):
        raise ValueError(
            f"`ids` must match the index's id type ({existing.dtype}). "
            f"Received: ids.dtype={array.dtype}"
        )
    unique, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            "`ids` must be unique. "
            f"Received duplicates: {unique[counts > 1][:5]!r}"
        )
    if existing is not None and len(existing):
        clash = np.isin(array, existing)
        if np.any(clash):
            raise ValueError(
                "`ids` already in the index. "
                f"Received: ids={array[clash][:5]!r}"
            )
    return array


def _json_value(value):
    """Converts NumPy scalars to plain Python values for JSON."""
    return value.item() if isinstance(value, np.generic) else value


# === Interface ===


class RetrievalIndex:
    """Shared interface: ids, padding, metadata and the manifest-based files.

    Subclasses implement `_build_engine`, `_add_engine`, `_search_rows`,
    `_write_engine`, `_read_engine`, `get_config` and `is_exact`.
    """

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
        ids = _as_ids(ids, len(codes), 0, None)
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
        ids = _as_ids(ids, len(codes), start, self._ids)
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
        k = _check_k(k)
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
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(
                f"`ids` must be 1-D. Received: ids.shape={ids.shape}"
            )
        unknown = ~np.isin(ids, self._ids)
        if np.any(unknown):
            raise ValueError(
                f"`ids` not in the index. Received: ids={ids[unknown][:5]!r}"
            )
        if "id" in columns:
            raise ValueError('"id" is reserved; name the column otherwise.')
        for name, values in columns.items():
            if len(values) != len(ids):
                raise ValueError(
                    f"Column `{name}` must have one value per id "
                    f"({len(ids)}). Received: len({name})={len(values)}"
                )
            for value in values:
                try:
                    json.dumps(_json_value(value), allow_nan=False)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"Column `{name}` values must be JSON-serialisable "
                        f"(no NaN). Received: {value!r}"
                    ) from e
        for row, key in enumerate(ids.tolist()):
            entry = self._metadata.setdefault(key, {})
            for name, values in columns.items():
                entry[name] = _json_value(values[row])

    def metadata(self, ids):
        """Returns the metadata rows of `ids` ([M] or [Q, k] from search).

        Returns:
            A list (of lists for 2-D ids) of dicts; {} for ids without
            metadata, None for padding ids.

        Raises:
            KeyError: for ids that are neither in the index nor padding.
        """
        self._require_built()
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.metadata(row) for row in ids]
        pad = self._id_pad()
        known = self._known_ids()
        rows = []
        for key in ids.tolist():
            if key == pad:
                rows.append(None)
            elif key not in known:
                raise KeyError(f"id {key!r} is not in the index")
            else:
                rows.append(dict(self._metadata.get(key, {})))
        return rows

    @property
    def code_width(self):
        """Bits (binary) or float dimensions the index was built with."""
        return self._code_width

    def _known_ids(self):
        """The set of ids, cached until the id array changes (O(1) lookups:
        a search result's metadata costs microseconds, not a scan of N)."""
        cache = getattr(self, "_id_set_cache", None)
        if cache is None or cache[0] is not self._ids:
            cache = (self._ids, set(self._ids.tolist()))
            self._id_set_cache = cache
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
        manifest, data_dir = index_files.read_manifest(directory)
        if manifest["index_type"] != cls.index_type:
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
        missing = rows < 0
        if not len(self._ids):
            return np.full(rows.shape, self._id_pad(), dtype=self._ids.dtype)
        ids = self._ids[np.where(missing, 0, rows)]
        ids[missing] = self._id_pad()
        return ids


def _pad_columns(rows, distances, k, pad_distance):
    """Pads [Q, k'] results to [Q, k] with id row -1 and `pad_distance`."""
    missing = k - rows.shape[1]
    if missing <= 0:
        return rows, distances
    rows = np.pad(rows, ((0, 0), (0, missing)), constant_values=-1)
    distances = np.pad(
        distances, ((0, 0), (0, missing)), constant_values=pad_distance
    )
    return rows, distances


# === Factory ===


def __getattr__(name):
    """Re-exports the index classes (their modules import this one)."""
    if name == "BinaryHammingIndex":
        from shrewd_tf.retrieval.hamming_index import BinaryHammingIndex

        return BinaryHammingIndex
    if name == "ScannIndex":
        from shrewd_tf.retrieval.scann_index import ScannIndex

        return ScannIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _index_types():
    """Returns {index_type: class} for every index kind."""
    from shrewd_tf.retrieval.hamming_index import BinaryHammingIndex
    from shrewd_tf.retrieval.scann_index import ScannIndex

    return {
        BinaryHammingIndex.index_type: BinaryHammingIndex,
        ScannIndex.index_type: ScannIndex,
    }


def build_index(kind, codes, ids=None, **params):
    """Builds an index of `kind` over `codes`.

    Args:
        kind: "binary_hamming" (code_bits defaults to codes.shape[1]) or
            "scann".
        codes: [N, code_bits] codes.
        ids: optional ids [N].
        **params: constructor arguments of the index class.

    Returns:
        The built index.

    Raises:
        ValueError: on an unknown kind or bad codes / parameters.
    """
    index_types = _index_types()
    if kind not in index_types:
        raise ValueError(
            f"`kind` must be one of {sorted(index_types)}. "
            f"Received: kind={kind!r}"
        )
    if kind == "binary_hamming" and "code_bits" not in params:
        params["code_bits"] = _as_codes(codes, "codes").shape[1]
    return index_types[kind](**params).build(codes, ids)


def load_index(directory):
    """Loads any saved index, dispatching on its manifest's index_type.

    Raises:
        IndexFormatError: naming the bad file (see `RetrievalIndex.load`).
    """
    manifest, _ = index_files.read_manifest(directory, verify_files=False)
    kind = manifest["index_type"]
    index_types = _index_types()
    if kind not in index_types:
        raise IndexFormatError(
            f"{os.path.join(directory, MANIFEST_FILE)} has unknown "
            f"index_type={kind!r}"
        )
    return index_types[kind].load(directory)

"""Retrieval indexes over hash codes, behind one TFRS `TopK`-like interface.

* `BinaryHammingIndex`: Hamming search over packed binary codes with faiss
  binary indexes: exact `flat` scan (`IndexBinaryFlat`), multi-index hashing
  `mih` (`IndexBinaryMultiHash`, exact by default, see below), `ivf`
  (`IndexBinaryIVF`) and `hnsw` (`IndexBinaryHNSW`), with optional re-ranking
  of a Hamming shortlist by L1 distance between float codes.
* `ScannIndex`: ScaNN (pybind searcher, no TF ops) over float codes, either
  brute force or tree + asymmetric hashing (AH) + exact re-ordering.

Every index has `build(codes, ids=None)`, `add(codes, ids=None)`,
`search(queries, k) -> (ids [Q, k], distances [Q, k])`, `save(directory)`,
`load(directory)` (classmethod), `len()`, `is_exact` and a metadata table
(`set_metadata(ids, label=..., caption=..., image_uri=...)`,
`metadata(ids)`). `build_index(kind, codes, ...)` and `load_index(directory)`
are the factory and the manifest-dispatching loader.

Conventions:

* Bits: bit j of a code is `codes[:, j] > 0.5` (so 0.5 itself is 0); codes
  are packed with `np.packbits(bits, axis=1)`, MSB-first within each byte,
  bit j in byte j // 8 at position 7 - j % 8. `code_bits` must be a multiple
  of 8 (faiss stores whole bytes). `BinaryHammingIndex` takes float codes
  in [0, 1] or 0/1 (bool, int) arrays; `ScannIndex` any finite floats.
* Ids: int64 (>= 0) or strings (non-empty), unique within an index; default
  `arange`. Missing neighbours (k > len(index), or an approximate method
  that found fewer than k candidates) are padded with id -1 (int ids) or ""
  (string ids) and distance `HAMMING_PAD` (int32 max, as faiss does) for
  Hamming distances or `inf` for float distances.
* Distances, smaller is nearer: Hamming (int32, number of differing bits);
  L1 between float codes (float32) when `rerank=True`; squared L2 (float32)
  or the negated inner product -<q, x> (float32) for `ScannIndex`.
* Threads: faiss runs on `num_threads` OpenMP threads (default 1) set around
  each faiss call and restored after it; on a loaded 2-core machine faiss
  with 2 threads fell from 1,818 to 217 queries/s while 1 thread held.
  The OpenMP count is process-wide, so concurrent searches from several
  Python threads share it; never `add` while another thread searches.
* Files: `save(directory)` writes the data files into a fresh
  `directory/data-<hex>/` folder, then commits by atomically replacing
  `directory/manifest.json` (format_version, index type, code_bits, count,
  config, and size + sha256 of every data file); only then are older
  `data-*` folders removed. A save that fails leaves the previous index
  loadable. `load` refuses a missing, truncated or corrupted data file and
  any other format version with an `IndexFormatError` naming the file.
  One writer per directory: a reader racing a save may find its data folder
  removed and should retry.
  The metadata table is `metadata.jsonl`, one JSON object per id:
  `{"id": 3, "label": 1, "caption": "...", "image_uri": "..."}`.

Example:

```python
index = BinaryHammingIndex(code_bits=64, method="flat")
index.build(db_codes, ids=db_ids)
ids, hamming = index.search(query_codes, k=250)
index.save("/tmp/hamming_index")
same = load_index("/tmp/hamming_index")
```
"""

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid

import faiss
import numpy as np

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.jsonl"
IDS_FILE = "ids.npy"
INT_ID_PAD = -1
STR_ID_PAD = ""
HAMMING_PAD = int(np.iinfo(np.int32).max)

_DATA_DIR_PREFIX = "data-"
_DATA_DIR_PATTERN = re.compile(r"data-[0-9a-f]{12}")
# Float scratch per re-ranking chunk ([chunk, candidates, code_bits]).
_RERANK_CHUNK_BYTES = 32 * 2**20


class IndexFormatError(ValueError):
    """A saved index is missing, truncated, corrupted or of another format."""


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
    if unit_range and array.size and array.dtype.kind != "b":
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise ValueError(
                f"`{name}` must be float codes in [0, 1] or 0/1 bits. "
                f"Received: {name} with min={low}, max={high}"
            )
    return array


def pack_codes(codes):
    """Binarises codes at 0.5 and packs them MSB-first, as faiss expects.

    Args:
        codes: float codes in [0, 1] or 0/1 bits, [N, code_bits] with
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


@contextlib.contextmanager
def _faiss_threads(num_threads):
    """Runs faiss on `num_threads` OpenMP threads, restoring the old count."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


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
        known = np.isin(ids, self._ids) if len(ids) else ids.astype(bool)
        rows = []
        for key, is_known in zip(ids.tolist(), known):
            if key == pad:
                rows.append(None)
            elif not is_known:
                raise KeyError(f"id {key!r} is not in the index")
            else:
                rows.append(dict(self._metadata.get(key, {})))
        return rows

    # --- persistence ---

    def save(self, directory):
        """Writes the index to `directory` atomically (see module docstring).

        Args:
            directory: folder path; created if missing. Other files in it
                are left alone, except older `data-<12 hex>` folders.
        """
        self._require_built()
        os.makedirs(directory, exist_ok=True)
        data_name = f"{_DATA_DIR_PREFIX}{uuid.uuid4().hex[:12]}"
        data_dir = os.path.join(directory, data_name)
        os.mkdir(data_dir)
        try:
            np.save(os.path.join(data_dir, IDS_FILE), self._ids)
            with open(os.path.join(data_dir, METADATA_FILE), "w") as f:
                for key, row in self._metadata.items():
                    f.write(json.dumps({"id": key, **row}, allow_nan=False))
                    f.write("\n")
            self._write_engine(data_dir)
            files = _describe_files(data_dir)
            _fsync(directory)  # The new data folder's entry is durable.
            manifest = {
                "format_version": FORMAT_VERSION,
                "index_type": self.index_type,
                "code_bits": self._code_width,
                "count": len(self),
                "id_type": "str" if self._ids.dtype.kind == "U" else "int64",
                "config": self.get_config(),
                "data_dir": data_name,
                "files": files,
            }
            # The commit point: before it the old manifest and data stand.
            _replace_json(os.path.join(directory, MANIFEST_FILE), manifest)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        _fsync(directory)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if (
                _DATA_DIR_PATTERN.fullmatch(name)
                and name != data_name
                and os.path.isdir(path)
            ):
                shutil.rmtree(path, ignore_errors=True)
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
        manifest, data_dir = _read_manifest(directory)
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
        index._ids = np.load(
            os.path.join(data_dir, IDS_FILE), allow_pickle=False
        )
        index._read_engine(data_dir, manifest)
        with open(os.path.join(data_dir, METADATA_FILE)) as f:
            for line in f:
                row = json.loads(line)
                index._metadata[row.pop("id")] = row
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


# === Binary Hamming index ===

_HAMMING_PARAMS = {
    "flat": {},
    # nhash tables of b = code_bits // nhash bits; a bucket probe flips up
    # to nflip bits; exact: re-scan rows the probe radius cannot certify.
    "mih": {"nhash": None, "nflip": 1, "exact": True},
    "ivf": {"nlist": None, "nprobe": 16},
    "hnsw": {"M": 32, "ef_construction": 40, "ef_search": 128},
}
_HAMMING_SEARCH_PARAMS = {
    "flat": (),
    "mih": ("nflip", "exact"),
    "ivf": ("nprobe",),
    "hnsw": ("ef_search",),
}


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
      (default 2 sqrt(N), set at build) and `nprobe` probed lists (16).
      Trained at build on up to 256 codes per list (faiss default; about
      70 s on one thread for nlist=2000); `add` does not retrain. The best
      sub-linear method in the benchmark.
    * "hnsw": `faiss.IndexBinaryHNSW` with `M` links per node (32),
      `ef_construction` (40) and `ef_search` (128; raised to k when smaller).

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
        **params: method parameters listed above.

    Raises:
        ValueError: on an unknown method or parameter, or bad values.
    """

    index_type = "binary_hamming"

    def __init__(
        self,
        code_bits,
        method="flat",
        rerank=False,
        rerank_candidates=None,
        num_threads=1,
        **params,
    ):
        super().__init__()
        code_bits = _check_positive_int("code_bits", code_bits)
        if code_bits % 8:
            raise ValueError(
                "`code_bits` must be a multiple of 8. "
                f"Received: code_bits={code_bits}"
            )
        if method not in _HAMMING_PARAMS:
            raise ValueError(
                f"`method` must be one of {sorted(_HAMMING_PARAMS)}. "
                f"Received: method={method!r}"
            )
        unknown = set(params) - set(_HAMMING_PARAMS[method])
        if unknown:
            raise ValueError(
                f"Unknown parameters for method={method!r}: {sorted(unknown)}. "
                f"Allowed: {sorted(_HAMMING_PARAMS[method])}"
            )
        self.code_bits = code_bits
        self.method = method
        self.rerank = bool(rerank)
        self.rerank_candidates = _check_positive_int(
            "rerank_candidates", rerank_candidates, allow_none=True
        )
        self.num_threads = _check_positive_int("num_threads", num_threads)
        self.params = self._checked_params(
            {**_HAMMING_PARAMS[method], **params}
        )
        # What the caller asked for; build-time defaults (nlist) come from N.
        self._requested_params = dict(self.params)
        self._engine = None
        self._float_codes = None

    def _checked_params(self, params):
        """Returns a validated copy of `params` (nhash resolved)."""
        p = dict(params)
        if self.method == "mih":
            if p["nhash"] is None:
                p["nhash"] = max(1, self.code_bits // 16)
            _check_positive_int("nhash", p["nhash"])
            bits = self.code_bits // p["nhash"]
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
        elif self.method == "ivf":
            _check_positive_int("nlist", p["nlist"], allow_none=True)
            _check_positive_int("nprobe", p["nprobe"])
        elif self.method == "hnsw":
            for name in ("M", "ef_construction", "ef_search"):
                _check_positive_int(name, p[name])
        return p

    @property
    def is_exact(self):
        """True when search returns the exact top-k Hamming distances.

        flat and mih with exact=True; False for ivf, hnsw, and whenever
        `rerank` is on (an L1 re-ranking of a Hamming shortlist is not an
        exact L1 search).
        """
        exact = self.method == "flat" or (
            self.method == "mih" and self.params["exact"]
        )
        return exact and not self.rerank

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
        allowed = _HAMMING_SEARCH_PARAMS[self.method]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(
                f"Search parameters of method={self.method!r} are "
                f"{list(allowed)}. Received: {sorted(unknown)}"
            )
        self.params = self._checked_params({**self.params, **params})
        self._requested_params.update(params)
        if self._engine is not None:
            self._apply_search_params()

    def _check_codes(self, codes, name):
        return _as_codes(codes, name, width=self.code_bits, unit_range=True)

    def _new_engine(self, packed):
        d, p = self.code_bits, self.params
        if self.method == "flat":
            return faiss.IndexBinaryFlat(d)
        if self.method == "mih":
            return faiss.IndexBinaryMultiHash(d, p["nhash"], d // p["nhash"])
        if self.method == "hnsw":
            engine = faiss.IndexBinaryHNSW(d, p["M"])
            engine.hnsw.efConstruction = p["ef_construction"]
            return engine
        # ivf: needs training codes.
        p["nlist"] = self._requested_params["nlist"]
        if p["nlist"] is None:
            p["nlist"] = min(
                len(packed), max(1, round(2 * math.sqrt(len(packed))))
            )
        if len(packed) < p["nlist"]:
            raise ValueError(
                f"method='ivf' needs at least nlist={p['nlist']} codes to "
                f"train. Received: {len(packed)} codes"
            )
        quantizer = faiss.IndexBinaryFlat(d)
        engine = faiss.IndexBinaryIVF(quantizer, d, p["nlist"])
        engine.own_fields = True
        quantizer.this.disown()
        engine.train(packed)
        return engine

    def _apply_search_params(self):
        p = self.params
        if self.method == "mih":
            self._engine.nflip = p["nflip"]
        elif self.method == "ivf":
            self._engine.nprobe = p["nprobe"]
        elif self.method == "hnsw":
            self._engine.hnsw.efSearch = p["ef_search"]

    def _build_engine(self, codes):
        packed = np.packbits(codes > 0.5, axis=1)
        with _faiss_threads(self.num_threads):
            engine = self._new_engine(packed)
            engine.add(packed)
        self._engine = engine
        self._apply_search_params()
        self._float_codes = (
            codes.astype(np.float32) if self.rerank else None
        )

    def _add_engine(self, codes):
        with _faiss_threads(self.num_threads):
            self._engine.add(np.packbits(codes > 0.5, axis=1))
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
        with _faiss_threads(self.num_threads):
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
        packed = np.packbits(queries > 0.5, axis=1)
        if not self.rerank:
            rows, distances = self._hamming_search(packed, k)
            return _pad_columns(rows, distances, k, HAMMING_PAD)
        shortlist = max(k, self.rerank_candidates or 4 * k)
        rows, _ = self._hamming_search(packed, shortlist)
        rows, distances = self._rerank_l1(
            queries.astype(np.float32), rows, k
        )
        return _pad_columns(rows, distances, k, np.inf)

    def _rerank_l1(self, queries, rows, k):
        """Re-orders shortlist `rows` [Q, C] by float L1; returns top k."""
        num_queries, shortlist = rows.shape
        k = min(k, shortlist)
        row_bytes = max(1, 4 * shortlist * self.code_bits)
        chunk = max(1, _RERANK_CHUNK_BYTES // row_bytes)
        out_rows = np.empty((num_queries, k), np.int64)
        out_distances = np.empty((num_queries, k), np.float32)
        for start in range(0, num_queries, chunk):
            part = slice(start, start + chunk)
            block = rows[part]
            candidates = self._float_codes[np.where(block < 0, 0, block)]
            l1 = np.abs(candidates - queries[part, None, :]).sum(
                axis=2, dtype=np.float32
            )
            l1[block < 0] = np.inf
            order = np.argsort(l1, axis=1, kind="stable")[:, :k]
            out_rows[part] = np.take_along_axis(block, order, 1)
            out_distances[part] = np.take_along_axis(l1, order, 1)
        return out_rows, out_distances

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
        if self.rerank:
            self._float_codes = np.load(
                os.path.join(data_dir, "float_codes.npy"), allow_pickle=False
            )


# === ScaNN index ===


class ScannIndex(RetrievalIndex):
    """k-NN over float codes with ScaNN's pybind searcher (no TF ops).

    Brute force (`brute_force=True`, exact in float32, best for N below a
    few tens of thousands) or a k-means tree with `num_leaves` leaves
    (default round(sqrt(N)), set at build) of which `num_leaves_to_search`
    are searched (default ceil(num_leaves / 10)), asymmetric hashing with
    `dimensions_per_block` dimensions per 4-bit block, and exact float32
    re-ordering of the top `reorder_k` AH candidates (default max(4k, 100),
    at least k).

    `add` upserts into the existing tree and AH codebook without retraining;
    rebuild after adding a large fraction of the data. Note: `import scann`
    also imports TensorFlow when it is installed (scann/__init__.py), so the
    first ScannIndex costs a TF import; the searcher itself runs no TF ops.

    Args:
        distance: "squared_l2" or "dot_product" (distances returned are the
            squared L2 distance, or -<q, x>: smaller is nearer).
        brute_force: exact float32 brute force instead of tree + AH.
        num_leaves, num_leaves_to_search: tree size and search width.
        dimensions_per_block: AH block width.
        anisotropic_quantization_threshold: AH noise-shaping threshold (None:
            off; ScaNN suggests 0.2 for dot_product).
        reorder_k: AH candidates re-scored exactly.
        training_sample_size: codes sampled to train the tree and AH.
        num_threads: search and training threads (1: single-threaded).

    Raises:
        ValueError: on bad parameter values, quoting them.
    """

    index_type = "scann"

    def __init__(
        self,
        distance="squared_l2",
        brute_force=False,
        num_leaves=None,
        num_leaves_to_search=None,
        dimensions_per_block=2,
        anisotropic_quantization_threshold=None,
        reorder_k=None,
        training_sample_size=100_000,
        num_threads=1,
    ):
        super().__init__()
        if distance not in ("squared_l2", "dot_product"):
            raise ValueError(
                '`distance` must be "squared_l2" or "dot_product". '
                f"Received: distance={distance!r}"
            )
        self.distance = distance
        self.brute_force = bool(brute_force)
        self.num_leaves = _check_positive_int("num_leaves", num_leaves, True)
        self.num_leaves_to_search = _check_positive_int(
            "num_leaves_to_search", num_leaves_to_search, True
        )
        if (
            self.num_leaves is not None
            and self.num_leaves_to_search is not None
            and self.num_leaves_to_search > self.num_leaves
        ):
            raise ValueError(
                "`num_leaves_to_search` must be <= num_leaves="
                f"{self.num_leaves}. Received: num_leaves_to_search="
                f"{self.num_leaves_to_search}"
            )
        self.dimensions_per_block = _check_positive_int(
            "dimensions_per_block", dimensions_per_block
        )
        self.anisotropic_quantization_threshold = (
            None
            if anisotropic_quantization_threshold is None
            else float(anisotropic_quantization_threshold)
        )
        self.reorder_k = _check_positive_int("reorder_k", reorder_k, True)
        self.training_sample_size = _check_positive_int(
            "training_sample_size", training_sample_size
        )
        self.num_threads = _check_positive_int("num_threads", num_threads)
        # What the caller asked for; build-time defaults come from N.
        self._requested_leaves = (self.num_leaves, self.num_leaves_to_search)
        self._searcher = None

    @property
    def is_exact(self):
        """True only for the float32 brute-force searcher."""
        return self.brute_force

    def get_config(self):
        return {
            "distance": self.distance,
            "brute_force": self.brute_force,
            "num_leaves": self.num_leaves,
            "num_leaves_to_search": self.num_leaves_to_search,
            "dimensions_per_block": self.dimensions_per_block,
            "anisotropic_quantization_threshold": (
                self.anisotropic_quantization_threshold
            ),
            "reorder_k": self.reorder_k,
            "training_sample_size": self.training_sample_size,
            "num_threads": self.num_threads,
        }

    def set_search_params(self, num_leaves_to_search=None, reorder_k=None):
        """Changes the search width and the re-ordering depth."""
        if num_leaves_to_search is not None:
            _check_positive_int("num_leaves_to_search", num_leaves_to_search)
            if self.num_leaves and num_leaves_to_search > self.num_leaves:
                raise ValueError(
                    "`num_leaves_to_search` must be <= num_leaves="
                    f"{self.num_leaves}. Received: num_leaves_to_search="
                    f"{num_leaves_to_search}"
                )
            self.num_leaves_to_search = int(num_leaves_to_search)
            self._requested_leaves = (
                self._requested_leaves[0],
                self.num_leaves_to_search,
            )
        if reorder_k is not None:
            self.reorder_k = _check_positive_int("reorder_k", reorder_k)

    def _check_codes(self, codes, name):
        array = _as_codes(codes, name, width=self._code_width)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _build_engine(self, codes):
        from scann.scann_ops.py import scann_ops_pybind

        if len(codes) == 0:
            raise ValueError("ScannIndex needs at least one code to build.")
        builder = scann_ops_pybind.builder(codes, 10, self.distance)
        builder.set_n_training_threads(self.num_threads)
        if self.brute_force:
            builder = builder.score_brute_force()
        else:
            self.num_leaves, self.num_leaves_to_search = self._requested_leaves
            if self.num_leaves is None:
                self.num_leaves = max(1, round(math.sqrt(len(codes))))
            if self.num_leaves > len(codes):
                raise ValueError(
                    f"`num_leaves` must be <= the number of codes "
                    f"({len(codes)}). Received: num_leaves={self.num_leaves}"
                )
            if self.num_leaves_to_search is None:
                self.num_leaves_to_search = math.ceil(self.num_leaves / 10)
            self.num_leaves_to_search = min(
                self.num_leaves_to_search, self.num_leaves
            )
            threshold = self.anisotropic_quantization_threshold
            builder = (
                builder.tree(
                    num_leaves=self.num_leaves,
                    num_leaves_to_search=self.num_leaves_to_search,
                    training_sample_size=self.training_sample_size,
                )
                .score_ah(
                    self.dimensions_per_block,
                    anisotropic_quantization_threshold=(
                        float("nan") if threshold is None else threshold
                    ),
                    training_sample_size=self.training_sample_size,
                )
                .reorder(self.reorder_k or 100)
            )
        self._searcher = builder.build()

    def _add_engine(self, codes):
        # The raw searcher appends rows for `None` indices; no docids needed.
        self._searcher.searcher.upsert([None] * len(codes), codes, 1)

    def _search_rows(self, queries, k):
        if len(queries) == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        k_found = min(k, len(self))
        kwargs = {}
        if not self.brute_force:
            kwargs = {
                "leaves_to_search": self.num_leaves_to_search,
                "pre_reorder_num_neighbors": max(
                    k_found, self.reorder_k or max(4 * k_found, 100)
                ),
            }
        if self.num_threads > 1:
            self._searcher.set_num_threads(self.num_threads)
            rows, distances = self._searcher.search_batched_parallel(
                queries, k_found, **kwargs
            )
        else:
            rows, distances = self._searcher.search_batched(
                queries, k_found, **kwargs
            )
        rows = np.asarray(rows, dtype=np.int64)
        distances = np.asarray(distances, dtype=np.float32)
        # ScaNN pads short rows with row 0 and NaN distance.
        missing = ~np.isfinite(distances)
        if self.distance == "dot_product":
            distances = -distances
        rows[missing], distances[missing] = -1, np.inf
        return _pad_columns(rows, distances, k, np.inf)

    def _write_engine(self, data_dir):
        scann_dir = os.path.join(data_dir, "scann")
        os.mkdir(scann_dir)
        self._searcher.serialize(scann_dir, relative_path=True)

    def _read_engine(self, data_dir, manifest):
        from scann.scann_ops.py import scann_ops_pybind

        self._searcher = scann_ops_pybind.load_searcher(
            os.path.join(data_dir, "scann"), assets_backcompat_shim=False
        )
        if self._searcher.size() != manifest["count"]:
            raise IndexFormatError(
                f"{os.path.join(data_dir, 'scann')} holds "
                f"{self._searcher.size()} codes; the manifest says "
                f"{manifest['count']}"
            )


# === Files ===


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_files(data_dir):
    """Fsyncs every file under `data_dir`; returns {relpath: size, sha256}."""
    files = {}
    for root, _, names in os.walk(data_dir):
        for name in sorted(names):
            path = os.path.join(root, name)
            _fsync(path)
            files[os.path.relpath(path, data_dir)] = {
                "bytes": os.path.getsize(path),
                "sha256": _sha256(path),
            }
        _fsync(root)
    return files


def _replace_json(path, value):
    """Writes JSON to a temp file, fsyncs it, then os.replace()s `path`."""
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(temp, "w") as f:
            json.dump(value, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def _read_manifest(directory, verify_files=True):
    """Returns (manifest, data_dir), checking every data file if asked."""
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise IndexFormatError(f"{path} is missing: not a saved index")
    try:
        with open(path) as f:
            manifest = json.load(f)
        version = manifest["format_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFormatError(f"{path} is not a valid manifest: {e}") from e
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format_version={version!r}; this shrewd_tf reads "
            f"format_version={FORMAT_VERSION}"
        )
    required = ("index_type", "code_bits", "count", "config", "data_dir")
    absent = [key for key in required + ("files",) if key not in manifest]
    if absent:
        raise IndexFormatError(f"{path} lacks the fields {absent}")
    if not _DATA_DIR_PATTERN.fullmatch(str(manifest["data_dir"])):
        raise IndexFormatError(
            f"{path} names an invalid data folder: {manifest['data_dir']!r}"
        )
    data_dir = os.path.join(directory, manifest["data_dir"])
    if not verify_files:
        return manifest, data_dir
    for name, expected in manifest["files"].items():
        file_path = os.path.join(data_dir, name)
        if not os.path.isfile(file_path):
            raise IndexFormatError(f"{file_path} is missing")
        size = os.path.getsize(file_path)
        if size != expected["bytes"]:
            raise IndexFormatError(
                f"{file_path} is truncated or resized: {size} bytes, the "
                f"manifest says {expected['bytes']}"
            )
        if _sha256(file_path) != expected["sha256"]:
            raise IndexFormatError(
                f"{file_path} is corrupted: its sha256 does not match the "
                "manifest"
            )
    return manifest, data_dir


# === Factory ===

_INDEX_TYPES = {
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
    if kind not in _INDEX_TYPES:
        raise ValueError(
            f"`kind` must be one of {sorted(_INDEX_TYPES)}. "
            f"Received: kind={kind!r}"
        )
    if kind == BinaryHammingIndex.index_type and "code_bits" not in params:
        params["code_bits"] = _as_codes(codes, "codes").shape[1]
    return _INDEX_TYPES[kind](**params).build(codes, ids)


def load_index(directory):
    """Loads any saved index, dispatching on its manifest's index_type.

    Raises:
        IndexFormatError: naming the bad file (see `RetrievalIndex.load`).
    """
    manifest, _ = _read_manifest(directory, verify_files=False)
    kind = manifest["index_type"]
    if kind not in _INDEX_TYPES:
        raise IndexFormatError(
            f"{os.path.join(directory, MANIFEST_FILE)} has unknown "
            f"index_type={kind!r}"
        )
    return _INDEX_TYPES[kind].load(directory)

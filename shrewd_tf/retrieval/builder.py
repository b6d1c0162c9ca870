"""Building the retrieval indexes of a database from its codes.

`build_indexes` builds a `BinaryHammingIndex` and/or a `ScannIndex` over
float codes, attaches the metadata table and saves each into its own
folder of `output_dir` (each save is atomic, see `shrewd_tf.retrieval.base`).
`build_index_from_codes` rebuilds them from the codes shards a previous
encoding job wrote, without encoding again. Encoding a TFRecord split with
a SavedModel is the Beam job `pipeline.build_index` (`shrewd index build`),
which writes the codes shards with `code_example` and then calls
`build_indexes`; this module knows nothing of Beam.

Output layout of `output_dir`:

    binary/     BinaryHammingIndex (manifest.json, data-<hex>/)
    scann/      ScannIndex
    codes/      codes-SSSSS-of-NNNNN.tfrecord (one tf.train.Example per
                image: id, code float[d], label, label_name, caption,
                image_uri), dead_letters-00000-of-00001.jsonl and
                codes_info.json (the SavedModel, split, counts, dead
                letters per stage and the index kinds built)

Ids are the record ids (strings); rows are sorted by id, so a rebuild from
the same codes gives the same index whatever order the job wrote them in.
The metadata table holds label, label_name, caption and image_uri per id.

Example:
    build_index_from_codes("indexes/fmnist/codes", "indexes/fmnist",
                           kinds=("binary",))
    index = load_index("indexes/fmnist/binary")
"""

import dataclasses
import json
import logging
import os

import numpy as np

from shrewd_tf import contract
from shrewd_tf import io as shrewd_io
from shrewd_tf.ops.bits import pack_bits
from shrewd_tf.retrieval.arrays import pack_codes
from shrewd_tf.retrieval.registry import index_class
from shrewd_tf.retrieval.code_shards import CODE_FEATURE
from shrewd_tf.retrieval.code_shards import CODES_PREFIX
from shrewd_tf.retrieval.code_shards import DEFAULT_CHUNK_SIZE
from shrewd_tf.retrieval.code_shards import METADATA_COLUMNS
from shrewd_tf.retrieval.code_shards import TEXT_COLUMNS
from shrewd_tf.retrieval.code_shards import code_dim
from shrewd_tf.retrieval.code_shards import code_example
from shrewd_tf.retrieval.code_shards import code_files
from shrewd_tf.retrieval.code_shards import decode_text
from shrewd_tf.retrieval.code_shards import iter_code_chunks
from shrewd_tf.retrieval.code_shards import read_codes
from shrewd_tf.retrieval.files import MANIFEST_FILE
from shrewd_tf.retrieval.method_policy import AUTO
from shrewd_tf.retrieval.method_policy import build_binary_index
from shrewd_tf.retrieval.method_policy import new_binary_index

log = logging.getLogger(__name__)

INDEX_KINDS = contract.INDEX_KINDS
CODES_DIR = "codes"
CODES_INFO_FILE = "codes_info.json"
__all__ = [
    "CODE_FEATURE",
    "CODES_PREFIX",
    "build_index_from_codes",
    "build_indexes",
    "build_indexes_from_shards",
    "code_example",
    "code_files",
    "new_indexes",
    "read_codes",
    "read_codes_info",
]


def parse_kinds(kinds):
    """Index kinds as a tuple, from "both", "binary", "scann" or a sequence.

    Raises:
        ValueError: on an unknown or empty kind list, quoting it.
    """
    if isinstance(kinds, str):
        kinds = INDEX_KINDS if kinds == "both" else (kinds,)
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds or any(kind not in INDEX_KINDS for kind in kinds):
        raise ValueError(
            f"`kinds` must be 'both' or a non-empty subset of {INDEX_KINDS}. "
            f"Received: kinds={kinds!r}"
        )
    return kinds


# === Codes files ===


def read_codes_info(codes_dir):
    """The `codes_info.json` a job wrote next to its codes (any file
    system)."""
    return json.loads(
        shrewd_io.read_text(os.path.join(codes_dir, CODES_INFO_FILE))
    )


# === Indexes ===


def new_indexes(
    code_bits,
    kinds=INDEX_KINDS,
    binary_method=AUTO,
    rerank=True,
    binary_params=None,
    scann_params=None,
    num_threads=1,
):
    """Empty indexes of `kinds` ({kind: index}); see `build_indexes`.

    Also the early check of a job's index flags: it raises the same
    ValueError as the build would for unknown or bad parameters (not for
    those that depend on N, such as nlist > N).

    Raises:
        ValueError: on bad kinds or index parameters, quoting them.
    """
    # `index_class` imports faiss and ScaNN: only when building.
    indexes = {}
    kinds = parse_kinds(kinds)
    if contract.BINARY_INDEX in kinds:
        # "auto": a flat index; `build_binary_index` chooses at build.
        indexes[contract.BINARY_INDEX] = new_binary_index(
            code_bits,
            binary_method,
            rerank=rerank,
            num_threads=num_threads,
            **(binary_params or {}),
        )
    if contract.SCANN_INDEX in kinds:
        scann = index_class(contract.SCANN_INDEX)
        indexes[contract.SCANN_INDEX] = scann(
            num_threads=num_threads, **(scann_params or {})
        )
    return indexes


def build_indexes(
    codes,
    ids,
    output_dir,
    metadata=None,
    kinds=INDEX_KINDS,
    binary_method=AUTO,
    rerank=True,
    binary_params=None,
    scann_params=None,
    num_threads=1,
):
    """Builds the indexes over `codes` and saves each to output_dir/<kind>.

    All indexes are built in memory before the first save, so a build that
    fails leaves every saved index as it was; each save is atomic.

    Args:
        codes: float codes [N, d] (in [0, 1] for "binary"; d a multiple of
            8 for "binary").
        ids: unique ids [N] (strings or ints >= 0).
        output_dir: parent folder; indexes go to `binary/` and `scann/`.
        metadata: None or {column: values [N]} (JSON-serialisable values).
        kinds: "both", "binary", "scann" or a sequence of them.
        binary_method: "auto" (flat up to 1M codes, else ivf if its
            measured recall@10 reaches 0.99: `shrewd_tf.retrieval.
            method_policy`), "flat", "mih", "ivf" or "hnsw".
        rerank: re-rank the Hamming shortlist by float L1 distance.
        binary_params: extra `BinaryHammingIndex` arguments (nlist, nprobe,
            nhash, nflip, M, ef_construction, ef_search, rerank_candidates).
        scann_params: `ScannIndex` arguments (distance, brute_force,
            num_leaves, num_leaves_to_search, reorder_k, ...).
        num_threads: threads for faiss and ScaNN.

    Returns:
        {kind: saved index directory}.

    Raises:
        ValueError: on no codes, mismatched lengths, bad kinds or bad index
            parameters, quoting the value.
    """
    kinds = parse_kinds(kinds)
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(
            "`codes` must be a non-empty 2-D array [N, d]. "
            f"Received: codes.shape={codes.shape}"
        )
    if len(ids) != len(codes):
        raise ValueError(
            f"`ids` must have one id per code ({len(codes)}). "
            f"Received: len(ids)={len(ids)}"
        )
    indexes = new_indexes(
        codes.shape[1],
        kinds,
        binary_method=binary_method,
        rerank=rerank,
        binary_params=binary_params,
        scann_params=scann_params,
        num_threads=num_threads,
    )
    binary_args = dict(
        rerank=rerank, num_threads=num_threads, **(binary_params or {})
    )
    for kind, index in list(indexes.items()):
        if kind == contract.BINARY_INDEX:
            index = indexes[kind] = build_binary_index(
                codes.shape[1], binary_method, pack_codes(codes), ids,
                float_codes=codes.astype(np.float32) if rerank else None,
                **binary_args,
            )
        else:
            index.build(codes, ids)
        if metadata:
            index.set_metadata(ids, **metadata)
        log.info("built %s index over %d codes", kind, len(index))
    return save_indexes(indexes, output_dir)


def save_indexes(indexes, output_dir):
    """Saves built indexes to output_dir/<kind>; returns {kind: directory}.

    Warns about older indexes of other kinds left in `output_dir`.
    """
    directories = {}
    for kind, index in indexes.items():
        directories[kind] = os.path.join(output_dir, kind)
        index.save(directories[kind])
    stale = [
        kind
        for kind in INDEX_KINDS
        if kind not in indexes
        and shrewd_io.exists(
            os.path.join(output_dir, kind, MANIFEST_FILE)
        )
    ]
    if stale:
        log.warning(
            "%s: left the older %s index(es) as they were; they were not "
            "built from these codes",
            output_dir,
            ", ".join(stale),
        )
    return directories


@dataclasses.dataclass(frozen=True)
class ShardsBuild:
    """What `build_indexes_from_shards` built.

    Attributes:
        directories: {kind: saved index directory}.
        count: codes indexed.
        code_dim: code length d.
    """

    directories: dict
    count: int
    code_dim: int


def build_indexes_from_shards(
    codes_dir,
    output_dir,
    kinds=INDEX_KINDS,
    rerank=True,
    chunk_size=DEFAULT_CHUNK_SIZE,
    with_metadata=True,
    **index_args,
):
    """Builds indexes from codes shards without the whole float matrix.

    The same indexes as `build_indexes(*read_codes(codes_dir))` (rows
    sorted by id), read in chunks of `chunk_size` records:

    1. one pass reads ids, metadata and, for "binary", the codes, packing
       each chunk to bits at once (d / 8 bytes per code kept);
    2. only when float codes are needed (ScaNN, or `rerank`, whose index
       keeps them) a second pass fills ONE preallocated float32 [N, d]
       array in id order, shared by both indexes;
    3. the binary index is added chunk by chunk from the packed codes.

    Peak memory is the packed codes twice (a sorted copy; faiss holds its
    own), one chunk, the ids and metadata columns, plus N * d * 4 bytes
    when float codes are needed (and ScaNN's own index). The index's
    metadata table (one dict per id) is what it is; `with_metadata=False`
    leaves it empty.

    Args:
        codes_dir: a folder of codes shards (any file system).
        output_dir: parent folder of `binary/` and `scann/`.
        kinds, rerank, **index_args: as `build_indexes`.
        chunk_size: records read (and codes added) per chunk.
        with_metadata: fill the metadata table from the shards.

    Returns:
        A `ShardsBuild`.

    Raises:
        FileNotFoundError: no codes shards.
        ValueError: ragged codes, duplicate ids or bad index parameters.
    """
    kinds = parse_kinds(kinds)
    _, dim = code_dim(codes_dir)
    binary = contract.BINARY_INDEX in kinds
    need_floats = contract.SCANN_INDEX in kinds or (binary and rerank)
    indexes = new_indexes(dim, kinds, rerank=rerank, **index_args)
    columns = ["id"] + (list(METADATA_COLUMNS) if with_metadata else [])
    if binary:
        columns.append(CODE_FEATURE)
    parts = {name: [] for name in columns + ["packed"]}
    for chunk in iter_code_chunks(codes_dir, chunk_size, columns):
        if binary:
            parts["packed"].append(pack_bits(chunk.pop(CODE_FEATURE)))
        for name, values in chunk.items():
            parts[name].append(
                decode_text(values) if name in TEXT_COLUMNS + ("id",)
                else values
            )
    ids = np.concatenate(parts.pop("id"))
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        duplicate = str(ids[1:][ids[1:] == ids[:-1]][0])
        raise ValueError(
            f"{codes_dir}: ids must be unique. Received: {duplicate!r} "
            "more than once"
        )
    floats = None
    if need_floats:
        floats = np.empty((len(ids), dim), np.float32)
        rank = np.empty(len(ids), np.int64)
        rank[order] = np.arange(len(ids))
        start = 0
        for chunk in iter_code_chunks(codes_dir, chunk_size, [CODE_FEATURE]):
            codes = chunk[CODE_FEATURE]
            floats[rank[start:start + len(codes)]] = codes
            start += len(codes)
        del rank
    for kind, index in list(indexes.items()):
        if kind == contract.BINARY_INDEX:
            packed = np.concatenate(parts.pop("packed"))[order]
            indexes[kind] = build_binary_index(
                dim, index_args.get("binary_method", AUTO), packed, ids,
                float_codes=floats if rerank else None,
                chunk_size=chunk_size, rerank=rerank,
                num_threads=index_args.get("num_threads", 1),
                **(index_args.get("binary_params") or {}),
            )
            del packed
        else:
            index.build(floats, ids)
    del floats
    if with_metadata:
        metadata = {
            name: np.concatenate(parts.pop(name))[order].tolist()
            for name in METADATA_COLUMNS
        }
        for kind, index in indexes.items():
            index.set_metadata(ids, **metadata)
    for kind, index in indexes.items():
        log.info("built %s index over %d codes", kind, len(index))
    return ShardsBuild(save_indexes(indexes, output_dir), len(ids), dim)


def build_index_from_codes(codes_dir, output_dir, **kwargs):
    """Builds indexes from the codes shards a `build_index` job wrote.

    Streams the shards (`build_indexes_from_shards`).

    Args:
        codes_dir: a `codes/` folder (codes-*.tfrecord).
        output_dir: parent folder of `binary/` and `scann/`.
        **kwargs: `build_indexes_from_shards` arguments (kinds,
            binary_method, chunk_size, ...).

    Returns:
        {kind: saved index directory}.
    """
    built = build_indexes_from_shards(codes_dir, output_dir, **kwargs)
    return built.directories

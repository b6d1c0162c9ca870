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

import glob
import json
import logging
import os

import numpy as np

from shrewd_tf import contract
from shrewd_tf.retrieval.base import index_class
from shrewd_tf.retrieval.files import MANIFEST_FILE

log = logging.getLogger(__name__)

INDEX_KINDS = contract.INDEX_KINDS
CODES_DIR = "codes"
CODES_PREFIX = "codes"
CODES_INFO_FILE = "codes_info.json"
# A codes shard keeps the model's code output under the same name.
CODE_FEATURE = contract.CODE_OUTPUT


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


def code_example(record_id, code, metadata):
    """One database code as a serialized `tf.train.Example`.

    Args:
        record_id: the record id (str).
        code: float32 [d].
        metadata: {"label": int, "label_name", "caption", "image_uri": str}.

    Returns:
        bytes.
    """
    import tensorflow as tf

    def text(value):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[value.encode("utf-8")])
        )

    feature = {
        "id": text(record_id),
        CODE_FEATURE: tf.train.Feature(
            float_list=tf.train.FloatList(
                value=np.asarray(code, np.float32).tolist()
            )
        ),
        "label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(metadata["label"])])
        ),
        "label_name": text(metadata["label_name"]),
        "caption": text(metadata["caption"]),
        "image_uri": text(metadata["image_uri"]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def code_files(codes_dir):
    """The sorted codes shards in `codes_dir`."""
    return sorted(
        glob.glob(os.path.join(codes_dir, f"{CODES_PREFIX}-*-of-*.tfrecord"))
    )


def read_codes(codes_dir, batch_size=8192):
    """Reads the codes shards of `codes_dir`, sorted by id.

    Returns:
        (ids str [N], codes float32 [N, d], metadata {column: list [N]}).

    Raises:
        FileNotFoundError: no codes shards in `codes_dir`.
        ValueError: codes of different lengths, or duplicate ids.
    """
    import tensorflow as tf

    files = code_files(codes_dir)
    if not files:
        raise FileNotFoundError(
            f"No codes shards ({CODES_PREFIX}-*-of-*.tfrecord) in "
            f"{codes_dir!r}"
        )
    first = next(iter(tf.data.TFRecordDataset(files).take(1)), None)
    if first is None:
        raise ValueError(f"The codes shards in {codes_dir!r} are empty.")
    example = tf.train.Example.FromString(first.numpy())
    dim = len(example.features.feature[CODE_FEATURE].float_list.value)
    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        CODE_FEATURE: tf.io.FixedLenFeature([dim], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "label_name": tf.io.FixedLenFeature([], tf.string),
        "caption": tf.io.FixedLenFeature([], tf.string),
        "image_uri": tf.io.FixedLenFeature([], tf.string),
    }
    dataset = tf.data.TFRecordDataset(files).batch(batch_size).map(
        lambda batch: tf.io.parse_example(batch, spec)
    )
    parts = {name: [] for name in spec}
    try:
        for batch in dataset.as_numpy_iterator():
            for name, values in batch.items():
                parts[name].append(values)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"{codes_dir}: every code must have {dim} values "
            f"(the first one's): {error.message.splitlines()[0]}"
        ) from error
    # One column at a time, so at most two copies of the codes exist.
    columns = {}
    for name in list(parts):
        columns[name] = np.concatenate(parts.pop(name))
    ids = np.asarray([v.decode("utf-8") for v in columns.pop("id")])
    order = np.argsort(ids, kind="stable")
    codes = columns.pop(CODE_FEATURE)[order]
    metadata = {"label": columns.pop("label")[order].tolist()}
    for name in ("label_name", "caption", "image_uri"):
        metadata[name] = [v.decode("utf-8") for v in columns.pop(name)[order]]
    return ids[order], codes, metadata


def read_codes_info(codes_dir):
    """The `codes_info.json` a job wrote next to its codes."""
    with open(os.path.join(codes_dir, CODES_INFO_FILE)) as f:
        return json.load(f)


# === Indexes ===


def new_indexes(
    code_bits,
    kinds=INDEX_KINDS,
    binary_method="flat",
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
        binary = index_class(contract.BINARY_INDEX)
        indexes[contract.BINARY_INDEX] = binary(
            code_bits=code_bits,
            method=binary_method,
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
    binary_method="flat",
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
        binary_method: "flat", "mih", "ivf" or "hnsw".
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
    for kind, index in indexes.items():
        index.build(codes, ids)
        if metadata:
            index.set_metadata(ids, **metadata)
        log.info("built %s index over %d codes", kind, len(index))
    directories = {}
    for kind, index in indexes.items():
        directories[kind] = os.path.join(output_dir, kind)
        index.save(directories[kind])
    stale = [
        kind
        for kind in INDEX_KINDS
        if kind not in kinds
        and os.path.exists(
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


def build_index_from_codes(codes_dir, output_dir, **kwargs):
    """Builds indexes from the codes shards a `build_index` job wrote.

    Args:
        codes_dir: a `codes/` folder (codes-*.tfrecord).
        output_dir: parent folder of `binary/` and `scann/`.
        **kwargs: `build_indexes` arguments (kinds, binary_method, ...).

    Returns:
        {kind: saved index directory}.
    """
    ids, codes, metadata = read_codes(codes_dir)
    return build_indexes(codes, ids, output_dir, metadata=metadata, **kwargs)

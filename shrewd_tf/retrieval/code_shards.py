"""The codes shards a bulk encoding wrote: one `tf.train.Example` per code.

`code_example` writes one record (id, code float[d], label, label_name,
caption, image_uri); `code_files` lists the shards
(`codes-SSSSS-of-NNNNN.tfrecord`, on any file system `shrewd_tf.io` and
`tf.data` read, e.g. gs://); `iter_code_chunks` streams them in chunks
of at most `chunk_size` records, parsing only the columns asked for, so a
reader holds one chunk of float codes at a time; `read_codes` reads
everything into memory (kept for small databases and as the reference
of the streamed build).
"""

import numpy as np

from shrewd_tf import contract
from shrewd_tf import io as shrewd_io

CODES_PREFIX = "codes"
# A codes shard keeps the model's code output under the same name.
CODE_FEATURE = contract.CODE_OUTPUT
METADATA_COLUMNS = ("label", "label_name", "caption", "image_uri")
TEXT_COLUMNS = ("label_name", "caption", "image_uri")
DEFAULT_CHUNK_SIZE = 65_536


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
    """The sorted codes shards in `codes_dir` (any file system)."""
    pattern = f"{codes_dir.rstrip('/')}/{CODES_PREFIX}-*-of-*.tfrecord"
    return sorted(shrewd_io.glob(pattern))


def code_dim(codes_dir):
    """(shards, d): the shards of `codes_dir` and the first code's length.

    Raises:
        FileNotFoundError: no codes shards in `codes_dir`.
        ValueError: the shards hold no record.
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
    return files, len(example.features.feature[CODE_FEATURE].float_list.value)


def iter_code_chunks(
    codes_dir, chunk_size=DEFAULT_CHUNK_SIZE, columns=None
):
    """Streams the shards of `codes_dir` in file order, chunk by chunk.

    Args:
        codes_dir: a folder of codes shards.
        chunk_size: records per chunk.
        columns: names to parse (default all): "id", CODE_FEATURE and the
            METADATA_COLUMNS.

    Yields:
        {name: NumPy [M]} per chunk (codes float32 [M, d]; text columns
        bytes objects; label int64), M <= chunk_size.

    Raises:
        FileNotFoundError, ValueError: see `code_dim`; ValueError too when
            a code has another length than the first.
    """
    import tensorflow as tf

    files, dim = code_dim(codes_dir)
    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        CODE_FEATURE: tf.io.FixedLenFeature([dim], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
        **{name: tf.io.FixedLenFeature([], tf.string)
           for name in TEXT_COLUMNS},
    }
    if columns is not None:
        spec = {name: spec[name] for name in columns}
    dataset = tf.data.TFRecordDataset(files).batch(chunk_size).map(
        lambda batch: tf.io.parse_example(batch, spec)
    )
    try:
        yield from dataset.as_numpy_iterator()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"{codes_dir}: every code must have {dim} values "
            f"(the first one's): {error.message.splitlines()[0]}"
        ) from error


def decode_text(values):
    """bytes [M] -> a str array [M] (UTF-8)."""
    return np.asarray([value.decode("utf-8") for value in values], dtype=str)


def read_codes(codes_dir, batch_size=8192):
    """Reads all the codes shards of `codes_dir` into memory, sorted by id.

    Holds the float codes twice at its peak (chunks, then the sorted
    array); `shrewd_tf.retrieval.builder.build_indexes_from_shards` builds
    without this.

    Returns:
        (ids str [N], codes float32 [N, d], metadata {column: list [N]}).

    Raises:
        FileNotFoundError: no codes shards in `codes_dir`.
        ValueError: codes of different lengths.
    """
    parts = {}
    for batch in iter_code_chunks(codes_dir, batch_size):
        for name, values in batch.items():
            parts.setdefault(name, []).append(values)
    columns = {}
    for name in list(parts):
        columns[name] = np.concatenate(parts.pop(name))
    ids = decode_text(columns.pop("id"))
    order = np.argsort(ids, kind="stable")
    codes = columns.pop(CODE_FEATURE)[order]
    metadata = {"label": columns.pop("label")[order].tolist()}
    for name in TEXT_COLUMNS:
        metadata[name] = [v.decode("utf-8") for v in columns.pop(name)[order]]
    return ids[order], codes, metadata

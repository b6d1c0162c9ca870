"""The TFRecord format shared by the Beam jobs and training.

One `tf.train.Example` per image (the single feature spec, like TFX's
`features.py`):

    id                 bytes    unique record id (file name, "train/00042")
    image              bytes    encoded image (PNG for decoded sources;
                                JPEG/PNG files are stored as they are)
    label              int64    class id, or NO_LABEL (-1) for caption-only
    label_name         bytes    class name ("" when unlabelled)
    caption            bytes    UTF-8 caption ("" when none)
    caption_embedding  float[]  sentence embedding of the caption (empty
                                when none), L2-normalised by the encoder

A directory written by `pipeline.make_tfrecords` holds shards named
`<split>-00000-of-00004.tfrecord` and `dataset_info.json` (`DatasetInfo`:
class names, image shape, counts, embedding size).

Example:
    info = DatasetInfo.load("data/fashion_mnist")
    ds = make_dataset(info.file_pattern("train", "data/fashion_mnist"),
                      info.image_shape, embedding_dim=info.embedding_dim)
"""

import dataclasses
import json
import math
import os

import numpy as np

from shrewd_tf import io as io_lib
from shrewd_tf.io import write_text_atomically

FORMAT_VERSION = 1
NO_LABEL = -1
INFO_FILE = "dataset_info.json"
SHARD_SUFFIX = ".tfrecord"
FEATURES = ("id", "image", "label", "label_name", "caption",
            "caption_embedding")


# === Records ===


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One example, before serialisation.

    Attributes:
        id: unique, non-empty record id.
        image: encoded image bytes (PNG/JPEG/GIF/BMP).
        label: class id >= 0, or NO_LABEL.
        label_name: class name ("" when unlabelled).
        caption: caption text ("" when none).
        caption_embedding: float32 [E] or None.
    """

    id: str
    image: bytes
    label: int = NO_LABEL
    label_name: str = ""
    caption: str = ""
    caption_embedding: np.ndarray | None = None

    def with_embedding(self, embedding):
        """A copy with `caption_embedding` set (float32 [E])."""
        return dataclasses.replace(
            self, caption_embedding=np.asarray(embedding, np.float32)
        )


class RecordError(ValueError):
    """A record that cannot be written or read; the message names it."""


def validate_record(record):
    """Raises RecordError naming the record and field if it is unusable."""
    if not isinstance(record.id, str) or not record.id:
        raise RecordError(f"record has an empty id. Received: id={record.id!r}")
    if not isinstance(record.image, (bytes, bytearray)) or not record.image:
        raise RecordError(f"record {record.id!r}: field 'image' is empty")
    if not isinstance(record.label, (int, np.integer)) or record.label < NO_LABEL:
        raise RecordError(
            f"record {record.id!r}: field 'label' must be an int >= -1. "
            f"Received: label={record.label!r}"
        )
    if record.caption_embedding is not None:
        embedding = np.asarray(record.caption_embedding)
        if embedding.ndim != 1 or embedding.size == 0:
            raise RecordError(
                f"record {record.id!r}: field 'caption_embedding' must be a "
                f"non-empty vector. Received: shape={embedding.shape}"
            )
        if not np.all(np.isfinite(embedding)):
            raise RecordError(
                f"record {record.id!r}: field 'caption_embedding' has "
                "nan or inf values"
            )


def to_example(record):
    """`ImageRecord` -> `tf.train.Example` (validated first)."""
    import tensorflow as tf

    validate_record(record)

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    embedding = (
        [] if record.caption_embedding is None
        else np.asarray(record.caption_embedding, np.float32).tolist()
    )
    feature = {
        "id": bytes_feature(record.id.encode("utf-8")),
        "image": bytes_feature(bytes(record.image)),
        "label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(record.label)])
        ),
        "label_name": bytes_feature(record.label_name.encode("utf-8")),
        "caption": bytes_feature(record.caption.encode("utf-8")),
        "caption_embedding": tf.train.Feature(
            float_list=tf.train.FloatList(value=embedding)
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def serialize(record):
    """`ImageRecord` -> serialized `tf.train.Example` bytes."""
    return to_example(record).SerializeToString()


def from_example(serialized):
    """Serialized `tf.train.Example` bytes -> `ImageRecord` (no decoding)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    missing = [n for n in ("id", "image", "label") if n not in feature]
    if not missing:
        missing = [n for n, values in (
            ("image", feature["image"].bytes_list.value),
            ("label", feature["label"].int64_list.value),
        ) if not values]
    if missing:
        raise RecordError(f"example lacks features {missing}")

    def text(name):
        values = feature[name].bytes_list.value if name in feature else []
        return values[0].decode("utf-8") if values else ""

    embedding = (
        list(feature["caption_embedding"].float_list.value)
        if "caption_embedding" in feature else []
    )
    return ImageRecord(
        id=text("id"),
        image=feature["image"].bytes_list.value[0],
        label=int(feature["label"].int64_list.value[0]),
        label_name=text("label_name"),
        caption=text("caption"),
        caption_embedding=np.asarray(embedding, np.float32) if embedding else None,
    )


def encode_png(image):
    """uint8 [H, W, C] (C in 1, 3, 4) or [H, W] -> PNG bytes."""
    import tensorflow as tf

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8. Received: dtype={image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    return tf.io.encode_png(image).numpy()


# === Parsing for training ===


def feature_spec(embedding_dim=None):
    """The `tf.io.parse_example` spec.

    With `embedding_dim`, `caption_embedding` is a required FixedLen [E]
    feature; without, it is read as a ragged list.
    """
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "label_name": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "caption": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if embedding_dim:
        spec["caption_embedding"] = tf.io.FixedLenFeature(
            [int(embedding_dim)], tf.float32
        )
    else:
        spec["caption_embedding"] = tf.io.RaggedFeature(tf.float32)
    return spec


def parse_example(serialized, image_shape, embedding_dim=None):
    """One serialized example -> dict of tensors.

    Args:
        serialized: scalar string tensor.
        image_shape: (H, W, C); the image goes through
            `preprocess.preprocess_image` (decoded, converted to C
            channels and, when its size differs, resized to H x W), as the
            exported model treats a client's image.
        embedding_dim: E when the records carry caption embeddings.

    Returns:
        {"image": uint8 [H, W, C], "label": int64 [], "id", "label_name",
        "caption": string [], "caption_embedding": float32 [E] (or ragged)}.
    """
    import tensorflow as tf

    from shrewd_tf.data import preprocess

    features = tf.io.parse_single_example(serialized, feature_spec(embedding_dim))
    features["image"] = preprocess.preprocess_image(
        features["image"], tuple(int(v) for v in image_shape)
    )
    return features


def make_dataset(file_pattern, image_shape, embedding_dim=None,
                 num_parallel_reads=None, deterministic=True):
    """Parsed examples from TFRecord shards.

    Order: with `num_parallel_reads=1`, file after file in sorted file
    order; with several reads at once, a round-robin interleave of the
    files (still the same order every time when `deterministic`).

    Args:
        file_pattern: glob, e.g. `DatasetInfo.file_pattern("train", dir)`.
        image_shape: (H, W, C), see `parse_example`.
        embedding_dim: E when the records carry caption embeddings.
        num_parallel_reads: shards read at once (default: up to 8).
        deterministic: the same order every time (needed for evaluation).

    Returns:
        `tf.data.Dataset` of `parse_example` dicts (unbatched).

    Raises:
        FileNotFoundError: nothing matches `file_pattern`.
    """
    import tensorflow as tf

    files = io_lib.glob(file_pattern)
    if not files:
        raise FileNotFoundError(
            f"No TFRecord shards match {file_pattern!r}; write them with "
            "`python -m pipeline.make_tfrecords`."
        )
    autotune = tf.data.AUTOTUNE
    dataset = tf.data.TFRecordDataset(
        files,
        num_parallel_reads=num_parallel_reads or min(len(files), 8),
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options).map(
        lambda s: parse_example(s, image_shape, embedding_dim),
        num_parallel_calls=autotune,
        deterministic=deterministic,
    )


def load_split_arrays(directory, split, info=None, image_shape=None):
    """Materialises one split of a TFRecord directory into numpy arrays.

    Args:
        directory: a `make_tfrecords` directory.
        split: a split of its `dataset_info.json`.
        info: its `DatasetInfo` (read when None).
        image_shape: (H, W, C) to decode to (default: `info.image_shape`);
            each stored image is resized once, by `parse_example`.

    Returns:
        dict: images uint8 [N, H, W, C], labels int64 [N], ids (str [N]),
        captions (str [N]), embeddings float32 [N, E] or None; in shard
        order.
    """
    info = info or DatasetInfo.load(directory)
    dataset = make_dataset(
        info.file_pattern(split, directory),
        tuple(image_shape or info.image_shape),
        embedding_dim=info.embedding_dim, num_parallel_reads=1,
    ).batch(1024)
    parts = {"images": [], "labels": [], "ids": [], "captions": [],
             "embeddings": []}
    for batch in dataset.as_numpy_iterator():
        parts["images"].append(batch["image"])
        parts["labels"].append(batch["label"])
        parts["ids"].extend(v.decode("utf-8") for v in batch["id"])
        parts["captions"].extend(v.decode("utf-8") for v in batch["caption"])
        if info.embedding_dim:
            parts["embeddings"].append(batch["caption_embedding"])
    if not parts["images"]:
        raise ValueError(f"{directory}: split {split!r} has no records")
    return {
        "images": np.concatenate(parts["images"]),
        "labels": np.concatenate(parts["labels"]).astype(np.int64),
        "ids": np.asarray(parts["ids"]),
        "captions": np.asarray(parts["captions"]),
        "embeddings": (np.concatenate(parts["embeddings"]).astype(np.float32)
                       if info.embedding_dim else None),
    }


# === The directory's description ===


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `dataset_info.json` says about a TFRecord directory.

    Attributes:
        image_shape: (H, W, C) every image is decoded/resized to.
        class_names: names in label order (empty for caption-only data).
        splits: {split: record count}.
        embedding_dim: caption embedding size E, or None.
        text_encoder: the encoder that made the embeddings ("" if none).
        source: what the records were made from (for the manifest).
        statistics: {split: {"mean": [C], "std": [C], "label_counts":
            {"<label>": count}}}: per-channel pixel mean and (population)
            standard deviation of the split's images at `image_shape`, in
            uint8 pixel units, and its records per label ("-1" for
            unlabelled ones), computed once by `make_tfrecords` so that
            training never makes a pass over the data for them. {} in
            directories written before they were stored (training then
            makes one streaming pass).
        format_version: FORMAT_VERSION of the writer.
    """

    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()
    splits: dict = dataclasses.field(default_factory=dict)
    embedding_dim: int | None = None
    text_encoder: str = ""
    source: str = ""
    statistics: dict = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def channel_statistics(self, split):
        """(mean float32 [C], std float32 [C]) of a split, or None when
        `dataset_info.json` does not store them."""
        stats = self.statistics.get(split) or {}
        if "mean" not in stats or "std" not in stats:
            return None
        return (np.asarray(stats["mean"], np.float32),
                np.asarray(stats["std"], np.float32))

    def label_counts(self, split):
        """{label int: records} of a split, or None when not stored."""
        counts = (self.statistics.get(split) or {}).get("label_counts")
        if counts is None:
            return None
        return {int(label): int(n) for label, n in counts.items()}

    @staticmethod
    def file_pattern_for(directory, split):
        """Glob of `<split>-SSSSS-of-NNNNN.tfrecord` under `directory`.

        Digits only, so split "train" never matches "train-extra-..." shards.
        """
        digits = "[0-9]" * 5
        return os.path.join(
            directory, f"{split}-{digits}-of-{digits}{SHARD_SUFFIX}"
        )

    def file_pattern(self, split, directory):
        """Glob of the split's shards under `directory`."""
        if split not in self.splits:
            raise KeyError(
                f"split {split!r} not in {sorted(self.splits)} of {directory}"
            )
        return self.file_pattern_for(directory, split)

    def save(self, directory):
        """Writes `dataset_info.json` atomically."""
        payload = dataclasses.asdict(self)
        payload["image_shape"] = list(self.image_shape)
        payload["class_names"] = list(self.class_names)
        write_text_atomically(
            os.path.join(directory, INFO_FILE),
            json.dumps(payload, indent=2, sort_keys=True) + "\n",
        )

    @classmethod
    def load(cls, directory):
        """Reads `dataset_info.json`; a clear error if absent or too new."""
        path = os.path.join(directory, INFO_FILE)
        if not io_lib.exists(path):
            raise FileNotFoundError(
                f"{path} not found: is {directory!r} a directory written by "
                "`python -m pipeline.make_tfrecords`?"
            )
        payload = json.loads(io_lib.read_text(path))
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported format_version. Expected "
                f"{FORMAT_VERSION}. Received: format_version={version!r}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        payload = {k: v for k, v in payload.items() if k in known}
        payload["image_shape"] = tuple(payload["image_shape"])
        payload["class_names"] = tuple(payload.get("class_names", ()))
        return cls(**payload)


def shard_count(num_records, records_per_shard=10_000):
    """Shards for `num_records`: about `records_per_shard` each, >= 1."""
    return max(1, math.ceil(num_records / records_per_shard))

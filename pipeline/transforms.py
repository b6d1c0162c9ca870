"""Beam PTransforms that turn image sources into `data.ImageRecord`s.

Readers (a `PBegin` -> records):

* `ReadFashionMNIST`: the IDX files, PNG-encoded 28x28x1 records.
* `ReadTfdsSplit`: a prepared TFDS split (never downloads), images stored
  as TFDS stored them (PNG/JPEG bytes).
* `ReadImageFolder`: a captions file and the images it names; returns
  `(records, dead_letters)`.

Steps that can reject an element return `(good, dead_letters)` (the
convention of `pipeline.dead_letters`; each rejection is counted in
`shrewd/dead_letters_<stage>`): `PrepareImages`, `ValidateRecords`.
`SplitByIdHash` cuts one collection into train/test by a hash of the id.

Dead-letter stages: parse_row (malformed captions line), check_row (empty
image path or caption, missing or unknown label), duplicate_id, read_image
(missing or unreadable file), decode_image (not an image TensorFlow can
decode), check_image (too small, wrong channel count), validate_record
(a record `data.to_example` would refuse).
"""

import dataclasses
import hashlib
import os

import apache_beam as beam

from pipeline.dead_letters import DEAD_LETTER_TAG
from pipeline.dead_letters import dead_letter
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets
from shrewd_tf.data import image_folder

FASHION_MNIST_CHUNK_SIZE = 2_000
TFDS_CHUNK_SIZE = 10_000
DEFAULT_MIN_IMAGE_SIZE = (8, 8)


def record_id(prefix, index, count=0):
    """`"train/00042"`: the index zero-padded to 5 digits (more if `count`
    needs them)."""
    width = max(5, len(str(max(count - 1, 0))))
    return f"{prefix}/{index:0{width}d}"


def _with_dead_letters(pcoll, label, dofn, output_type=None):
    """Applies a DoFn that may yield dead letters -> (good, dead_letters).

    `output_type` declares the main output's type where Beam's inference
    (a union with the tagged outputs) would fail a following GroupByKey.
    """
    par_do = beam.ParDo(dofn)
    if output_type is not None:
        par_do = par_do.with_output_types(output_type)
    results = pcoll | label >> par_do.with_outputs(
        DEAD_LETTER_TAG, main="good"
    )
    return results.good, results[DEAD_LETTER_TAG]


# === Fashion-MNIST ===


class _ReadIDXChunk(beam.DoFn):
    """(start, end) -> the split's records start..end-1 (arrays loaded once)."""

    def __init__(self, split, data_dir, count):
        self.split, self.data_dir, self.count = split, data_dir, count

    def setup(self):
        self._images, self._labels = datasets.load_fashion_mnist(
            self.split, self.data_dir
        )

    def process(self, chunk):
        start, end = chunk
        names = datasets.FASHION_MNIST_CLASS_NAMES
        for index in range(start, end):
            label = int(self._labels[index])
            yield data.ImageRecord(
                id=record_id(self.split, index, self.count),
                image=data.encode_png(self._images[index]),
                label=label,
                label_name=names[label],
            )


class ReadFashionMNIST(beam.PTransform):
    """A Fashion-MNIST split from its IDX files -> `ImageRecord`s.

    Records: PNG-encoded uint8 28x28x1 images, label 0..9, label_name from
    `datasets.FASHION_MNIST_CLASS_NAMES`, id `"<split>/00042"` (index in
    the file), no caption. Only index ranges go through `Create`; each
    worker loads the IDX arrays once (`setup`) and encodes its chunks.

    Args:
        split: "train" or "test".
        data_dir: directory of the four `*-ubyte.gz` files (default: the
            Debian package's `datasets.FASHION_MNIST_DIR`).
        chunk_size: records per work item.
        limit: read only the first `limit` records (None: all).
    """

    image_shape = (28, 28, 1)
    class_names = datasets.FASHION_MNIST_CLASS_NAMES

    def __init__(self, split, data_dir=None,
                 chunk_size=FASHION_MNIST_CHUNK_SIZE, limit=None):
        super().__init__()
        if limit is not None and int(limit) < 1:
            raise ValueError(f"limit must be >= 1. Received: limit={limit}")
        self.limit = None if limit is None else int(limit)
        if split not in datasets.FASHION_MNIST_FILES:
            raise ValueError(
                f"split must be one of {sorted(datasets.FASHION_MNIST_FILES)}."
                f" Received: split={split!r}"
            )
        self.split = split
        self.data_dir = data_dir or datasets.FASHION_MNIST_DIR
        self.chunk_size = int(chunk_size)

    def num_examples(self):
        """Record count, read from the (small) labels file."""
        labels_path = os.path.join(
            self.data_dir, datasets.FASHION_MNIST_FILES[self.split][1]
        )
        labels = datasets.read_idx(
            labels_path, expected_magic=datasets.IDX_LABELS_MAGIC
        )
        return int(labels.shape[0])

    def num_records(self):
        """Records this transform yields (`limit` applied)."""
        count = self.num_examples()
        return count if self.limit is None else min(count, self.limit)

    def expand(self, pbegin):
        count = self.num_records()
        chunks = [
            (start, min(start + self.chunk_size, count))
            for start in range(0, count, self.chunk_size)
        ]
        return (
            pbegin
            | "Chunks" >> beam.Create(chunks)
            | "ReadChunk" >> beam.ParDo(
                # ids are padded to the file's count, with or without limit
                _ReadIDXChunk(self.split, self.data_dir, self.num_examples())
            )
        )


# === TFDS ===


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
    """What a worker needs to read a TFDS split (picklable, no pipeline)."""

    name: str
    split: str
    data_dir: str
    id_prefix: str
    image_key: str
    label_key: str
    count: int = 0

    def builder(self):
        import tensorflow_datasets as tfds

        return tfds.builder(self.name, data_dir=self.data_dir)


class _ReadTfdsRange(beam.DoFn):
    """(start, end) or (None, None) -> records of that slice of the split."""

    def __init__(self, source):
        self.source = source

    def setup(self):
        self._builder = self.source.builder()
        features = self._builder.info.features
        self._labels = features[self.source.label_key] if (
            self.source.label_key in features
        ) else None

    def process(self, chunk):
        import tensorflow_datasets as tfds

        source = self.source
        start, end = chunk
        split = source.split if start is None else (
            f"{source.split}[{start}:{end}]"
        )
        try:
            dataset = self._builder.as_dataset(
                split=split,
                shuffle_files=False,
                decoders={source.image_key: tfds.decode.SkipDecoding()},
            )
        except AssertionError as e:  # TFDS reports unprepared data this way
            raise FileNotFoundError(
                f"TFDS dataset {source.name!r} is not prepared in "
                f"data_dir={source.data_dir!r}; prepare it first (`tfds "
                f"build {source.name} --data_dir=DIR`), this job never "
                "downloads"
            ) from e
        names = getattr(self._labels, "names", None)
        for offset, example in enumerate(dataset.as_numpy_iterator()):
            label, label_name = data.NO_LABEL, ""
            if self._labels is not None:
                label = int(example[source.label_key])
                label_name = names[label] if names else ""
            yield data.ImageRecord(
                id=record_id(source.id_prefix, (start or 0) + offset,
                             source.count),
                image=bytes(example[source.image_key]),
                label=label,
                label_name=label_name,
            )


class ReadTfdsSplit(beam.PTransform):
    """A split of a prepared TFDS dataset -> `ImageRecord`s; never downloads.

    Images are kept as TFDS stored them (encoded bytes, no decoding); ids
    are `"<id_prefix>/00042"` (index in the split's canonical order). A
    plain split name with a known size is read in index ranges
    (`train[0:10000]`, ...) in parallel; other splits (`train[:90%]`, or
    sizes unknown) are read by one worker and reshuffled.

    Args:
        name: TFDS builder name ("cifar100", "imagenet2012", ...).
        split: TFDS split string.
        data_dir: the TFDS data directory the dataset was prepared in.
        id_prefix: prefix of record ids (default: `split`).
        image_key, label_key: feature names (no label feature: NO_LABEL).
        chunk_size: records per work item.

    Raises:
        FileNotFoundError: `data_dir` does not exist.
    """

    def __init__(self, name, split, data_dir, id_prefix=None,
                 image_key="image", label_key="label",
                 chunk_size=TFDS_CHUNK_SIZE):
        super().__init__()
        if data_dir is None or not os.path.isdir(data_dir):
            raise FileNotFoundError(
                f"TFDS data_dir {data_dir!r} does not exist. Prepare the "
                f"dataset there first (`tfds build {name} --data_dir=DIR`); "
                "this job never downloads datasets."
            )
        self.source = _TfdsSource(name, split, str(data_dir),
                                  id_prefix or split, image_key, label_key)
        self.chunk_size = int(chunk_size)

    def describe(self):
        """(image_shape (H, W, C) with None where it varies, class_names,
        num_examples or None when unknown)."""
        info = self.source.builder().info
        shape = tuple(info.features[self.source.image_key].shape)
        labels = info.features[self.source.label_key] if (
            self.source.label_key in info.features
        ) else None
        class_names = tuple(getattr(labels, "names", None) or ())
        try:
            count = int(info.splits[self.source.split].num_examples) or None
        except (KeyError, ValueError, TypeError):
            count = None
        return shape, class_names, count

    def expand(self, pbegin):
        _, _, count = self.describe()
        source = dataclasses.replace(self.source, count=count or 0)
        plain = bool(count) and source.split.isidentifier()
        if plain:
            chunks = [
                (start, min(start + self.chunk_size, count))
                for start in range(0, count, self.chunk_size)
            ]
        else:
            chunks = [(None, None)]
        records = (
            pbegin
            | "Chunks" >> beam.Create(chunks)
            | "ReadSlice" >> beam.ParDo(_ReadTfdsRange(source))
        )
        if not plain:  # spread one reader's output over the workers
            records = records | "Spread" >> beam.Reshuffle()
        return records


# === Captions file + image files ===


class _CheckRow(beam.DoFn):
    """CaptionRow -> (id, row), or a dead letter for a bad row."""

    def __init__(self, captions_file, class_names):
        self.captions_file = captions_file
        self.class_names = tuple(class_names)

    def process(self, row):
        where = row.id or f"{self.captions_file}:{row.line}"
        if row.problem:
            yield dead_letter(where, "parse_row",
                              f"line {row.line}: {row.problem}")
            return
        reason = ""
        if not row.image_path:
            reason = "field 'image' is empty"
        elif not row.caption:
            reason = "field 'caption' is empty"
        elif row.label_name is not None and not row.label_name:
            reason = "field 'label' is empty"
        elif row.label_name is not None and (
            row.label_name not in self.class_names
        ):
            shown = list(self.class_names[:10])
            more = ", ..." if len(self.class_names) > 10 else ""
            reason = (f"unknown label, not one of the "
                      f"{len(self.class_names)} class names {shown}{more}. "
                      f"Received: label={row.label_name!r}")
        if reason:
            yield dead_letter(where, "check_row", f"line {row.line}: {reason}")
            return
        yield row.id, row


class _FirstRowPerId(beam.DoFn):
    """(id, rows) -> the row on the first line; later ones dead-lettered."""

    def process(self, keyed):
        record_id, rows = keyed
        rows = sorted(rows, key=lambda r: r.line)
        for row in rows[1:]:
            yield dead_letter(
                record_id, "duplicate_id",
                f"line {row.line}: id {record_id!r} already used on line "
                f"{rows[0].line}",
            )
        yield rows[0]


class _LoadImage(beam.DoFn):
    """CaptionRow -> ImageRecord (image read, checked, maybe resized)."""

    def __init__(self, class_names, channels, image_size, min_size):
        self.class_ids = {name: i for i, name in enumerate(class_names)}
        self.channels, self.image_size = channels, image_size
        self.min_size = min_size

    def process(self, row):
        try:
            encoded = image_folder.read_image_file(row.image_path)
            image, _ = image_folder.prepare_image(
                encoded, self.channels, self.image_size, self.min_size
            )
        except image_folder.ImageProblem as problem:
            yield dead_letter(row.id, problem.stage,
                              f"line {row.line}: {problem.reason}")
            return
        labelled = row.label_name is not None
        yield data.ImageRecord(
            id=row.id,
            image=image,
            label=self.class_ids[row.label_name] if labelled else data.NO_LABEL,
            label_name=row.label_name or "",
            caption=row.caption,
        )


class ReadImageFolder(beam.PTransform):
    """A captions file and its images -> `(records, dead_letters)`.

    See `shrewd_tf.data.image_folder` for the file format. Each row is checked
    (caption, label, unique id: the first line with an id wins), its image
    read and checked with `image_folder.prepare_image`; rejected rows become
    dead letters. Label ids index `class_names`.

    Args:
        captions_file: CSV/TSV/JSONL captions file.
        class_names: label names in label-id order; default: the sorted
            distinct labels of the file (() when it has no label column).
        channels: C of the stored images.
        image_size: (H, W) to resize to, or None to keep the files' bytes
            (then images with another channel count are rejected).
        min_size: (h, w); smaller images are rejected.
        format: "csv", "tsv" or "jsonl" (default: from the extension).

    Raises:
        ValueError: header problems, or `class_names` given for a file
            without a label column, or repeated class names.
    """

    def __init__(self, captions_file, class_names=None, channels=3,
                 image_size=None, min_size=DEFAULT_MIN_IMAGE_SIZE,
                 format=None):
        super().__init__()
        self.captions_file = str(captions_file)
        self.format = image_folder.captions_format(self.captions_file, format)
        columns = image_folder.read_columns(self.captions_file, self.format)
        if class_names is None:
            class_names = (image_folder.label_names(
                self.captions_file, self.format) if "label" in columns else ())
        elif "label" not in columns:
            raise ValueError(
                f"{self.captions_file}: class_names given but the file has no "
                f"'label' column. Received: columns={list(columns)}"
            )
        self.class_names = tuple(class_names)
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(
                f"class_names repeat a name. Received: {self.class_names}"
            )
        self.channels = channels
        self.image_size = tuple(image_size) if image_size else None
        self.min_size = tuple(min_size)

    def expand(self, pbegin):
        rows = (
            pbegin
            | "CaptionsFile" >> beam.Create([self.captions_file])
            | "ReadRows" >> beam.FlatMap(
                image_folder.read_captions, self.format
            )
        )
        keyed, bad_rows = _with_dead_letters(
            rows, "CheckRows", _CheckRow(self.captions_file, self.class_names),
            output_type=tuple[str, image_folder.CaptionRow],
        )
        unique, duplicates = _with_dead_letters(
            keyed | "GroupById" >> beam.GroupByKey(),
            "DropDuplicateIds", _FirstRowPerId(),
        )
        records, bad_images = _with_dead_letters(
            unique, "LoadImages",
            _LoadImage(self.class_names, self.channels, self.image_size,
                       self.min_size),
        )
        dead_letters = (
            (bad_rows, duplicates, bad_images)
            | "DeadLetters" >> beam.Flatten()
        )
        return records, dead_letters


# === Generic steps ===


class _PrepareImage(beam.DoFn):
    def __init__(self, channels, image_size, min_size):
        self.channels, self.image_size = channels, image_size
        self.min_size = min_size

    def process(self, record):
        try:
            image, _ = image_folder.prepare_image(
                record.image, self.channels, self.image_size, self.min_size
            )
        except image_folder.ImageProblem as problem:
            yield dead_letter(record.id, problem.stage, problem.reason)
            return
        yield dataclasses.replace(record, image=image)


class PrepareImages(beam.PTransform):
    """Records -> `(records, dead_letters)` with checked/resized images.

    Applies `image_folder.prepare_image` to each record's image: decode,
    reject too small images, convert to `channels` and resize to
    `image_size` with `preprocess.preprocess_image` (re-encoded PNG), or
    keep the bytes when `image_size` is None (then another channel count
    is rejected).
    """

    def __init__(self, channels, image_size=None, min_size=(1, 1)):
        super().__init__()
        self.channels = channels
        self.image_size = tuple(image_size) if image_size else None
        self.min_size = tuple(min_size)

    def expand(self, records):
        return _with_dead_letters(
            records, "Prepare",
            _PrepareImage(self.channels, self.image_size, self.min_size),
        )


class _ValidateRecord(beam.DoFn):
    def process(self, record):
        try:
            data.validate_record(record)
        except data.RecordError as e:
            yield dead_letter(record.id or "<empty id>", "validate_record",
                              str(e))
            return
        yield record


class ValidateRecords(beam.PTransform):
    """Records -> `(records, dead_letters)`: what `data.to_example` accepts."""

    def expand(self, records):
        return _with_dead_letters(records, "Validate", _ValidateRecord())


def id_hash_fraction(record_id):
    """A stable number in [0, 1) from the SHA-256 of the id (any machine)."""
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class SplitByIdHash(beam.PTransform):
    """Records -> (train, test): test iff `id_hash_fraction(id) < fraction`.

    Deterministic: a record's split depends only on its id, so reruns and
    added rows never move a record between splits.
    """

    def __init__(self, test_fraction):
        super().__init__()
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(
                "test_fraction must be in [0, 1]. "
                f"Received: test_fraction={test_fraction}"
            )
        self.test_fraction = float(test_fraction)

    def expand(self, records):
        fraction = self.test_fraction
        parts = records | "ByIdHash" >> beam.Partition(
            lambda record, _: int(id_hash_fraction(record.id) < fraction), 2
        )
        return parts[0], parts[1]

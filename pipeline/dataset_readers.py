"""Beam readers of prepared datasets: a `PBegin` -> `data.ImageRecord`s.

* `ReadFashionMNIST`: the IDX files, PNG-encoded 28x28x1 records.
* `ReadTfdsSplit`: a prepared TFDS split (never downloads), images stored
  as TFDS stored them (PNG/JPEG bytes).

Only index ranges go through `Create`; each worker opens the source once
(`setup`) and reads its ranges. Record ids are `"<split>/00042"`, the
index in the split (`record_id`).

Example:
    records = pipeline | ReadFashionMNIST("train", limit=1000)
"""

import dataclasses
import os

import apache_beam as beam

from shrewd_tf import io as io_lib
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets

FASHION_MNIST_CHUNK_SIZE = 2_000
TFDS_CHUNK_SIZE = 10_000


def record_id(prefix, index, count=0):
    """`"train/00042"`: the index zero-padded to 5 digits (more if `count`
    needs them)."""
    width = max(5, len(str(max(count - 1, 0))))
    return f"{prefix}/{index:0{width}d}"


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
        if data_dir is None or not io_lib.isdir(data_dir):
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

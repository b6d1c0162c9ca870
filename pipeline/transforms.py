"""Beam PTransforms shared by the jobs' steps on `data.ImageRecord`s.

Steps that can reject an element return `(good, dead_letters)` (the
convention of `pipeline.dead_letters`; each rejection is counted in
`shrewd/dead_letters_<stage>`): `PrepareImages`, `ValidateRecords`.
`SplitByIdHash` cuts one collection into train/test by a hash of the id.
`SplitStatistics` combines each split's pixel and label statistics.
The readers that make records are in `pipeline.dataset_readers`
(Fashion-MNIST, TFDS) and `pipeline.image_folder_reader` (a captions file).

Dead-letter stages: decode_image (not an image TensorFlow can decode),
check_image (too small, wrong channel count), validate_record (a record
`data.to_example` would refuse).
"""

import dataclasses
import hashlib

import apache_beam as beam
import numpy as np

from pipeline.dead_letters import DEAD_LETTER_TAG
from pipeline.dead_letters import dead_letter
from shrewd_tf.data import image_folder
from shrewd_tf.data import preprocess
from shrewd_tf.data import records as data

# Images smaller than this (h, w) are rejected by the readers and jobs.
DEFAULT_MIN_IMAGE_SIZE = (8, 8)


def with_dead_letters(pcoll, label, dofn, output_type=None):
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
        return with_dead_letters(
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
        return with_dead_letters(records, "Validate", _ValidateRecord())


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


class _StatisticsFn(beam.CombineFn):
    """Records -> per-channel pixel sums (float64) and records per label.

    The accumulator is `(pixels per channel, sum [C], sum of squares [C],
    {label: records})`; the sums are of the image `preprocess_image` makes
    at `image_shape` (uint8 pixel units), what training reads.
    """

    def __init__(self, image_shape):
        self.image_shape = tuple(image_shape)

    def create_accumulator(self):
        channels = self.image_shape[2]
        return 0, np.zeros(channels), np.zeros(channels), {}

    def add_input(self, accumulator, record):
        pixels_seen, total, squares, labels = accumulator
        image = preprocess.preprocess_image(
            record.image, self.image_shape).numpy()
        pixels = image.reshape(-1, self.image_shape[2]).astype(np.float64)
        label = str(int(record.label))
        labels[label] = labels.get(label, 0) + 1
        return (pixels_seen + pixels.shape[0], total + pixels.sum(0),
                squares + np.square(pixels).sum(0), labels)

    def merge_accumulators(self, accumulators):
        pixels_seen, total, squares, labels = self.create_accumulator()
        for seen, part_total, part_squares, part_labels in accumulators:
            pixels_seen += seen
            total = total + part_total
            squares = squares + part_squares
            for label, count in part_labels.items():
                labels[label] = labels.get(label, 0) + count
        return pixels_seen, total, squares, labels

    def extract_output(self, accumulator):
        pixels_seen, total, squares, labels = accumulator
        mean = total / max(pixels_seen, 1)
        variance = np.maximum(squares / max(pixels_seen, 1) - mean**2, 0.0)
        return {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in np.sqrt(variance)],
            "label_counts": dict(sorted(labels.items())),
        }


class SplitStatistics(beam.PTransform):
    """`(split, ImageRecord)` -> `(split, statistics)`, one per split.

    The statistics are `data.DatasetInfo.statistics[split]`: per-channel
    pixel mean and population std of the images after
    `preprocess.preprocess_image(image, image_shape)` (uint8 pixel units,
    float64 sums) and the records per label (`"-1"` for unlabelled ones).
    One `CombinePerKey`, so workers add up partial sums and one merge per
    split makes the result (no second pass over the data).
    """

    def __init__(self, image_shape):
        super().__init__()
        self.image_shape = tuple(image_shape)

    def expand(self, keyed_records):
        return keyed_records | "CombinePerSplit" >> beam.CombinePerKey(
            _StatisticsFn(self.image_shape))

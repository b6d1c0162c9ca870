"""Tests for pipeline.transforms (the shared steps), each on a TestPipeline
with assert_that."""

import hashlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import transforms
from shrewd_tf.data import preprocess
from shrewd_tf.data import records as data
from tests.support.image_sources import decode
from tests.support.image_sources import pixels


def make_pipeline():
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def test_prepare_images_resizes_and_rejects():
    records = [
        data.ImageRecord(id="big", image=data.encode_png(pixels(16, 16, 1))),
        data.ImageRecord(id="bad", image=b"garbage"),
        data.ImageRecord(id="small", image=data.encode_png(pixels(2, 2, 1))),
    ]
    with make_pipeline() as pipeline:
        good, dead_letters = (pipeline | beam.Create(records)
                              | transforms.PrepareImages(3, (8, 8), (4, 4)))
        assert_that(good | beam.Map(lambda r: (r.id, decode(r.image).shape)),
                    equal_to([("big", (8, 8, 3))]), label="Good")
        assert_that(dead_letters | beam.Map(lambda d: (d.id, d.stage)),
                    equal_to([("bad", "decode_image"),
                              ("small", "check_image")]), label="Dead")


def test_validate_records():
    records = [
        data.ImageRecord(id="ok", image=b"x"),
        data.ImageRecord(id="", image=b"x"),
        data.ImageRecord(id="nan", image=b"x",
                         caption_embedding=np.array([np.nan], np.float32)),
    ]
    with make_pipeline() as pipeline:
        good, dead_letters = (pipeline | beam.Create(records)
                              | transforms.ValidateRecords())
        assert_that(good | beam.Map(lambda r: r.id), equal_to(["ok"]),
                    label="Good")
        assert_that(
            dead_letters | beam.Map(lambda d: (d.id, d.stage)),
            equal_to([("<empty id>", "validate_record"),
                      ("nan", "validate_record")]), label="Dead")


def test_split_by_id_hash_matches_a_hex_reference():
    ids = [f"image_{i}.jpg" for i in range(400)]
    fraction = 0.25

    def reference_is_test(record_id):
        hex_digest = hashlib.sha256(record_id.encode()).hexdigest()
        return int(hex_digest[:16], 16) / 16**16 < fraction

    expected_test = [i for i in ids if reference_is_test(i)]
    assert 60 < len(expected_test) < 140  # about a quarter
    with make_pipeline() as pipeline:
        train, test = (
            pipeline
            | beam.Create([data.ImageRecord(id=i, image=b"x") for i in ids])
            | transforms.SplitByIdHash(fraction))
        assert_that(test | "TestIds" >> beam.Map(lambda r: r.id),
                    equal_to(expected_test), label="Test")
        assert_that(train | "TrainIds" >> beam.Map(lambda r: r.id),
                    equal_to(sorted(set(ids) - set(expected_test))),
                    label="Train")
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        transforms.SplitByIdHash(1.5)


def test_split_statistics_match_numpy():
    rng = np.random.default_rng(3)
    shape = (8, 8, 3)
    exact = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(5)]
    large = [rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
             for _ in range(4)]
    labels = {"a": [0, 2, 2, -1, 0], "b": [1, 1, 1, 5]}
    keyed = [
        (split, data.ImageRecord(id=f"{split}{i}", label=label,
                                 image=data.encode_png(image)))
        for split, images in (("a", exact), ("b", large))
        for i, (image, label) in enumerate(zip(images, labels[split]))
    ]
    # Split "a" is already at `shape` (preprocessing is the identity);
    # split "b" is resized by the one preprocessing function first.
    stored = {"a": np.stack(exact), "b": np.stack([
        preprocess.preprocess_image(data.encode_png(i), shape).numpy()
        for i in large])}
    assert stored["b"].shape == (4, 8, 8, 3)
    with make_pipeline() as pipeline:
        stats = (pipeline | beam.Create(keyed)
                 | transforms.SplitStatistics(shape))
        assert_that(stats | beam.Map(lambda kv: kv[0]), equal_to(["a", "b"]))

        def check(pairs):
            for split, got in pairs:
                pixels_ = stored[split].reshape(-1, 3).astype(np.float64)
                np.testing.assert_allclose(got["mean"], pixels_.mean(0),
                                           rtol=1e-12)
                np.testing.assert_allclose(got["std"], pixels_.std(0),
                                           rtol=1e-9)
                values, counts = np.unique(labels[split], return_counts=True)
                assert got["label_counts"] == {
                    str(v): int(n) for v, n in zip(values, counts)}

        assert_that(stats, check, label="Values")

"""Tests for pipeline.transforms, each on a TestPipeline with assert_that."""

import hashlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import transforms
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets
from tests.support.image_sources import CLASS_NAMES
from tests.support.image_sources import decode
from tests.support.image_sources import pixels
from tests.support.image_sources import write_captions_folder
from tests.support.image_sources import write_fake_fashion_mnist


def make_pipeline():
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    return test_pipeline.TestPipeline(runner="FnApiRunner")


# === Fashion-MNIST ===


def test_read_fashion_mnist_matches_the_arrays(tmp_path):
    arrays = write_fake_fashion_mnist(str(tmp_path))
    images, labels = arrays["train"]
    read = transforms.ReadFashionMNIST("train", str(tmp_path), chunk_size=3)
    assert read.num_examples() == 10
    with make_pipeline() as pipeline:
        records = pipeline | read
        assert_that(
            records | beam.Map(lambda r: (
                r.id, r.label, r.label_name, r.caption,
                decode(r.image).tobytes())),
            equal_to([
                (f"train/{i:05d}", int(labels[i]),
                 datasets.FASHION_MNIST_CLASS_NAMES[labels[i]], "",
                 images[i][..., None].tobytes())
                for i in range(10)
            ]))


def test_read_fashion_mnist_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split='validation'"):
        transforms.ReadFashionMNIST("validation", str(tmp_path))


# === TFDS ===


def test_read_tfds_split_mocked(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        read = transforms.ReadTfdsSplit("cifar100", "train", str(tmp_path),
                                        id_prefix="tr")
        shape, class_names, _ = read.describe()
        assert shape == (32, 32, 3) and len(class_names) == 100
        with make_pipeline() as pipeline:
            records = pipeline | read
            assert_that(
                records | beam.Map(lambda r: (
                    r.id, decode(r.image).shape, 0 <= r.label < 100,
                    r.label_name == class_names[r.label])),
                equal_to([(f"tr/{i:05d}", (32, 32, 3), True, True)
                          for i in range(5)]))


def test_read_tfds_needs_an_existing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        transforms.ReadTfdsSplit("cifar100", "train", str(tmp_path / "no"))


# === Captions folder ===


def test_read_image_folder_records_and_dead_letters(tmp_path):
    path, good, bad = write_captions_folder(str(tmp_path))
    read = transforms.ReadImageFolder(path, class_names=CLASS_NAMES,
                                      channels=3, image_size=(8, 8))
    with make_pipeline() as pipeline:
        records, dead_letters = pipeline | read
        assert_that(
            records | beam.Map(lambda r: (r.id, r.label, r.label_name,
                                          r.caption)),
            equal_to([(i, label, CLASS_NAMES[label], caption)
                      for i, (label, caption, _) in good.items()]),
            label="Records")
        assert_that(dead_letters | beam.Map(lambda d: d.stage),
                    equal_to(list(bad.values())), label="Stages")
        assert_that(
            dead_letters
            | beam.Filter(lambda d: d.stage != "parse_row")
            | beam.Map(lambda d: d.id),
            equal_to([k.split("#")[0] for k, s in bad.items()
                      if s != "parse_row"]),
            label="Ids")


def test_read_image_folder_keeps_bytes_and_pixels(tmp_path):
    path, good, _ = write_captions_folder(str(tmp_path))
    with make_pipeline() as pipeline:
        records, _ = pipeline | transforms.ReadImageFolder(
            path, class_names=CLASS_NAMES, channels=3, image_size=None)
        # PNG is lossless, so kept bytes decode to the original pixels.
        assert_that(
            records | beam.Filter(lambda r: r.id != "good1")
            | beam.Map(lambda r: (r.id, decode(r.image).tobytes())),
            equal_to([(i, good[i][2].tobytes()) for i in ("good0", "good2")]))


def test_read_image_folder_default_class_names_are_sorted(tmp_path):
    path, _, _ = write_captions_folder(str(tmp_path))
    read = transforms.ReadImageFolder(path)
    assert read.class_names == ("cat", "dog", "zebra")
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("image,caption\nimg/g0.png,hello\n")
    assert transforms.ReadImageFolder(str(csv_path)).class_names == ()
    with pytest.raises(ValueError, match="no 'label' column"):
        transforms.ReadImageFolder(str(csv_path), class_names=["a"])
    with pytest.raises(ValueError, match="repeat"):
        transforms.ReadImageFolder(path, class_names=["cat", "cat"])


def test_read_image_folder_unlabelled_file(tmp_path):
    path, _, _ = write_captions_folder(str(tmp_path))
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("image,caption\nimg/g0.png,hello\n")
    with make_pipeline() as pipeline:
        records, dead_letters = pipeline | transforms.ReadImageFolder(
            str(csv_path), image_size=(8, 8))
        assert_that(records | beam.Map(lambda r: (r.id, r.label,
                                                  r.label_name)),
                    equal_to([("img/g0.png", data.NO_LABEL, "")]),
                    label="Records")
        assert_that(dead_letters, equal_to([]), label="NoDeadLetters")


# === Generic steps ===


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


def test_record_id_padding():
    assert transforms.record_id("train", 42) == "train/00042"
    assert transforms.record_id("train", 42, count=1_281_167) == "train/0000042"

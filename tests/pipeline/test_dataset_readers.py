"""Tests for pipeline.dataset_readers (Fashion-MNIST IDX, TFDS), each on a
TestPipeline with assert_that."""

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import dataset_readers as readers
from shrewd_tf.data import tfds_sources as datasets
from tests.support.image_sources import decode
from tests.support.image_sources import write_fake_fashion_mnist


def make_pipeline():
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    return test_pipeline.TestPipeline(runner="FnApiRunner")


# === Fashion-MNIST ===


def test_read_fashion_mnist_matches_the_arrays(tmp_path):
    arrays = write_fake_fashion_mnist(str(tmp_path))
    images, labels = arrays["train"]
    read = readers.ReadFashionMNIST("train", str(tmp_path), chunk_size=3)
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
        readers.ReadFashionMNIST("validation", str(tmp_path))


# === TFDS ===


def test_read_tfds_split_mocked(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        read = readers.ReadTfdsSplit("cifar100", "train", str(tmp_path),
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
        readers.ReadTfdsSplit("cifar100", "train", str(tmp_path / "no"))


def test_record_id_padding():
    assert readers.record_id("train", 42) == "train/00042"
    assert readers.record_id("train", 42, count=1_281_167) == "train/0000042"

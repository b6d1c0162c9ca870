"""Tests for pipeline.image_folder_reader: a captions file and its images,
on a TestPipeline with assert_that."""

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline.image_folder_reader import ReadImageFolder
from shrewd_tf.data import records as data
from tests.support.image_sources import CLASS_NAMES
from tests.support.image_sources import decode
from tests.support.image_sources import write_captions_folder


def make_pipeline():
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def test_read_image_folder_records_and_dead_letters(tmp_path):
    path, good, bad = write_captions_folder(str(tmp_path))
    read = ReadImageFolder(path, class_names=CLASS_NAMES, channels=3,
                           image_size=(8, 8))
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
        records, _ = pipeline | ReadImageFolder(
            path, class_names=CLASS_NAMES, channels=3, image_size=None)
        # PNG is lossless, so kept bytes decode to the original pixels.
        assert_that(
            records | beam.Filter(lambda r: r.id != "good1")
            | beam.Map(lambda r: (r.id, decode(r.image).tobytes())),
            equal_to([(i, good[i][2].tobytes()) for i in ("good0", "good2")]))


def test_read_image_folder_default_class_names_are_sorted(tmp_path):
    path, _, _ = write_captions_folder(str(tmp_path))
    read = ReadImageFolder(path)
    assert read.class_names == ("cat", "dog", "zebra")
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("image,caption\nimg/g0.png,hello\n")
    assert ReadImageFolder(str(csv_path)).class_names == ()
    with pytest.raises(ValueError, match="no 'label' column"):
        ReadImageFolder(str(csv_path), class_names=["a"])
    with pytest.raises(ValueError, match="repeat"):
        ReadImageFolder(path, class_names=["cat", "cat"])


def test_read_image_folder_unlabelled_file(tmp_path):
    path, _, _ = write_captions_folder(str(tmp_path))
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("image,caption\nimg/g0.png,hello\n")
    with make_pipeline() as pipeline:
        records, dead_letters = pipeline | ReadImageFolder(
            str(csv_path), image_size=(8, 8))
        assert_that(records | beam.Map(lambda r: (r.id, r.label,
                                                  r.label_name)),
                    equal_to([("img/g0.png", data.NO_LABEL, "")]),
                    label="Records")
        assert_that(dead_letters, equal_to([]), label="NoDeadLetters")

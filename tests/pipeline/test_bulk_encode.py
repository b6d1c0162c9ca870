"""EncodeImages / SavedModelEncoderHandler against direct SavedModel calls."""

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import bulk_encode
from pipeline.dead_letters import dead_letter_counts
from shrewd_tf.data import records as data
from tests.support import encoders as encoder_fixtures


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return encoder_fixtures.versioned_model_root(
        tmp_path_factory.mktemp("export")
    )


def _codes_close_to(expected):
    """Matcher: ids equal `expected`'s keys, codes allclose to its values."""

    def check(rows):
        got = {i: c for i, c, _ in rows}
        assert sorted(got) == sorted(expected), sorted(got)
        for key, code in expected.items():
            assert got[key].dtype == np.float32
            # Batching differs from the direct call: float rounding only,
            # which the default head sigmoid(8 BatchNorm(h)) amplifies by up
            # to 8 / 4 = 2 on top of the encoder's ~1e-6 relative rounding.
            np.testing.assert_allclose(got[key], code, rtol=4e-6, atol=1e-7)

    return check


def test_handler_finds_input_name_from_loaded_signature(model_root):
    handler = bulk_encode.SavedModelEncoderHandler(
        os.path.join(model_root, "2")
    )
    model = handler.load_model()
    assert model.input_name == "encoded_images"
    records = encoder_fixtures.make_records(3, seed=5)
    results = handler.run_inference([r.image for r in records], model)
    expected = encoder_fixtures.encode_directly(
        os.path.join(model_root, "2"), [r.image for r in records]
    )
    np.testing.assert_allclose(
        np.stack([r.inference for r in results]), expected, rtol=1e-6
    )
    pixel_handler = bulk_encode.SavedModelEncoderHandler(
        os.path.join(model_root, "2"), signature="pixels"
    )
    with pytest.raises(ValueError, match="one tf.string input"):
        pixel_handler.load_model()


def test_codes_and_metadata_equal_direct_calls_of_newest_version(
    model_root,
):
    records = encoder_fixtures.make_records(40, seed=1)
    images = [r.image for r in records]
    newest = encoder_fixtures.encode_directly(
        os.path.join(model_root, "10"), images
    )
    older = encoder_fixtures.encode_directly(
        os.path.join(model_root, "2"), images
    )
    # Version 2 has another projection, so matching 10 tells them apart.
    assert np.abs(newest - older).max() > 0.1
    expected_metadata = {
        r.id: {
            "label": r.label,
            "label_name": r.label_name,
            "caption": r.caption,
            "image_uri": "gs://bucket/images/" + r.id,
        }
        for r in records
    }

    def check_metadata(rows):
        assert {i: m for i, _, m in rows} == expected_metadata

    # Matchers are pickled into the pipeline: they assert there.
    with test_pipeline.TestPipeline() as p:
        codes, dead = (
            p
            | beam.Create(records)
            | bulk_encode.EncodeImages(
                model_root,
                max_batch_size=16,
                image_uri_prefix="gs://bucket/images/",
            )
        )
        rows = codes | beam.Map(lambda r: (r.id, r.code, r.metadata))
        assert_that(
            rows,
            _codes_close_to({r.id: c for r, c in zip(records, newest)}),
            label="CheckCodes",
        )
        assert_that(rows, check_metadata, label="CheckMetadata")
        assert_that(dead, equal_to([]), label="CheckDead")


def test_bad_images_become_dead_letters_and_the_rest_survive(model_root):
    records = encoder_fixtures.make_records(20, seed=4)
    corrupt = data.ImageRecord(id="test/corrupt", image=b"not a png")
    wrong_size = data.ImageRecord(
        id="test/big",
        image=data.encode_png(np.full((9, 9, 3), 7, np.uint8)),
    )
    black = encoder_fixtures.black_record("test/black")
    expected = encoder_fixtures.encode_directly(
        os.path.join(model_root, "10"), [r.image for r in records]
    )

    def check_dead(letters):
        assert {d.id: d.stage for d in letters} == {
            "test/corrupt": bulk_encode.ENCODE_STAGE,
            "test/big": bulk_encode.ENCODE_STAGE,
            "test/black": bulk_encode.NONFINITE_STAGE,
        }
        assert all(d.reason for d in letters)

    p = test_pipeline.TestPipeline()
    # One batch holds all: the bad ones force the per-image retry.
    codes, dead = (
        p
        | beam.Create(records[:10] + [corrupt, wrong_size, black]
                      + records[10:])
        | bulk_encode.EncodeImages(model_root, max_batch_size=64)
    )
    assert_that(
        codes | beam.Map(lambda r: (r.id, r.code, r.metadata)),
        _codes_close_to({r.id: c for r, c in zip(records, expected)}),
        label="CheckCodes",
    )
    assert_that(dead, check_dead, label="CheckDead")
    result = p.run()
    result.wait_until_finish()
    assert dead_letter_counts(result) == {
        bulk_encode.ENCODE_STAGE: 2,
        bulk_encode.NONFINITE_STAGE: 1,
    }


def test_encode_images_fails_fast_on_bad_model_paths(model_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        bulk_encode.EncodeImages(str(tmp_path))
    with pytest.raises(ValueError, match="one tf.string input"):
        bulk_encode.EncodeImages(model_root, signature="pixels")


def test_image_uri_prefix_or_template():
    assert bulk_encode.image_uri("test/007", "") == "test/007"
    assert bulk_encode.image_uri("test/007", "gs://b/") == "gs://b/test/007"
    assert (bulk_encode.image_uri("test/007", "images/{id}.png")
            == "images/test/007.png")

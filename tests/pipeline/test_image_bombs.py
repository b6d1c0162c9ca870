"""A decompression bomb in a Beam record-writing job goes to the dead
letters (stage decode_image), the job goes on (`transforms.PrepareImages`,
which `make_tfrecords` runs)."""

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import transforms
from shrewd_tf.data import records as data
from tests.support import image_bombs
from tests.support.image_sources import decode
from tests.support.image_sources import pixels


def test_bombs_become_dead_letters_and_the_job_goes_on():
    records = [
        data.ImageRecord(id="ok", image=data.encode_png(pixels(16, 16, 3))),
        data.ImageRecord(id="png_bomb", image=image_bombs.real_png_bomb()),
        data.ImageRecord(
            id="gif_bomb",
            image=image_bombs.header_bomb("gif_frames", 8000, 8000),
        ),
    ]
    # FnApiRunner: DirectRunner would first try to fetch the Prism binary.
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        good, dead_letters = (pipeline | beam.Create(records)
                              | transforms.PrepareImages(3, (8, 8)))
        assert_that(good | beam.Map(lambda r: (r.id, decode(r.image).shape)),
                    equal_to([("ok", (8, 8, 3))]), label="Good")
        assert_that(
            dead_letters | beam.Map(
                lambda d: (d.id, d.stage, "max_image_pixels=67108864"
                           in d.reason)
            ),
            equal_to([("png_bomb", "decode_image", True),
                      ("gif_bomb", "decode_image", True)]),
            label="Dead",
        )

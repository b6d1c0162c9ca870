"""Tests for pipeline.dead_letters: tagged, counted, written as JSON lines."""

import glob
import json

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import dead_letters


class RejectOdd(beam.DoFn):
    """Keeps even numbers; odd ones become dead letters of two stages."""

    def process(self, n):
        if n % 2 == 0:
            yield n
        else:
            stage = "small" if n < 5 else "large"
            yield dead_letters.dead_letter(f"n{n}", stage, f"odd value n={n}")


def test_dead_letters_are_tagged_counted_and_written(tmp_path):
    prefix = str(tmp_path / "dead")
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    results = (pipeline | beam.Create(range(10))
               | beam.ParDo(RejectOdd()).with_outputs(
                   dead_letters.DEAD_LETTER_TAG, main="good"))
    assert_that(results.good, equal_to([0, 2, 4, 6, 8]), label="Good")
    _ = results[dead_letters.DEAD_LETTER_TAG] | dead_letters.WriteDeadLetters(
        prefix)
    result = pipeline.run()
    result.wait_until_finish()

    assert dead_letters.dead_letter_counts(result) == {"small": 2, "large": 3}
    paths = glob.glob(prefix + "-*")
    assert [p[len(prefix):] for p in paths] == ["-00000-of-00001.jsonl"]
    letters = dead_letters.read_dead_letters(paths)
    assert sorted(letters, key=lambda d: d.id) == [
        dead_letters.DeadLetter(f"n{n}", "small" if n < 5 else "large",
                                f"odd value n={n}")
        for n in (1, 3, 5, 7, 9)
    ]
    with open(paths[0]) as f:
        first = json.loads(f.readline())
    assert sorted(first) == ["id", "reason", "stage"]


def test_no_dead_letters_writes_an_empty_file(tmp_path):
    prefix = str(tmp_path / "dead")
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    _ = (pipeline | beam.Create([], reshuffle=False).with_output_types(
        dead_letters.DeadLetter) | dead_letters.WriteDeadLetters(prefix))
    result = pipeline.run()
    result.wait_until_finish()
    paths = glob.glob(prefix + "-*")
    assert len(paths) == 1
    assert dead_letters.read_dead_letters(paths) == []
    assert dead_letters.dead_letter_counts(result) == {}


def test_dead_letter_json_round_trip():
    letter = dead_letters.DeadLetter("a/1", "decode_image", 'bad "bytes"')
    assert dead_letters.DeadLetter(**json.loads(letter.to_json())) == letter

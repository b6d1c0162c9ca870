"""Dead-letter outputs shared by the Beam jobs.

A step that can reject an element yields the good ones on its main output
and a `DeadLetter` on the `DEAD_LETTER_TAG` output, counted with a Beam
metric `shrewd/dead_letters_<stage>`. A job writes every dead letter as one
JSON line (`WriteDeadLetters`), so a run finishes, no good record is lost and
each rejected one is listed with the reason.

Example:
    results = rows | beam.ParDo(DecodeImage()).with_outputs(
        DEAD_LETTER_TAG, main="good")
    results[DEAD_LETTER_TAG] | WriteDeadLetters(output_prefix)
"""

import dataclasses
import json

import apache_beam as beam

DEAD_LETTER_TAG = "dead_letters"
METRICS_NAMESPACE = "shrewd"
DEAD_LETTER_SUFFIX = ".jsonl"


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A rejected element.

    Attributes:
        id: the record's id, or where it came from (file:line).
        stage: the step that rejected it ("decode_image", "embed", ...).
        reason: a one-line message naming the field and the value.
    """

    id: str
    stage: str
    reason: str

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def dead_letter(record_id, stage, reason):
    """A tagged `DeadLetter`, counted in `shrewd/dead_letters_<stage>`."""
    beam.metrics.Metrics.counter(
        METRICS_NAMESPACE, f"dead_letters_{stage}"
    ).inc()
    return beam.pvalue.TaggedOutput(
        DEAD_LETTER_TAG, DeadLetter(str(record_id), stage, str(reason))
    )


class WriteDeadLetters(beam.PTransform):
    """Writes `DeadLetter`s as JSON lines to `<prefix>-SSSSS-of-NNNNN.jsonl`.

    Beam's file sink writes to a temporary directory and renames on success,
    so no half-written file is left. One shard (dead letters are few).
    """

    def __init__(self, output_prefix):
        super().__init__()
        self.output_prefix = output_prefix

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToJSON" >> beam.Map(DeadLetter.to_json)
            | "Write" >> beam.io.WriteToText(
                self.output_prefix,
                file_name_suffix=DEAD_LETTER_SUFFIX,
                num_shards=1,
            )
        )


def read_dead_letters(paths):
    """Reads `DeadLetter`s back from JSON-lines files (for reports, tests)."""
    letters = []
    for path in paths:
        with open(path) as f:
            letters.extend(DeadLetter(**json.loads(line)) for line in f if line.strip())
    return letters


def dead_letter_counts(pipeline_result):
    """{stage: count} from a finished pipeline's `dead_letters_*` counters."""
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
    )
    counts = {}
    for counter in query["counters"]:
        name = counter.key.metric.name
        if name.startswith("dead_letters_"):
            stage = name[len("dead_letters_"):]
            counts[stage] = counts.get(stage, 0) + int(counter.committed or counter.attempted or 0)
    return counts

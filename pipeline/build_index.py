"""Beam job: encode a TFRecord split with a SavedModel and index the codes.

    python -m pipeline.build_index --tfrecord-dir data/fmnist \\
        --saved-model exports/shrewd --output-dir indexes/fmnist \\
        [--split test] [--index both|binary|scann] [--binary-method auto] \\
        [--no-rerank] [--direct_num_workers=2 \\
         --direct_running_mode=multi_processing]

`run(BuildIndexOptions(...))` is the typed entry point (the pipeline's
index_builder stage and `shrewd index build` call it); `main(argv)` parses
the flags (`pipeline.build_index_options`; other flags go to Beam, runner
FnApiRunner by default, see `pipeline.options`) and calls it.

The Beam pipeline reads the split's shards, encodes the images in parallel
(`pipeline.bulk_encode.EncodeImages`, the SavedModel loaded once per
worker) and writes the codes with their metadata as TFRecord shards plus
the dead letters into a staging copy of `<output-dir>/codes/`. After the
pipeline, one process reads the codes back, builds the indexes
(`shrewd_tf.retrieval.builder.build_indexes`), saves them to
`<output-dir>/binary/` and `<output-dir>/scann/` (each save atomic: a
server reloading them sees the old or the new index), and only then swaps
the new `codes/` in. A job that fails leaves the previous output as it was.

Dead-letter stages: "parse_example" (a record that is no valid Example),
"encode_image" (the signature rejected the image bytes) and
"nonfinite_code" (NaN or inf in the code). A job in which no image could be
encoded raises ValueError quoting the first dead letters. Bad index flags
fail before the pipeline starts (except those that depend on N, e.g.
nlist > N, which fail at the build and leave the old output).

Scale: the encoding runs on any Beam runner; `codes/` is staged and
swapped in through `pipeline.outputs` (Beam's FileSystems for `gs://`,
`s3://`, ...), so `--output-dir` may be any file system the workers
share. The index build is one process that
streams the codes shards in chunks
(`shrewd_tf.retrieval.builder.build_indexes_from_shards`): the binary index
without re-ranking holds d / 8 bytes per code (twice while sorting) plus one
chunk; ScaNN or re-ranking add one float32 copy (4 d bytes per code). The
measured peaks are in docs/serving.md.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys

import apache_beam as beam

from pipeline import bulk_encode
from pipeline import outputs
from pipeline.build_index_options import BuildIndexOptions
from pipeline.build_index_options import add_arguments
from pipeline.build_index_options import options_from_args
from pipeline.dead_letters import DEAD_LETTER_TAG
from pipeline.dead_letters import WriteDeadLetters
from pipeline.dead_letters import dead_letter
from pipeline.dead_letters import dead_letter_counts
from pipeline.dead_letters import read_dead_letters
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import new_pipeline
from pipeline.outputs import StagedOutputDir
from shrewd_tf import io as shrewd_io
from shrewd_tf.data import records as data
from shrewd_tf.io import write_text_atomically
from shrewd_tf.retrieval import builder as index_builder

log = logging.getLogger(__name__)

PARSE_STAGE = "parse_example"
CODES_INFO_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BuildIndexResult:
    """What a `build_index` run made.

    Attributes:
        output_dir: the job's output directory.
        saved_model_dir: the SavedModel version directory used.
        num_codes: codes indexed.
        code_dim: code length d.
        dead_letters: {stage: count}.
        index_dirs: {kind: saved index directory}.
    """

    output_dir: str
    saved_model_dir: str
    num_codes: int
    code_dim: int
    dead_letters: dict
    index_dirs: dict


# === Transforms ===


class _ParseRecord(beam.DoFn):
    def process(self, serialized):
        try:
            record = data.from_example(serialized)
            data.validate_record(record)
        except Exception as error:  # noqa: BLE001 (any bad record)
            yield dead_letter(
                f"<{len(serialized)} bytes>", PARSE_STAGE, repr(error)
            )
            return
        yield record


class ReadImageRecords(beam.PTransform):
    """TFRecord shards -> (`ImageRecord`s, dead letters of bad examples)."""

    def __init__(self, file_pattern):
        super().__init__()
        self.file_pattern = file_pattern

    def expand(self, pipeline):
        results = (
            pipeline
            | "Read" >> beam.io.ReadFromTFRecord(self.file_pattern)
            | "Parse" >> beam.ParDo(_ParseRecord()).with_outputs(
                DEAD_LETTER_TAG, main="records"
            )
        )
        return results.records, results[DEAD_LETTER_TAG]


class WriteCodes(beam.PTransform):
    """`EncodedRecord`s -> `<directory>/codes-SSSSS-of-NNNNN.tfrecord`.

    One `tf.train.Example` per code (`index_builder.code_example`); counted
    in the Beam metric `shrewd/codes_written`.
    """

    def __init__(self, directory, num_shards=0):
        super().__init__()
        self.directory = directory
        self.num_shards = num_shards

    def expand(self, encoded):
        counter = beam.metrics.Metrics.counter("shrewd", "codes_written")

        def serialize(record):
            counter.inc()
            return index_builder.code_example(
                record.id, record.code, record.metadata
            )

        return (
            encoded
            | "Serialize" >> beam.Map(serialize)
            | "Write" >> beam.io.WriteToTFRecord(
                os.path.join(self.directory, index_builder.CODES_PREFIX),
                file_name_suffix=data.SHARD_SUFFIX,
                num_shards=self.num_shards,
            )
        )


# === Job ===


def codes_written(pipeline_result):
    """The `shrewd/codes_written` counter of a finished pipeline."""
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter()
        .with_namespace("shrewd")
        .with_name("codes_written")
    )
    return sum(int(c.committed or c.attempted or 0) for c in query["counters"])


def run(options, test_pipeline=None):
    """Runs the job.

    Args:
        options: `BuildIndexOptions`.
        test_pipeline: a `TestPipeline` to build on instead of a new one.

    Returns:
        `BuildIndexResult`.

    Raises:
        FileNotFoundError: no dataset_info.json or no SavedModel.
        KeyError: `split` is not in the TFRecord directory.
        ValueError: bad signature, kinds or index parameters, or no image
            could be encoded.
    """
    if not isinstance(options, BuildIndexOptions):
        raise TypeError(
            "run() takes BuildIndexOptions (main() parses a command line). "
            f"Received: {type(options).__name__}"
        )
    index_args = dict(
        kinds=options.kinds,
        binary_method=options.binary_method,
        rerank=options.rerank,
        binary_params=options.binary_params,
        scann_params=options.scann_params,
        num_threads=options.num_threads,
    )
    info = data.DatasetInfo.load(options.tfrecord_dir)
    file_pattern = info.file_pattern(options.split, options.tfrecord_dir)
    # Resolved and checked before any work (fails fast, one version).
    encode = bulk_encode.EncodeImages(
        options.saved_model,
        signature=options.signature,
        output_key=options.output_key,
        max_batch_size=options.batch_size,
        image_uri_prefix=options.image_uri_prefix,
    )
    # Bad index flags fail now, not after encoding the whole split.
    code_shape = encode.signature_info.outputs[options.output_key]
    index_builder.new_indexes(
        code_shape[-1] if code_shape and code_shape[-1] else 8, **index_args
    )
    codes_target = os.path.join(options.output_dir, index_builder.CODES_DIR)
    with StagedOutputDir(codes_target) as staged:
        pipeline = test_pipeline or new_pipeline(options.beam_args)
        records, parse_dead = pipeline | "ReadRecords" >> ReadImageRecords(
            file_pattern
        )
        encoded, encode_dead = records | "Encode" >> encode
        encoded | "WriteCodes" >> WriteCodes(staged.path, options.codes_shards)
        (
            (parse_dead, encode_dead)
            | "FlattenDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> WriteDeadLetters(
                os.path.join(staged.path, "dead_letters")
            )
        )
        result = pipeline.run()
        result.wait_until_finish()
        dead_letters = dead_letter_counts(result)
        if codes_written(result) == 0:
            letters = read_dead_letters([
                path for path in outputs.list_files(staged.path)
                if os.path.basename(path).startswith("dead_letters-")
            ])
            raise ValueError(
                f"No image of {file_pattern} could be encoded. Dead "
                f"letters: {dead_letters}; first: {letters[:3]}"
            )

        # Streamed from the shards: never the whole float codes matrix
        # for the binary index (retrieval.builder.build_indexes_from_shards).
        built = index_builder.build_indexes_from_shards(
            staged.path, options.output_dir, **index_args
        )
        index_dirs = built.directories
        codes_info = {
            "format_version": CODES_INFO_VERSION,
            "tfrecord_dir": (
                os.path.abspath(options.tfrecord_dir)
                if shrewd_io.is_local(options.tfrecord_dir)
                else options.tfrecord_dir
            ),
            "split": options.split,
            "saved_model_dir": encode.saved_model_dir,
            "signature": options.signature,
            "output_key": options.output_key,
            "count": built.count,
            "code_dim": built.code_dim,
            "dead_letters": dead_letters,
            "indexes": sorted(index_dirs),
        }
        write_text_atomically(
            os.path.join(staged.path, index_builder.CODES_INFO_FILE),
            json.dumps(codes_info, indent=2, sort_keys=True) + "\n",
        )
        staged.commit()
    log.info(
        "indexed %d codes of %s/%s; dead letters %s",
        built.count, options.tfrecord_dir, options.split, dead_letters,
    )
    return BuildIndexResult(
        output_dir=options.output_dir,
        saved_model_dir=encode.saved_model_dir,
        num_codes=built.count,
        code_dim=built.code_dim,
        dead_letters=dead_letters,
        index_dirs=index_dirs,
    )


def parse_options(argv=None):
    """`BuildIndexOptions` of a command line (unknown flags go to Beam)."""
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="python -m pipeline.build_index",
            description="Encode a TFRecord split with a SavedModel and "
            "index the codes.",
            epilog="Other flags are Beam pipeline options, e.g. "
            "--direct_num_workers=2 --direct_running_mode=multi_processing "
            f"(default runner: {DEFAULT_RUNNER}).",
        )
    )
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, beam_args)


def main(argv=None):
    """Command-line entry point: prints the result as JSON; returns 0."""
    logging.basicConfig(level=logging.INFO)
    result = run(parse_options(argv))
    print(json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Beam job: an image source -> sharded `tf.train.Example` TFRecords.

    python -m pipeline.make_tfrecords --source fashion_mnist \\
        --output-dir data/fashion_mnist [--direct_num_workers=2 \\
        --direct_running_mode=multi_processing]

Sources (`--source`):

* `fashion_mnist`: the IDX files in `--data-dir` (default: the Debian
  package's directory); splits `train`, `test`.
* `tfds:<name>`: a TFDS dataset already prepared in `--data-dir` (never
  downloads); `--splits` entries are `name` or `name=<tfds split>`, e.g.
  `train=train[:90%],validation=train[90%:],test`.
* `captions:<file>`: a captions file (see `shrewd_tf.data.image_folder`) and the
  images it names. One file holds every split: with two `--splits` names
  (default `train,test`) a record goes to the second when the SHA-256 of
  its id, read as a number in [0, 1), is below `--test-fraction`
  (deterministic; adding rows never moves a record); with one name every
  record goes there. Needs `--image-size`.

Images: `--image-size H,W` and `--channels C` give the shape training
decodes to (defaults: the source's own, 3 channels for captions). Images of
another size or channel count go through `preprocess.preprocess_image`
(channels converted, resized with antialiased bilinear, rounded to uint8;
what training and the exported model run too) and are re-encoded as PNG,
unless `--keep-image-bytes`: then files are stored as they are (training's
`data.parse_example` runs the same function on them) and images with
another channel count are rejected. Images smaller than
`--min-image-size` (default 8,8) are rejected.

Output (`--output-dir`, a local path or any `scheme://` Beam's
`FileSystems` knows, e.g. `gs://`; moved into place on success, see
`pipeline.outputs.StagedOutputDir`): `<split>-SSSSS-of-NNNNN.tfrecord`
shards (`data.shard_count` of about `--records-per-shard` records),
`dead_letters-00000-of-00001.jsonl` (one JSON object per rejected element:
id, stage, reason) and `dataset_info.json` (`data.DatasetInfo`; split counts
are the records actually written; `statistics` holds each split's
per-channel pixel mean and std and records per label, combined in the same
pipeline by `transforms.SplitStatistics`). Other flags go to Beam
(`--runner`, ...).

`run(MakeTFRecordsOptions(...))` is the typed entry point (the pipeline's
example_gen stage calls it); `main(argv)` parses the flags into the options.
`pipeline.source_plans` resolves `--source` into the readers to apply.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys

import apache_beam as beam

from pipeline import outputs
from pipeline import transforms
from pipeline.dead_letters import WriteDeadLetters
from pipeline.dead_letters import dead_letter_counts
from pipeline.outputs import StagedOutputDir
from pipeline.outputs import WriteTFRecords
from pipeline.outputs import records_written
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import options_from_argv
from pipeline.options import new_pipeline
from pipeline.source_plans import make_plan
from shrewd_tf.data import image_folder
from shrewd_tf.data import records as data

log = logging.getLogger(__name__)

DEAD_LETTERS_PREFIX = "dead_letters"
# Per-split statistics, written by the pipeline into the staging
# directory, read into dataset_info.json and deleted before the commit.
STATISTICS_FILE = ".statistics.jsonl"
DEFAULT_RECORDS_PER_SHARD = 10_000
DEFAULT_TEST_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class MakeTFRecordsResult:
    """What a finished job wrote.

    Attributes:
        output_dir: the committed directory.
        splits: {split: records written}.
        dead_letters: {stage: rejected elements} (stages with none absent).
        info: the `data.DatasetInfo` saved in `output_dir`.
        dead_letter_files: paths of the dead-letter JSON-lines files.
    """

    output_dir: str
    splits: dict
    dead_letters: dict
    info: data.DatasetInfo
    dead_letter_files: tuple = ()


@dataclasses.dataclass(frozen=True)
class MakeTFRecordsOptions:
    """Options of one job run: the flags' values (module docstring).

    Attributes:
        source: "fashion_mnist", "tfds:<name>" or "captions:<file>".
        output_dir: the directory to write (swapped in on success).
        data_dir: Fashion-MNIST IDX directory, or the TFDS data directory.
        splits: comma-separated split names; tfds: name=<tfds split>.
        test_fraction: captions: share of ids (by hash) in the 2nd split.
        image_size: (H, W) training decodes to, or None (the source's).
        channels: 1, 3 or 4, or None (the source's).
        keep_image_bytes: store image files as they are.
        min_image_size: (h, w) below which images are rejected.
        class_names_file: captions: class names in label order.
        captions_format: captions: the file's format, or None (by suffix).
        records_per_shard: about this many records per shard.
        limit: fashion_mnist: only the first N records of each split.
        beam_args: Beam pipeline flags (FnApiRunner unless they name one).
    """

    source: str
    output_dir: str
    data_dir: str | None = None
    splits: str = "train,test"
    test_fraction: float = DEFAULT_TEST_FRACTION
    image_size: tuple | None = None
    channels: int | None = None
    keep_image_bytes: bool = False
    min_image_size: tuple = transforms.DEFAULT_MIN_IMAGE_SIZE
    class_names_file: str | None = None
    captions_format: str | None = None
    records_per_shard: int = DEFAULT_RECORDS_PER_SHARD
    limit: int | None = None
    beam_args: tuple = ()


# === Arguments ===


def _pair(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected two positive integers H,W. Received: {text!r}"
        )
    return values


def build_arg_parser():
    """The job's own flags (everything else is passed to Beam)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.make_tfrecords",
        description="Image source -> sharded tf.train.Example TFRecords.",
        epilog=(
            "Other flags are Beam pipeline options, e.g. "
            "--runner=DataflowRunner or --direct_num_workers=2 "
            "--direct_running_mode=multi_processing"
            f" (default runner: {DEFAULT_RUNNER})."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--source", required=True,
        help="fashion_mnist | tfds:<name> | captions:<file>")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--data-dir",
        help="Fashion-MNIST IDX directory, or the TFDS data directory")
    parser.add_argument(
        "--splits", default="train,test",
        help="comma-separated split names; tfds: name=<tfds split>")
    parser.add_argument(
        "--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
        help="captions: share of ids (by hash) in the second split")
    parser.add_argument("--image-size", type=_pair, help="H,W")
    parser.add_argument("--channels", type=int, choices=(1, 3, 4))
    parser.add_argument(
        "--keep-image-bytes", action="store_true",
        help="store image files as they are (no resize/re-encode)")
    parser.add_argument(
        "--min-image-size", type=_pair,
        default=transforms.DEFAULT_MIN_IMAGE_SIZE, help="h,w")
    parser.add_argument(
        "--class-names-file",
        help="captions: class names in label order, one per line")
    parser.add_argument(
        "--captions-format", choices=image_folder.CAPTIONS_FORMATS)
    parser.add_argument(
        "--records-per-shard", type=int, default=DEFAULT_RECORDS_PER_SHARD)
    parser.add_argument(
        "--limit", type=int, default=None,
        help="fashion_mnist: only the first N records of each split "
             "(tfds: use --splits train=train[:N])")
    return parser


def parse_options(argv=None):
    """`MakeTFRecordsOptions` of a command line (unknown flags: Beam)."""
    return options_from_argv(
        build_arg_parser().parse_known_args, MakeTFRecordsOptions, argv)


# === The job ===


def _summary(result):
    splits = " ".join(f"{s}={n}" for s, n in result.splits.items())
    dead = " ".join(
        f"{s}={n}" for s, n in sorted(result.dead_letters.items())
    ) or "none"
    return (f"make_tfrecords {result.info.source} -> {result.output_dir}: "
            f"records {splits}; dead letters {dead}")


def _read_statistics(path):
    """{split: statistics} from the job's JSON lines (then deleted)."""
    lines = outputs.read_bytes(path).decode("utf-8").splitlines()
    outputs.delete_tree(path)
    return {split: stats for split, stats in map(json.loads, lines)}


def run(options, test_pipeline=None):
    """Runs the job; see the module docstring for the flags.

    Args:
        options: `MakeTFRecordsOptions` (`main` parses a command line).
        test_pipeline: a `TestPipeline` to build on instead of a new one.

    Returns:
        `MakeTFRecordsResult`.

    Raises:
        TypeError: `options` is not `MakeTFRecordsOptions`.
        ValueError: bad flags, or a captions file with a bad header.
        FileNotFoundError: a missing source file or directory.
        RuntimeError: the pipeline did not finish.
    """
    if not isinstance(options, MakeTFRecordsOptions):
        raise TypeError(
            "run() takes MakeTFRecordsOptions (main() parses a command "
            f"line). Received: {type(options).__name__}"
        )
    if options.records_per_shard < 1:
        raise ValueError(
            "--records-per-shard must be positive. Received: "
            f"--records-per-shard={options.records_per_shard}"
        )
    if options.limit is not None and options.source != "fashion_mnist":
        raise ValueError(
            "--limit is for --source fashion_mnist; for tfds use split "
            "slices (--splits train=train[:N]). Received: "
            f"--source={options.source!r}"
        )
    plan = make_plan(options)
    with StagedOutputDir(options.output_dir) as staged:
        pipeline = test_pipeline or new_pipeline(options.beam_args)
        per_split, dead_letters = plan.build(pipeline)
        keyed = []
        for split, records in per_split.items():
            records, rejected = records | f"{split}/Validate" >> (
                transforms.ValidateRecords())
            dead_letters.append(rejected)
            num_shards = data.shard_count(
                plan.counts[split], options.records_per_shard)
            _ = records | f"{split}/Write" >> WriteTFRecords(
                staged.path, split, num_shards)
            keyed.append(records | f"{split}/KeyBySplit" >> beam.Map(
                lambda record, name: (name, record), split))
        statistics_path = os.path.join(staged.path, STATISTICS_FILE)
        _ = (
            tuple(keyed)
            | "AllSplits" >> beam.Flatten(pipeline=pipeline)
            | "Statistics" >> transforms.SplitStatistics(plan.image_shape)
            | "StatisticsToJSON" >> beam.Map(json.dumps)
            | "WriteStatistics" >> beam.io.WriteToText(
                statistics_path, num_shards=1, shard_name_template="")
        )
        _ = (
            tuple(dead_letters)
            | "AllDeadLetters" >> beam.Flatten(pipeline=pipeline)
            | "WriteDeadLetters" >> WriteDeadLetters(
                os.path.join(staged.path, DEAD_LETTERS_PREFIX))
        )
        pipeline_result = pipeline.run()
        state = pipeline_result.wait_until_finish()
        if state not in (None, beam.runners.runner.PipelineState.DONE):
            raise RuntimeError(f"make_tfrecords pipeline ended in {state}")
        counts = {
            split: records_written(pipeline_result, split)
            for split in per_split
        }
        info = data.DatasetInfo(
            image_shape=plan.image_shape,
            class_names=plan.class_names,
            splits=counts,
            source=plan.source,
            statistics=_read_statistics(statistics_path),
        )
        outputs.save_dataset_info(info, staged.path)
        staged.commit()
    result = MakeTFRecordsResult(
        output_dir=staged.target,
        splits=counts,
        dead_letters=dead_letter_counts(pipeline_result),
        info=info,
        dead_letter_files=tuple(
            path for path in outputs.list_files(staged.target)
            if os.path.basename(path).startswith(f"{DEAD_LETTERS_PREFIX}-")
        ),
    )
    for split, count in counts.items():
        if count == 0:
            log.warning("split %r has no records", split)
    log.info("%s", _summary(result))
    return result


def main(argv=None):
    """Command-line entry point; returns the exit code (2: bad input)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        run(parse_options(argv))
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

Output (`--output-dir`, swapped in whole on success, see
`pipeline.outputs.StagedOutputDir`): `<split>-SSSSS-of-NNNNN.tfrecord`
shards (`data.shard_count` of about `--records-per-shard` records),
`dead_letters-00000-of-00001.jsonl` (one JSON object per rejected element:
id, stage, reason) and `dataset_info.json` (`data.DatasetInfo`; split counts
are the records actually written). Other flags go to Beam (`--runner`, ...).

`run(MakeTFRecordsOptions(...))` is the typed entry point (the pipeline's
example_gen stage calls it); `main(argv)` parses the flags into the options.
"""

import argparse
import dataclasses
import glob
import logging
import os
import re
import sys

import apache_beam as beam

from pipeline import transforms
from pipeline.dead_letters import WriteDeadLetters
from pipeline.dead_letters import dead_letter_counts
from pipeline.outputs import StagedOutputDir
from pipeline.outputs import WriteTFRecords
from pipeline.outputs import records_written
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import as_options
from pipeline.options import options_from_argv
from pipeline.options import pipeline_options
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets
from shrewd_tf.data import image_folder

log = logging.getLogger(__name__)

DEAD_LETTERS_PREFIX = "dead_letters"
DEFAULT_RECORDS_PER_SHARD = 10_000
DEFAULT_TEST_FRACTION = 0.1
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


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


@dataclasses.dataclass
class _Plan:
    """A source resolved before the pipeline is built."""

    source: str
    image_shape: tuple
    class_names: tuple
    counts: dict  # split -> expected records (for shard counts)
    build: object  # pipeline -> ({split: records}, [dead letters])


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


def _parse_splits(text):
    """'train,val=train[90%:]' -> [('train', 'train'), ('val', ...)]."""
    splits = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        name, _, spec = entry.partition("=")
        name, spec = name.strip(), spec.strip() or name.strip()
        if not _SPLIT_NAME.match(name):
            raise ValueError(
                "split names must be letters, digits or '_' (they start the "
                f"shard file names). Received: split={name!r}"
            )
        splits.append((name, spec))
    names = [n for n, _ in splits]
    if not names or len(set(names)) != len(names):
        raise ValueError(
            f"--splits must name distinct splits. Received: --splits={text!r}"
        )
    return splits


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


# === Sources ===


def _image_shape(args, native):
    """(H, W, C) training decodes to; `native` may hold None."""
    size = args.image_size or native[:2]
    channels = args.channels or native[2]
    shape = (*size, channels)
    if any(v is None for v in shape):
        raise ValueError(
            f"--source {args.source}: images differ in size; pass "
            f"--image-size H,W (and --channels). Received: native "
            f"shape={native}"
        )
    return tuple(int(v) for v in shape)


def _prepare_step(args, native, image_shape):
    """PrepareImages for records of shape `native`, or None if not needed."""
    if args.keep_image_bytes:
        if native[2] == image_shape[2]:
            return None
        return transforms.PrepareImages(
            image_shape[2], None, args.min_image_size)
    if tuple(native) == image_shape:
        return None
    return transforms.PrepareImages(
        image_shape[2], image_shape[:2], args.min_image_size)


def _apply_prepare(step, split, records, dead_letters):
    if step is None:
        return records
    records, rejected = records | f"{split}/PrepareImages" >> step
    dead_letters.append(rejected)
    return records


def _fashion_mnist_plan(args, splits):
    reads = {}
    for split, spec in splits:
        reads[split] = transforms.ReadFashionMNIST(
            spec, args.data_dir, limit=args.limit)
    native = transforms.ReadFashionMNIST.image_shape
    image_shape = _image_shape(args, native)
    step = _prepare_step(args, native, image_shape)

    def build(pipeline):
        per_split, dead_letters = {}, []
        for split, read in reads.items():
            records = pipeline | f"{split}/ReadFashionMNIST" >> read
            per_split[split] = _apply_prepare(step, split, records,
                                              dead_letters)
        return per_split, dead_letters

    return _Plan(
        source="fashion_mnist",
        image_shape=image_shape,
        class_names=tuple(datasets.FASHION_MNIST_CLASS_NAMES),
        counts={split: read.num_records() for split, read in reads.items()},
        build=build,
    )


def _tfds_plan(args, splits, name):
    reads = {
        split: transforms.ReadTfdsSplit(name, spec, args.data_dir,
                                        id_prefix=split)
        for split, spec in splits
    }
    descriptions = {split: read.describe() for split, read in reads.items()}
    native, class_names, _ = next(iter(descriptions.values()))
    image_shape = _image_shape(args, native)
    step = _prepare_step(args, native, image_shape)

    def build(pipeline):
        per_split, dead_letters = {}, []
        for split, read in reads.items():
            records = pipeline | f"{split}/ReadTfds" >> read
            per_split[split] = _apply_prepare(step, split, records,
                                              dead_letters)
        return per_split, dead_letters

    return _Plan(
        source=f"tfds:{name}",
        image_shape=image_shape,
        class_names=class_names,
        counts={split: d[2] or 0 for split, d in descriptions.items()},
        build=build,
    )


def _captions_plan(args, splits, captions_file):
    if any(spec != name for name, spec in splits) or len(splits) > 2:
        raise ValueError(
            "captions sources take one or two plain split names (the second "
            f"gets --test-fraction of the ids). Received: --splits="
            f"{args.splits!r}"
        )
    class_names = None
    if args.class_names_file:
        with open(args.class_names_file, encoding="utf-8") as f:
            class_names = [line.strip() for line in f if line.strip()]
    image_shape = _image_shape(args, (None, None, 3))
    read = transforms.ReadImageFolder(
        captions_file,
        class_names=class_names,
        channels=image_shape[2],
        image_size=None if args.keep_image_bytes else image_shape[:2],
        min_size=args.min_image_size,
        format=args.captions_format,
    )
    names = [name for name, _ in splits]
    fraction = args.test_fraction
    counts = dict.fromkeys(names, 0)
    for row in image_folder.read_captions(captions_file, read.format):
        test = (len(names) == 2
                and transforms.id_hash_fraction(row.id) < fraction)
        counts[names[int(test)]] += 1

    def build(pipeline):
        records, dead_letters = pipeline | "ReadImageFolder" >> read
        if len(names) == 1:
            return {names[0]: records}, [dead_letters]
        train, test = records | "SplitByIdHash" >> transforms.SplitByIdHash(
            fraction)
        return {names[0]: train, names[1]: test}, [dead_letters]

    return _Plan(
        source="captions",
        image_shape=image_shape,
        class_names=read.class_names,
        counts=counts,
        build=build,
    )


def make_plan(args):
    """Resolves `--source` into a `_Plan` (reads headers and counts)."""
    splits = _parse_splits(args.splits)
    kind, _, value = args.source.partition(":")
    if args.source == "fashion_mnist":
        return _fashion_mnist_plan(args, splits)
    if kind == "tfds" and value:
        return _tfds_plan(args, splits, value)
    if kind == "captions" and value:
        return _captions_plan(args, splits, value)
    raise ValueError(
        "--source must be fashion_mnist, tfds:<name> or captions:<file>. "
        f"Received: --source={args.source!r}"
    )


# === The job ===


def _summary(result):
    splits = " ".join(f"{s}={n}" for s, n in result.splits.items())
    dead = " ".join(
        f"{s}={n}" for s, n in sorted(result.dead_letters.items())
    ) or "none"
    return (f"make_tfrecords {result.info.source} -> {result.output_dir}: "
            f"records {splits}; dead letters {dead}")


def run(options, test_pipeline=None):
    """Runs the job; see the module docstring for the flags.

    Args:
        options: `MakeTFRecordsOptions` (a command line, a list of str, is
            parsed for callers written before the options).
        test_pipeline: a `TestPipeline` to build on instead of a new one.

    Returns:
        `MakeTFRecordsResult`.

    Raises:
        ValueError: bad flags, or a captions file with a bad header.
        FileNotFoundError: a missing source file or directory.
        RuntimeError: the pipeline did not finish.
    """
    args = as_options(options, MakeTFRecordsOptions, parse_options)
    beam_args = args.beam_args
    if "://" in args.output_dir:
        raise ValueError(
            "--output-dir must be a local or mounted shared path: the "
            "output is swapped in with a rename. Received: "
            f"--output-dir={args.output_dir!r}"
        )
    if args.records_per_shard < 1:
        raise ValueError(
            "--records-per-shard must be positive. Received: "
            f"--records-per-shard={args.records_per_shard}"
        )
    if args.limit is not None and args.source != "fashion_mnist":
        raise ValueError(
            "--limit is for --source fashion_mnist; for tfds use split "
            "slices (--splits train=train[:N]). Received: "
            f"--source={args.source!r}"
        )
    plan = make_plan(args)
    with StagedOutputDir(args.output_dir) as staged:
        pipeline = test_pipeline or beam.Pipeline(
            options=pipeline_options(beam_args)
        )
        per_split, dead_letters = plan.build(pipeline)
        for split, records in per_split.items():
            records, rejected = records | f"{split}/Validate" >> (
                transforms.ValidateRecords())
            dead_letters.append(rejected)
            num_shards = data.shard_count(
                plan.counts[split], args.records_per_shard)
            _ = records | f"{split}/Write" >> WriteTFRecords(
                staged.path, split, num_shards)
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
        )
        info.save(staged.path)
        staged.commit()
    result = MakeTFRecordsResult(
        output_dir=staged.target,
        splits=counts,
        dead_letters=dead_letter_counts(pipeline_result),
        info=info,
        dead_letter_files=tuple(sorted(glob.glob(os.path.join(
            staged.target, f"{DEAD_LETTERS_PREFIX}-*")))),
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

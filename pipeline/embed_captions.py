"""Beam job: fill `caption_embedding` in every record of a TFRecord directory.

Reads each split of `--input-dir` (a directory written by
`pipeline.make_tfrecords`), embeds the captions with a sentence encoder
(`pipeline.embeddings.EmbedCaptions`) and writes the same splits, with as
many shards as the input, to `--output-dir`, plus the dead letters
(`dead_letters-00000-of-00001.jsonl`: empty captions, nan or mis-sized
embeddings) and a `dataset_info.json` copied from the input with
`embedding_dim`, `text_encoder` and the new record counts. Records are not
kept in input order; ids, images, labels and captions are kept.

The output is staged and swapped in only when the pipeline succeeded, so a
failed run leaves an existing `--output-dir` as it was (see
`pipeline.outputs`). `--output-dir` may equal `--input-dir`. Both may be
local paths or any `scheme://` Beam's `FileSystems` knows (`gs://`,
`s3://`, ...): the job reads and writes through Beam only.

Run:
    python -m pipeline.embed_captions --input-dir data/coco \\
        --output-dir data/coco_embedded \\
        [--text-encoder PATH_OR_HUB_HANDLE] [--max-batch-size 64] \\
        [--direct_num_workers=2 --direct_running_mode=multi_processing]

Other flags are Beam pipeline options (default runner: FnApiRunner, the
local runner; `--runner=DataflowRunner ...` for a cluster).

`run(EmbedCaptionsOptions(...))` is the typed entry point (the pipeline's
semantics stage calls it); `main(argv)` parses the flags into the options.
"""

import argparse
import dataclasses
import logging
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import dead_letters
from pipeline import embeddings
from pipeline import outputs
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import options_from_argv
from pipeline.options import new_pipeline
from shrewd_tf.data import records as data

log = logging.getLogger(__name__)

DEAD_LETTERS_PREFIX = "dead_letters"


@dataclasses.dataclass(frozen=True)
class EmbedCaptionsOptions:
    """Options of one `embed_captions` run.

    Attributes:
        input_dir: TFRecord directory with dataset_info.json.
        output_dir: directory to write (replaced on success; may equal
            `input_dir`).
        text_encoder: SentenceEncoder model path or TF-Hub handle (None:
            all-MiniLM-L6-v2).
        max_batch_size: captions per encoder call.
        beam_args: Beam pipeline flags (FnApiRunner unless they name one).
    """

    input_dir: str
    output_dir: str
    text_encoder: str | None = None
    max_batch_size: int = embeddings.DEFAULT_MAX_BATCH_SIZE
    beam_args: tuple = ()


@dataclasses.dataclass(frozen=True)
class EmbedCaptionsResult:
    """What an `embed_captions` run wrote.

    Attributes:
        output_dir: the committed directory (absolute when local).
        splits: {split: records written}.
        dead_letters: {stage: rejected records}.
        embedding_dim: embedding width, None when no caption was embedded.
        text_encoder: the encoder's name.
    """

    output_dir: str
    splits: dict
    dead_letters: dict
    embedding_dim: int | None
    text_encoder: str


def parse_args(argv=None):
    """Returns `(job args, Beam args)`; unknown flags go to Beam."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.embed_captions",
        description="Embed the captions of a TFRecord directory.",
        epilog="Other flags are Beam pipeline options, e.g. "
               "--direct_num_workers=2 --direct_running_mode=multi_processing "
               "or --runner=DataflowRunner (default runner: "
               f"{DEFAULT_RUNNER}).",
    )
    parser.add_argument("--input-dir", required=True,
                        help="TFRecord directory with dataset_info.json")
    parser.add_argument("--output-dir", required=True,
                        help="directory to write (replaced on success)")
    parser.add_argument("--text-encoder", default=None,
                        help="SentenceEncoder model path or TF-Hub handle "
                             "(default all-MiniLM-L6-v2)")
    parser.add_argument("--max-batch-size", type=int,
                        default=EmbedCaptionsOptions.max_batch_size,
                        help="captions per encoder call")
    return parser.parse_known_args(argv)


def parse_options(argv=None):
    """`EmbedCaptionsOptions` of a command line (unknown flags: Beam)."""
    return options_from_argv(parse_args, EmbedCaptionsOptions, argv)


def input_shard_count(pattern):
    """Number of files matching `pattern`.

    Raises:
        FileNotFoundError: none match.
    """
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"No TFRecord shards match {pattern!r}")
    return len(matches)


class ReadRecords(beam.PTransform):
    """TFRecord shards -> `ImageRecord`s (`data.from_example`)."""

    def __init__(self, file_pattern):
        super().__init__()
        self.file_pattern = file_pattern

    def expand(self, pipeline):
        return (
            pipeline
            | "ReadTFRecord" >> beam.io.ReadFromTFRecord(self.file_pattern)
            | "FromExample" >> beam.Map(data.from_example)
        )


class EmbedDirectory(beam.PTransform):
    """Reads splits, embeds their captions, writes shards and dead letters.

    Applied to the pipeline itself; one `RunInference` serves every split,
    so each worker loads one model.

    Args:
        input_dir: the TFRecord directory to read.
        shards: {split: shard count to write}.
        output_dir: where the shards and `dead_letters-*.jsonl` go.
        model_handler: strings -> `[E]` vectors.
    """

    def __init__(self, input_dir, shards, output_dir, model_handler):
        super().__init__()
        self.input_dir = input_dir
        self.shards = dict(shards)
        self.output_dir = output_dir
        self.model_handler = model_handler

    def expand(self, pipeline):
        split_names = list(self.shards)
        keyed = [
            pipeline
            | f"Read[{split}]" >> ReadRecords(
                data.DatasetInfo.file_pattern_for(self.input_dir, split))
            | f"KeyBySplit[{split}]" >> beam.Map(
                lambda record, index: (index, record), index)
            for index, split in enumerate(split_names)
        ]
        embedded, rejected = (
            keyed
            | "FlattenSplits" >> beam.Flatten()
            | "EmbedCaptions" >> embeddings.EmbedKeyedCaptions(
                model_handler=self.model_handler)
        )
        by_split = embedded | "PartitionBySplit" >> beam.Partition(
            lambda pair, _: pair[0], len(split_names)
        )
        for index, split in enumerate(split_names):
            _ = (
                by_split[index]
                | f"DropSplit[{split}]" >> beam.Values()
                | f"Write[{split}]" >> outputs.WriteTFRecords(
                    self.output_dir, split, self.shards[split])
            )
        return rejected | "WriteDeadLetters" >> dead_letters.WriteDeadLetters(
            os.path.join(self.output_dir, DEAD_LETTERS_PREFIX)
        )


def run(options, test_pipeline=None, model_handler=None):
    """Runs the job.

    Args:
        options: `EmbedCaptionsOptions` (`main` parses a command line).
        test_pipeline: a `TestPipeline` to build on instead of a new one.
        model_handler: a ModelHandler of strings -> `[E]` vectors to use
            instead of `SentenceEncoderModelHandler(text_encoder)` (tests).

    Returns:
        `EmbedCaptionsResult`.

    Raises:
        TypeError: `options` is not `EmbedCaptionsOptions`.
        FileNotFoundError: no dataset_info.json or no shards of a split.
        RuntimeError: the pipeline did not finish (the output is untouched).
    """
    if not isinstance(options, EmbedCaptionsOptions):
        raise TypeError(
            "run() takes EmbedCaptionsOptions (main() parses a command "
            f"line). Received: {type(options).__name__}"
        )
    info = outputs.load_dataset_info(options.input_dir)
    handler = model_handler or embeddings.SentenceEncoderModelHandler(
        options.text_encoder, max_batch_size=options.max_batch_size
    )
    encoder_name = getattr(handler, "encoder_name", type(handler).__name__)
    shards = {
        split: input_shard_count(info.file_pattern(split, options.input_dir))
        for split in info.splits
    }
    with outputs.StagedOutputDir(options.output_dir) as staged:
        pipeline = test_pipeline or new_pipeline(options.beam_args)
        _ = pipeline | "EmbedDirectory" >> EmbedDirectory(
            options.input_dir, shards, staged.path, handler)
        result = pipeline.run()
        state = result.wait_until_finish()
        if state != beam.runners.runner.PipelineState.DONE:
            raise RuntimeError(
                f"The pipeline did not finish; {options.output_dir} is "
                f"untouched. Received: state={state}"
            )
        counts = {split: outputs.records_written(result, split)
                  for split in shards}
        dim = embeddings.embedding_dim(result)
        new_info = dataclasses.replace(
            info, splits=counts, embedding_dim=dim, text_encoder=encoder_name
        )
        outputs.save_dataset_info(new_info, staged.path)
        staged.commit()
    letters = dead_letters.dead_letter_counts(result)
    if dim is None:
        log.warning("no caption was embedded; see the dead letters in %s",
                    options.output_dir)
    log.info("wrote %s: %s, dead letters %s", options.output_dir, counts,
             letters)
    return EmbedCaptionsResult(
        output_dir=outputs.output_path(options.output_dir),
        splits=counts,
        dead_letters=letters,
        embedding_dim=dim,
        text_encoder=encoder_name,
    )


def main(argv=None):
    """Command-line entry point; returns 0."""
    logging.basicConfig(level=logging.INFO)
    run(parse_options(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Beam job: the C x C class-distance matrix that training matches codes to.

Kinds (`--kind`), all float64 `[C, C]`, symmetric, zero diagonal (the rules
of `shrewd_tf.semantics.distances`):

* `wup`: `1 - WUP` between the classes' WordNet noun synsets, the closer of
  the two directions, 0 for two classes with the same synset;
* `lcs`: Barz & Denzler's `height(lcs) / max height` on a "parent child"
  hierarchy file (`--hierarchy-file`), classes mapped to tree nodes by an
  `id name` file (`--class-ids-file`; without it the class names are the
  node ids);
* `bert`: cosine distance between sentence embeddings of each class's
  WordNet definition (the paper's BERT variant; `--text-encoder`, default
  all-MiniLM-L6-v2), symmetrised as `(d + d.T) / 2`.

Classes, in label order, come from `--dataset` (fashion_mnist, cifar100,
imagenet2012: curated synsets of `shrewd_tf.semantics.class_synsets`;
ImageNet class names are wnids) or from `--tfrecord-dir` (`dataset_info.json`
class names, mapped to synsets by `--synsets-file` lines `name synset`, the
name may contain spaces; without the file each class name must be a synset
name such as `dog.n.01`); see `pipeline.label_classes`.

The rows are computed in parallel, in blocks of `--rows-per-block`
(`pipeline.class_distance_matrix.ClassDistanceMatrix`): a DoFn loads
WordNet (or the tree) once per worker in `setup()` and emits its rows; for
`bert` the definitions are embedded with `RunInference` first and the
embeddings reach the row blocks as a side input. The blocks are assembled
into one matrix, written to a temporary file and renamed to `<output>.npy`
when the pipeline has succeeded; `<output>.json` (class names, synsets,
kind, text encoder, ...) is then written atomically. A failed run leaves
existing outputs as they were. `--output` may be local or on any file
system Beam's `FileSystems` knows (`gs://`, `s3://`, ...): the worker
writes the matrix through `FileSystems`, the driver checks and renames it.

Run:
    python -m pipeline.label_distances --kind wup --dataset cifar100 \\
        --output data/cifar100_wup
    python -m pipeline.label_distances --kind lcs --dataset cifar100 \\
        --hierarchy-file cifar.parent-child.txt \\
        --class-ids-file class_names.txt --output data/cifar100_lcs
    python -m pipeline.label_distances --kind bert \\
        --tfrecord-dir data/fmnist --synsets-file fmnist_synsets.txt \\
        --output data/fmnist_bert [--direct_num_workers=2 \\
        --direct_running_mode=multi_processing]

Other flags are Beam pipeline options (default runner: FnApiRunner).

`run(LabelDistancesOptions(...))` is the typed entry point (the pipeline's
semantics stage calls it); `main(argv)` parses the flags into the options.
"""

import argparse
import dataclasses
import io
import json
import logging
import os
import tempfile
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import embeddings
from pipeline import label_classes
from pipeline import outputs
from pipeline.class_distance_matrix import KINDS
from pipeline.class_distance_matrix import ClassDistanceMatrix
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import options_from_argv
from pipeline.options import new_pipeline
from shrewd_tf.data import class_semantics
from shrewd_tf import io as io_lib
from shrewd_tf.semantics import class_synsets
from shrewd_tf.semantics import distances as semantics

log = logging.getLogger(__name__)

DEFAULT_ROWS_PER_BLOCK = 64


# === Options ===


@dataclasses.dataclass(frozen=True)
class LabelDistancesOptions:
    """Options of one `label_distances` run.

    Attributes:
        kind: "wup", "lcs" or "bert".
        output: path prefix: writes `<output>.npy` and `<output>.json`.
        dataset: a known dataset whose classes to use, or None.
        tfrecord_dir: a TFRecord directory whose class names to use, or
            None (exactly one of `dataset` and `tfrecord_dir`).
        synsets_file: "name synset" lines for `tfrecord_dir`.
        hierarchy_file: "parent child" edges (lcs).
        class_ids_file: "id name" lines mapping classes to tree nodes
            (lcs; default: class names are node ids).
        text_encoder: SentenceEncoder model path or TF-Hub handle (bert;
            None: all-MiniLM-L6-v2).
        wordnet_root: nltk_data root holding corpora/wordnet (None:
            <sys.prefix>/nltk_data).
        rows_per_block: matrix rows per parallel work item.
        beam_args: Beam pipeline flags (FnApiRunner unless they name one).
    """

    kind: str
    output: str
    dataset: str | None = None
    tfrecord_dir: str | None = None
    synsets_file: str | None = None
    hierarchy_file: str | None = None
    class_ids_file: str | None = None
    text_encoder: str | None = None
    wordnet_root: str | None = None
    rows_per_block: int = DEFAULT_ROWS_PER_BLOCK
    beam_args: tuple = ()


@dataclasses.dataclass(frozen=True)
class LabelDistancesResult:
    """What a `label_distances` run wrote.

    Attributes:
        matrix_path: `<output>.npy`, float64 [C, C].
        metadata_path: `<output>.json`.
        kind: the distance kind.
        num_classes: C.
    """

    matrix_path: str
    metadata_path: str
    kind: str
    num_classes: int


# === Command line ===


def parse_args(argv=None):
    """Returns `(job args, Beam args)`; unknown flags go to Beam."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.label_distances",
        description="Compute a C x C class-distance matrix.",
        epilog="Other flags are Beam pipeline options, e.g. "
               "--direct_num_workers=2 --direct_running_mode=multi_processing "
               f"(default runner: {DEFAULT_RUNNER}).",
    )
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--output", required=True,
                        help="path prefix: writes <output>.npy and .json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=class_synsets.DATASET_NAMES)
    source.add_argument("--tfrecord-dir",
                        help="TFRecord directory whose class names to use")
    parser.add_argument("--synsets-file",
                        help="'name synset' lines for --tfrecord-dir")
    parser.add_argument("--hierarchy-file",
                        help="'parent child' edges (lcs)")
    parser.add_argument("--class-ids-file",
                        help="'id name' lines mapping classes to tree nodes "
                             "(lcs; default: class names are node ids)")
    parser.add_argument("--text-encoder", default=None,
                        help="SentenceEncoder model path or TF-Hub handle "
                             "(bert; default all-MiniLM-L6-v2)")
    parser.add_argument("--wordnet-root", default=None,
                        help="nltk_data root holding corpora/wordnet "
                             "(default <sys.prefix>/nltk_data)")
    parser.add_argument("--rows-per-block", type=int,
                        default=LabelDistancesOptions.rows_per_block)
    return parser.parse_known_args(argv)


def parse_options(argv=None):
    """`LabelDistancesOptions` of a command line (unknown flags: Beam)."""
    return options_from_argv(parse_args, LabelDistancesOptions, argv)


# === Job ===


def output_paths(output):
    """`<output>.npy`, `<output>.json` (a trailing `.npy` is dropped)."""
    prefix = output[:-4] if output.endswith(".npy") else output
    prefix = outputs.output_path(prefix)
    return prefix + ".npy", prefix + ".json"


def check_options(options):
    """Raises on options no run can use, before anything is loaded.

    Raises:
        TypeError: `options` is not `LabelDistancesOptions`.
        ValueError: an unknown kind, `lcs` without a hierarchy file, or
            rows_per_block < 1.
    """
    if not isinstance(options, LabelDistancesOptions):
        raise TypeError(
            "run() takes LabelDistancesOptions (main() parses a command "
            f"line). Received: {type(options).__name__}"
        )
    if options.kind not in KINDS:
        raise ValueError(
            f"kind must be one of {KINDS}. Received: kind={options.kind!r}"
        )
    if options.kind == "lcs" and not options.hierarchy_file:
        raise ValueError(
            "--kind lcs needs --hierarchy-file. Received: "
            f"hierarchy_file={options.hierarchy_file!r}"
        )
    if options.rows_per_block < 1:
        raise ValueError(
            "rows_per_block must be >= 1. Received: "
            f"rows_per_block={options.rows_per_block}"
        )


def kind_inputs(options, classes, wordnet, model_handler=None):
    """What `ClassDistanceMatrix` needs for `options.kind`, and the metadata.

    Args:
        options: checked `LabelDistancesOptions`.
        classes: the `label_classes.ClassList`.
        wordnet: a WordNet reader (None for `lcs`).
        model_handler: for `bert`, strings -> `[D]` vectors (None: a
            `SentenceEncoderModelHandler` of `options.text_encoder`).

    Returns:
        `(transform keyword arguments, metadata dict for <output>.json)`.

    Raises:
        ValueError: an unknown (or, for wup, non-noun) synset.
    """
    kind = options.kind
    metadata = {
        "kind": kind,
        "num_classes": len(classes.names),
        "class_names": list(classes.names),
        "synsets": list(classes.synsets) if classes.synsets else None,
        "source": classes.source,
        "text_encoder": "",
    }
    if kind in ("wup", "bert"):
        label_classes.check_synsets(classes.synsets, wordnet,
                                    nouns_only=kind == "wup")
    if kind == "wup":
        return dict(synsets=classes.synsets,
                    wordnet_root=options.wordnet_root), metadata
    if kind == "lcs":
        edges = semantics.read_parent_child_edges(options.hierarchy_file)
        node_ids = (
            class_semantics._class_ids_in_label_order(
                options.class_ids_file, classes.names)
            if options.class_ids_file else list(classes.names)
        )
        metadata.update(node_ids=node_ids,
                        hierarchy_file=outputs.output_path(
                            options.hierarchy_file))
        return dict(edges=edges, node_ids=node_ids), metadata
    handler = model_handler or embeddings.SentenceEncoderModelHandler(
        options.text_encoder)
    definitions = semantics.synset_definitions(classes.synsets, wordnet)
    metadata.update(
        text_encoder=getattr(handler, "encoder_name", type(handler).__name__),
        definitions=definitions,
    )
    return dict(definitions=definitions, model_handler=handler), metadata


def save_npy(matrix, path):
    """Writes `matrix` to `path` (a temporary name chosen by the driver).

    Runs on a worker, so it writes through Beam's `FileSystems` (a local
    path there is the driver's only with a local runner).
    """
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    with FileSystems.create(
        path, compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        f.write(buffer.getvalue())
    return path


def _staging_npy(npy_path):
    """A new temporary name beside `npy_path` (created empty if local)."""
    if not io_lib.is_local(npy_path):
        parent, name = npy_path.rsplit("/", 1)
        return f"{parent}/.tmp-{name}-{uuid.uuid4().hex[:12]}.npy"
    os.makedirs(os.path.dirname(npy_path), exist_ok=True)
    fd, path = tempfile.mkstemp(
        dir=os.path.dirname(npy_path),
        prefix=f".tmp-{os.path.basename(npy_path)}-", suffix=".npy")
    os.close(fd)
    return path


def write_matrix(pipeline, matrix_transform, npy_path, num_classes):
    """Runs `pipeline` with the matrix saved to `npy_path` on success.

    The matrix goes to a temporary file next to `npy_path`, renamed to it
    once the pipeline is done and the matrix is `[C, C]`; on failure the
    temporary file is removed and `npy_path` is untouched.

    Args:
        pipeline: the Beam pipeline to build on and run.
        matrix_transform: pipeline -> one `[C, C]` matrix.
        npy_path: the `.npy` file to write.
        num_classes: C.

    Raises:
        RuntimeError: the pipeline did not finish, or a matrix of another
            shape.
    """
    staging_npy = _staging_npy(npy_path)
    try:
        _ = (
            pipeline
            | "ClassDistances" >> matrix_transform
            | "SaveMatrix" >> beam.Map(save_npy, staging_npy)
        )
        state = pipeline.run().wait_until_finish()
        if state != beam.runners.runner.PipelineState.DONE:
            raise RuntimeError(
                f"The pipeline did not finish; {npy_path} is untouched. "
                f"Received: state={state}"
            )
        # np.load fails on an empty (unwritten) file.
        matrix = np.load(io.BytesIO(outputs.read_bytes(staging_npy)))
        if matrix.shape != (num_classes, num_classes):
            raise RuntimeError(
                f"Expected a [{num_classes}, {num_classes}] matrix. "
                f"Received: shape={matrix.shape}"
            )
        if io_lib.is_local(npy_path):
            os.replace(staging_npy, npy_path)
        else:
            FileSystems.rename([staging_npy], [npy_path])
    finally:
        outputs.delete_tree(staging_npy)


def run(options, test_pipeline=None, model_handler=None):
    """Runs the job.

    Args:
        options: `LabelDistancesOptions` (`main` parses a command line).
        test_pipeline: a `TestPipeline` to build on instead of a new one.
        model_handler: for `bert`, a ModelHandler of strings -> `[D]`
            vectors to use instead of `text_encoder` (tests).

    Returns:
        `LabelDistancesResult`.

    Raises:
        TypeError: `options` is not `LabelDistancesOptions`.
        ValueError: inconsistent options, unknown classes or synsets.
        RuntimeError: the pipeline did not finish (outputs untouched).
    """
    check_options(options)
    kind = options.kind
    wordnet = (None if kind == "lcs"
               else semantics.load_wordnet(options.wordnet_root))
    classes = label_classes.resolve_classes(
        options.dataset, options.tfrecord_dir, options.synsets_file,
        need_synsets=kind != "lcs", wordnet=wordnet)
    num_classes = len(classes.names)
    transform_args, metadata = kind_inputs(options, classes, wordnet,
                                           model_handler)
    npy_path, json_path = output_paths(options.output)
    pipeline = test_pipeline or new_pipeline(options.beam_args)
    write_matrix(
        pipeline,
        ClassDistanceMatrix(kind, num_classes, options.rows_per_block,
                            **transform_args),
        npy_path, num_classes)
    outputs.write_bytes(json_path, (
        json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    log.info("wrote %s and %s (%d classes, %s)", npy_path, json_path,
             num_classes, kind)
    return LabelDistancesResult(
        matrix_path=npy_path, metadata_path=json_path, kind=kind,
        num_classes=num_classes,
    )


def main(argv=None):
    """Command-line entry point; returns 0."""
    logging.basicConfig(level=logging.INFO)
    run(parse_options(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


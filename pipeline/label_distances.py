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
imagenet2012: curated synsets of `shrewd_tf.semantics.class_synsets`; ImageNet class
names are wnids) or from `--tfrecord-dir` (`dataset_info.json` class names,
mapped to synsets by `--synsets-file` lines `name synset`, the name may
contain spaces; without the file each class name must be a synset name such
as `dog.n.01`).

The rows are computed in parallel, in blocks of `--rows-per-block`: a DoFn
loads WordNet (or the tree) once per worker in `setup()` and emits its rows;
for `bert` the definitions are embedded with `RunInference` first and the
embeddings reach the row blocks as a side input. The blocks are assembled
into one matrix, written to a temporary file and renamed to `<output>.npy`
when the pipeline has succeeded; `<output>.json` (class names, synsets,
kind, text encoder, ...) is then written the same way. A failed run leaves
existing outputs as they were. Local output paths only.

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
import json
import logging
import os
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference_base

from pipeline import embeddings
from pipeline.options import DEFAULT_RUNNER
from pipeline.options import ResultItems
from pipeline.options import as_options
from pipeline.options import options_from_argv
from pipeline.options import pipeline_options
from shrewd_tf.semantics import class_synsets
from shrewd_tf import config
from shrewd_tf.data import records as data
from shrewd_tf.data import pipelines as inputs
from shrewd_tf.semantics import distances as semantics

log = logging.getLogger(__name__)

KINDS = ("wup", "lcs", "bert")
DEFAULT_ROWS_PER_BLOCK = 64


# === Classes ===


@dataclasses.dataclass(frozen=True)
class ClassList:
    """The classes of a matrix, in label order.

    Attributes:
        names: C class names.
        synsets: C WordNet synset names, or None (only `lcs` needs none).
        source: where they came from ("dataset:cifar100", a directory).
    """

    names: tuple
    synsets: tuple | None
    source: str


def dataset_class_names(dataset):
    """Class names of a known dataset in label order (ImageNet: wnids)."""
    if dataset == "fashion_mnist":
        return list(class_synsets.FASHION_MNIST_CLASSES)
    if dataset == "cifar100":
        return list(class_synsets.CIFAR100_CLASSES)
    if dataset == "imagenet2012":
        return class_synsets.imagenet_wnids()
    raise ValueError(
        f"dataset must be one of {class_synsets.DATASET_NAMES}. Received: "
        f"dataset={dataset!r}"
    )


def read_synsets_file(path):
    """`name synset` lines -> {name: synset}; the name may hold spaces.

    Blank lines and lines starting with `#` are skipped.

    Raises:
        ValueError: a line with one field or a name given twice.
    """
    by_name = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.rstrip("\n").rsplit(None, 1)
            if len(fields) != 2:
                raise ValueError(
                    f"{path}:{number}: expected 'name synset'. Received: "
                    f"{line.rstrip()!r}"
                )
            name, synset = fields[0].strip(), fields[1]
            if name in by_name and by_name[name] != synset:
                raise ValueError(
                    f"{path}:{number}: class {name!r} has two synsets. "
                    f"Received: {by_name[name]!r} and {synset!r}"
                )
            by_name[name] = synset
    return by_name


def resolve_classes(dataset=None, tfrecord_dir=None, synsets_file=None,
                    need_synsets=True, wordnet=None):
    """The class list of a `--dataset` or a `--tfrecord-dir`.

    Args:
        dataset: one of `class_synsets.DATASET_NAMES`, or None.
        tfrecord_dir: a directory with `dataset_info.json`, or None.
        synsets_file: `name synset` lines for `tfrecord_dir`'s classes.
        need_synsets: map the classes to synsets (False for `lcs`).
        wordnet: a WordNet reader (ImageNet wnids, validation).

    Returns:
        A `ClassList`.

    Raises:
        ValueError: not exactly one of dataset/tfrecord_dir, no classes,
            a class without a synset, or an unknown synset.
    """
    if (dataset is None) == (tfrecord_dir is None):
        raise ValueError(
            "Pass exactly one of dataset and tfrecord_dir. Received: "
            f"dataset={dataset!r}, tfrecord_dir={tfrecord_dir!r}"
        )
    if dataset is not None:
        names = dataset_class_names(dataset)
        synsets = (class_synsets.synsets_for(dataset, wordnet)
                   if need_synsets else None)
        return ClassList(tuple(names), synsets and tuple(synsets),
                         f"dataset:{dataset}")
    info = data.DatasetInfo.load(tfrecord_dir)
    names = list(info.class_names)
    if not names:
        raise ValueError(
            f"{tfrecord_dir} has no class names (caption-only data?). "
            f"Received: class_names={names}"
        )
    synsets = None
    if need_synsets:
        by_name = read_synsets_file(synsets_file) if synsets_file else {}
        dataset = None if synsets_file else inputs.known_dataset(info.source)
        if dataset is not None:
            # Records made from a known dataset (source "fashion_mnist",
            # "tfds:cifar100"): its curated synsets, matched by class name.
            known = dataset_class_names(dataset)
            curated = class_synsets.synsets_for(dataset, wordnet)
            by_name = {n: s for n, s in zip(known, curated)}
        synsets = [by_name.get(n, n if inputs.SYNSET_NAME.match(n) else None)
                   for n in names]
        missing = [n for n, s in zip(names, synsets) if s is None]
        if missing:
            raise ValueError(
                f"No synset for classes {missing[:5]} of {tfrecord_dir}: "
                "give --synsets-file with 'name synset' lines. Received: "
                f"synsets_file={synsets_file!r}"
            )
        synsets = tuple(synsets)
    return ClassList(tuple(names), synsets, os.path.abspath(tfrecord_dir))


def check_synsets(synsets, wordnet, nouns_only):
    """Raises ValueError naming an unknown (or, for WUP, non-noun) synset."""
    from nltk.corpus.reader.wordnet import WordNetError

    for name in dict.fromkeys(synsets):
        try:
            synset = wordnet.synset(name)
        except (WordNetError, ValueError) as error:
            raise ValueError(
                f"Unknown WordNet synset. Received: name={name!r} ({error})"
            ) from None
        if nouns_only and synset.pos() != "n":
            raise ValueError(
                f"WUP distances need noun synsets. Received: name={name!r}"
            )


def row_blocks(num_classes, rows_per_block):
    """`[(start, stop), ...]` covering `range(num_classes)`."""
    if int(rows_per_block) < 1:
        raise ValueError(
            f"rows_per_block must be >= 1. Received: "
            f"rows_per_block={rows_per_block}"
        )
    return [(start, min(start + rows_per_block, num_classes))
            for start in range(0, num_classes, rows_per_block)]


# === Row blocks ===


class WUPDistanceRows(beam.DoFn):
    """`(start, stop)` -> `(start, float64 [stop - start, C])` of `1 - WUP`.

    Same rule as `semantics.wup_distance_matrix`: the closer of the two
    directions, 0 for the same synset. WordNet is loaded in `setup()`.
    """

    def __init__(self, synsets, wordnet_root=None):
        super().__init__()
        self.synsets = list(synsets)
        self.wordnet_root = wordnet_root

    def setup(self):
        wordnet = semantics.load_wordnet(self.wordnet_root)
        self._wup = semantics._WUPCalculator(wordnet)  # shares its caches

    def process(self, block):
        start, stop = block
        rows = np.empty((stop - start, len(self.synsets)))
        for i in range(start, stop):
            a = self.synsets[i]
            for j, b in enumerate(self.synsets):
                rows[i - start, j] = (
                    0.0 if a == b
                    else 1.0 - max(self._wup(a, b), self._wup(b, a))
                )
        yield start, rows


class LCSDistanceRows(beam.DoFn):
    """`(start, stop)` -> rows of the LCS-height distance.

    The whole matrix is vectorised and takes well under a second for 1000
    classes, so each worker computes it once in `setup()` and emits slices.
    """

    def __init__(self, edges, node_ids):
        super().__init__()
        self.edges = list(edges)
        self.node_ids = list(node_ids)

    def setup(self):
        self._matrix = semantics.lcs_height_distance_matrix(
            self.edges, self.node_ids)

    def process(self, block):
        start, stop = block
        yield start, self._matrix[start:stop]


class CosineDistanceRows(beam.DoFn):
    """`(start, stop)`, embeddings `[C, D]` -> rows of `1 - cos`, in [0, 2]."""

    def process(self, block, class_embeddings):
        start, stop = block
        vectors = np.asarray(class_embeddings, np.float64)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        yield start, 1.0 - np.clip(unit[start:stop] @ unit.T, -1.0, 1.0)


def stack_embeddings(keyed_predictions, num_classes):
    """`[(class index, PredictionResult)]` -> float64 `[C, D]`.

    Raises:
        ValueError: a class missing, or a nan/inf/zero embedding.
    """
    rows = {int(i): np.asarray(p.inference, np.float64)
            for i, p in keyed_predictions}
    if sorted(rows) != list(range(num_classes)):
        raise ValueError(
            f"Expected embeddings of classes 0..{num_classes - 1}. "
            f"Received: {len(rows)} classes"
        )
    matrix = np.stack([rows[i] for i in range(num_classes)])
    norms = np.linalg.norm(matrix, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ValueError(
            "Definition embeddings must be finite and non-zero. Received: "
            f"bad classes {bad[:10].tolist()}"
        )
    return matrix


def assemble_matrix(blocks, num_classes):
    """`[(start, rows)]` -> float64 `[C, C]`, `(d + d.T) / 2`, zero diagonal.

    Raises:
        ValueError: the blocks do not cover every row exactly once.
    """
    matrix = np.full((num_classes, num_classes), np.nan)
    covered = np.zeros(num_classes, np.int64)
    for start, rows in blocks:
        rows = np.asarray(rows, np.float64)
        matrix[start:start + len(rows)] = rows
        covered[start:start + len(rows)] += 1
    if np.any(covered != 1):
        raise ValueError(
            "Row blocks must cover each row once. Received: rows covered "
            f"0 or 2+ times: {np.flatnonzero(covered != 1)[:10].tolist()}"
        )
    matrix = 0.5 * (matrix + matrix.T)
    np.fill_diagonal(matrix, 0.0)
    return matrix


def save_npy(matrix, path):
    """Writes `matrix` to `path` (a temporary name chosen by the driver)."""
    with open(path, "wb") as f:
        np.save(f, matrix)
    return path


class ClassDistanceMatrix(beam.PTransform):
    """Row blocks -> one PCollection holding the `[C, C]` matrix.

    Args:
        kind: "wup", "lcs" or "bert".
        num_classes: C.
        rows_per_block: rows per work item.
        synsets: C synset names (wup).
        wordnet_root: nltk_data root for WordNet (wup).
        edges, node_ids: the tree and the classes' node ids (lcs).
        definitions: C texts to embed (bert).
        model_handler: strings -> `[D]` vectors (bert).
    """

    def __init__(self, kind, num_classes, rows_per_block, *, synsets=None,
                 wordnet_root=None, edges=None, node_ids=None,
                 definitions=None, model_handler=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: "
                             f"kind={kind!r}")
        self.kind = kind
        self.num_classes = num_classes
        self.blocks = row_blocks(num_classes, rows_per_block)
        self.synsets = synsets
        self.wordnet_root = wordnet_root
        self.edges = edges
        self.node_ids = node_ids
        self.definitions = definitions
        self.model_handler = model_handler

    def expand(self, pipeline):
        blocks = (
            pipeline
            | "RowBlocks" >> beam.Create(self.blocks)
            | "Spread" >> beam.Reshuffle()
        )
        if self.kind == "wup":
            rows = blocks | "WUPRows" >> beam.ParDo(
                WUPDistanceRows(self.synsets, self.wordnet_root))
        elif self.kind == "lcs":
            rows = blocks | "LCSRows" >> beam.ParDo(
                LCSDistanceRows(self.edges, self.node_ids))
        else:
            num_classes = self.num_classes
            class_embeddings = (
                pipeline
                | "Definitions" >> beam.Create(
                    list(enumerate(self.definitions)))
                | "EmbedDefinitions" >> inference_base.RunInference(
                    inference_base.KeyedModelHandler(self.model_handler))
                | "CollectEmbeddings" >> beam.combiners.ToList()
                | "Stack" >> beam.Map(stack_embeddings, num_classes)
            )
            rows = blocks | "CosineRows" >> beam.ParDo(
                CosineDistanceRows(),
                beam.pvalue.AsSingleton(class_embeddings))
        return (
            rows
            | "CollectRows" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(assemble_matrix, self.num_classes)
        )


# === Job ===


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
class LabelDistancesResult(ResultItems):
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


def output_paths(output):
    """`<output>.npy`, `<output>.json` (a trailing `.npy` is dropped)."""
    prefix = output[:-4] if output.endswith(".npy") else output
    prefix = os.path.abspath(prefix)
    return prefix + ".npy", prefix + ".json"


def run(options, test_pipeline=None, model_handler=None):
    """Runs the job.

    Args:
        options: `LabelDistancesOptions` (a command line, a list of str,
            is parsed for callers written before the options).
        test_pipeline: a `TestPipeline` to build on instead of a new one.
        model_handler: for `bert`, a ModelHandler of strings -> `[D]`
            vectors to use instead of `text_encoder` (tests).

    Returns:
        `LabelDistancesResult`.

    Raises:
        ValueError: inconsistent options, unknown classes or synsets.
        RuntimeError: the pipeline did not finish (outputs untouched).
    """
    options = as_options(options, LabelDistancesOptions, parse_options)
    kind = options.kind
    if kind not in KINDS:
        raise ValueError(
            f"kind must be one of {KINDS}. Received: kind={kind!r}"
        )
    if kind == "lcs" and not options.hierarchy_file:
        raise ValueError(
            "--kind lcs needs --hierarchy-file. Received: "
            f"hierarchy_file={options.hierarchy_file!r}"
        )
    wordnet = (None if kind == "lcs"
               else semantics.load_wordnet(options.wordnet_root))
    classes = resolve_classes(options.dataset, options.tfrecord_dir,
                              options.synsets_file, need_synsets=kind != "lcs",
                              wordnet=wordnet)
    num_classes = len(classes.names)
    metadata = {
        "kind": kind,
        "num_classes": num_classes,
        "class_names": list(classes.names),
        "synsets": list(classes.synsets) if classes.synsets else None,
        "source": classes.source,
        "text_encoder": "",
    }
    transform_args = {}
    if kind in ("wup", "bert"):
        check_synsets(classes.synsets, wordnet, nouns_only=kind == "wup")
    if kind == "wup":
        transform_args.update(synsets=classes.synsets,
                              wordnet_root=options.wordnet_root)
    elif kind == "lcs":
        edges = semantics.read_parent_child_edges(options.hierarchy_file)
        node_ids = (
            inputs._class_ids_in_label_order(options.class_ids_file,
                                             classes.names)
            if options.class_ids_file else list(classes.names)
        )
        transform_args.update(edges=edges, node_ids=node_ids)
        metadata.update(node_ids=node_ids,
                        hierarchy_file=os.path.abspath(options.hierarchy_file))
    else:
        handler = model_handler or embeddings.SentenceEncoderModelHandler(
            options.text_encoder)
        definitions = semantics.synset_definitions(classes.synsets, wordnet)
        transform_args.update(definitions=definitions, model_handler=handler)
        metadata.update(
            text_encoder=getattr(handler, "encoder_name",
                                 type(handler).__name__),
            definitions=definitions,
        )

    npy_path, json_path = output_paths(options.output)
    os.makedirs(os.path.dirname(npy_path), exist_ok=True)
    fd, staging_npy = tempfile.mkstemp(
        dir=os.path.dirname(npy_path),
        prefix=f".tmp-{os.path.basename(npy_path)}-", suffix=".npy")
    os.close(fd)
    try:
        pipeline = test_pipeline or beam.Pipeline(
            options=pipeline_options(options.beam_args))
        _ = (
            pipeline
            | "ClassDistances" >> ClassDistanceMatrix(
                kind, num_classes, options.rows_per_block, **transform_args)
            | "SaveMatrix" >> beam.Map(save_npy, staging_npy)
        )
        state = pipeline.run().wait_until_finish()
        if state != beam.runners.runner.PipelineState.DONE:
            raise RuntimeError(
                f"The pipeline did not finish; {npy_path} is untouched. "
                f"Received: state={state}"
            )
        matrix = np.load(staging_npy)  # fails on an empty (unwritten) file
        if matrix.shape != (num_classes, num_classes):
            raise RuntimeError(
                f"Expected a [{num_classes}, {num_classes}] matrix. "
                f"Received: shape={matrix.shape}"
            )
        os.replace(staging_npy, npy_path)
    finally:
        if os.path.exists(staging_npy):
            os.unlink(staging_npy)
    config.write_text_atomically(
        json_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
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

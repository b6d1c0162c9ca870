"""Beam transform: the C x C class-distance matrix, computed in row blocks.

`ClassDistanceMatrix` turns `(start, stop)` row blocks (`row_blocks`) into
one float64 `[C, C]` matrix, symmetric with a zero diagonal (the rules of
`shrewd_tf.semantics.distances`), for each kind of `KINDS`:

* `wup`: `WUPDistanceRows`, `1 - WUP` between WordNet noun synsets, the
  closer of the two directions; WordNet is loaded once per worker;
* `lcs`: `LCSDistanceRows`, the LCS-height distance on a "parent child"
  tree, computed once per worker and sliced;
* `bert`: the class texts embedded with `RunInference`
  (`stack_embeddings`), then `CosineDistanceRows` with the embeddings as a
  side input; `1 - cos`, in [0, 2].

The blocks are gathered and assembled by `assemble_matrix` as
`(d + d.T) / 2` with a zero diagonal.
"""

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference_base

from shrewd_tf.semantics import distances as semantics

KINDS = ("wup", "lcs", "bert")


# === Row blocks ===


def row_blocks(num_classes, rows_per_block):
    """`[(start, stop), ...]` covering `range(num_classes)`."""
    if int(rows_per_block) < 1:
        raise ValueError(
            f"rows_per_block must be >= 1. Received: "
            f"rows_per_block={rows_per_block}"
        )
    return [(start, min(start + rows_per_block, num_classes))
            for start in range(0, num_classes, rows_per_block)]


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


# === Assembly ===


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


# === Transform ===


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

"""Tests for pipeline.class_distance_matrix: row blocks -> one [C, C] matrix.

The transform's matrix is compared with the same kind computed directly by
`shrewd_tf.semantics.distances` (one call, no blocks): `lcs` on a small
tree, `bert` on the fake encoder of tests/support/sentence_encoders. `wup`
needs WordNet and is tested through the job (test_label_distances).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.ml.inference.base import PredictionResult  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402
from apache_beam.testing.util import BeamAssertException  # noqa: E402
from apache_beam.testing.util import assert_that  # noqa: E402

from pipeline import class_distance_matrix as matrices  # noqa: E402
from shrewd_tf.semantics import distances as semantics  # noqa: E402
from tests.support.sentence_encoders import FakeEncoderHandler  # noqa: E402
from tests.support.sentence_encoders import fake_embedding  # noqa: E402

# root -> A -> {a1, a2};  root -> B -> {b1, B2 -> b2}
TREE = [("root", "A"), ("root", "B"), ("A", "a1"), ("A", "a2"),
        ("B", "b1"), ("B", "B2"), ("B2", "b2")]


def equals_matrix(expected, atol=0.0):
    """Matcher: one matrix, equal to `expected` within `atol`."""

    def check(matrices_out):
        if len(matrices_out) != 1:
            raise BeamAssertException(
                f"expected one matrix, got {len(matrices_out)}")
        np.testing.assert_allclose(matrices_out[0], expected, rtol=0,
                                   atol=atol)
        assert matrices_out[0].dtype == np.float64

    return check


def test_row_blocks_cover_every_row_once():
    assert matrices.row_blocks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert matrices.row_blocks(3, 8) == [(0, 3)]
    with pytest.raises(ValueError, match="rows_per_block=0"):
        matrices.row_blocks(5, 0)


def test_assemble_matrix_symmetrises_and_checks_coverage():
    rows = np.arange(16, dtype=np.float64).reshape(4, 4)
    matrix = matrices.assemble_matrix([(2, rows[2:]), (0, rows[:2])], 4)
    expected = 0.5 * (rows + rows.T)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_array_equal(matrix, expected)
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        matrices.assemble_matrix([(0, rows[:2])], 4)
    with pytest.raises(ValueError, match=r"\[1\]"):
        matrices.assemble_matrix([(0, rows[:2]), (1, rows[1:])], 4)


def test_stack_embeddings_orders_by_class_and_rejects_bad_vectors():
    def keyed(vectors):
        return [(i, PredictionResult(f"text {i}", v))
                for i, v in enumerate(vectors)]

    vectors = [np.array([1.0, 0.0]), np.array([0.0, 2.0])]
    stacked = matrices.stack_embeddings(keyed(vectors)[::-1], 2)
    np.testing.assert_array_equal(stacked, np.stack(vectors))
    with pytest.raises(ValueError, match="classes 0..2"):
        matrices.stack_embeddings(keyed(vectors), 3)
    with pytest.raises(ValueError, match=r"bad classes \[1\]"):
        matrices.stack_embeddings(keyed([vectors[0], np.zeros(2)]), 2)


def test_lcs_rows_match_the_direct_matrix():
    node_ids = ["b2", "a1", "b1", "a2"]
    expected = semantics.lcs_height_distance_matrix(TREE, node_ids)
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        matrix = pipeline | matrices.ClassDistanceMatrix(
            "lcs", 4, 3, edges=TREE, node_ids=node_ids)
        assert_that(matrix, equals_matrix(expected))


def test_bert_rows_match_the_direct_cosine_matrix():
    texts = ["a small dog", "a large dog", "a red car", "the sea at night",
             "two cats sleep"]
    vectors = np.stack([fake_embedding(t) for t in texts])
    expected = semantics.embedding_distance_matrix(vectors, "cosine")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        matrix = pipeline | matrices.ClassDistanceMatrix(
            "bert", len(texts), 2, definitions=texts,
            model_handler=FakeEncoderHandler(max_batch_size=2))
        assert_that(matrix, equals_matrix(expected, atol=1e-12))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind='cosine'"):
        matrices.ClassDistanceMatrix("cosine", 3, 1)

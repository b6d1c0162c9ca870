"""Tests for shrewd_tf.ops.pairwise: values and custom gradient against the
naive [B, B, d] formulation, and target distances against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from tests.support import sources as helpers
from shrewd_tf.ops import pairwise


def naive_pairwise_manhattan(codes):
    return tf.reduce_sum(tf.abs(codes[:, None, :] - codes[None, :, :]), -1)


def test_pairwise_manhattan_matches_naive():
    rng = np.random.default_rng(0)
    codes = tf.constant(rng.random((7, 10)), tf.float32)
    upstream = tf.constant(rng.normal(size=(7, 7)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(codes)
        ours = pairwise.pairwise_manhattan_distances(codes)
        naive = naive_pairwise_manhattan(codes)
        ours_sum = tf.reduce_sum(ours * upstream)
        naive_sum = tf.reduce_sum(naive * upstream)
    np.testing.assert_allclose(ours, naive, atol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(ours_sum, codes),
        tape.gradient(naive_sum, codes),
        atol=1e-5,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_pairwise_manhattan_in_graph_with_unknown_shape(jit_compile):
    rng = np.random.default_rng(1)
    codes = rng.random((5, 7))
    codes[3] = codes[1]  # duplicates: subgradient 0, as tf.abs
    codes = tf.constant(codes, tf.float32)
    upstream = tf.constant(rng.normal(size=(5, 5)), tf.float32)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.float32)],
        jit_compile=jit_compile,
    )
    def value_and_grad(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            distances = pairwise.pairwise_manhattan_distances(z)
            total = tf.reduce_sum(distances * upstream)
        return distances, tape.gradient(total, z)

    with tf.GradientTape() as tape:
        tape.watch(codes)
        total = tf.reduce_sum(naive_pairwise_manhattan(codes) * upstream)
    distances, grad = value_and_grad(codes)
    np.testing.assert_allclose(
        distances, naive_pairwise_manhattan(codes), atol=1e-5
    )
    np.testing.assert_allclose(grad, tape.gradient(total, codes), atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pairwise_target_distances_match_numpy(metric):
    rng = np.random.default_rng(10)
    embeddings = rng.normal(loc=2.0, size=(6, 9))
    targets = helpers.numpy_target_distances(embeddings, metric)
    np.testing.assert_allclose(
        pairwise.pairwise_target_distances(embeddings, metric),
        targets,
        atol=1e-5,
    )

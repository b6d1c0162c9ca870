"""Tests for eq. 4: the pure functions (`shrewd_tf.ops.empirical_kl`, through
`shrewd_tf.losses`) against slow-loop oracles, the estimator and the naive
[B, m, d] formulation, and `EmpiricalKLLoss` (`shrewd_tf.losses.kl`): fresh
target samples, arguments and the lambda1 warm-up."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.ops import estimators
from shrewd_tf import losses
from tests.support.tensors import all_finite
from tests.support.tensors import value_and_grad


# === Independent references ===


def loop_kth_distance(x, points, k, skip=None):
    distances = sorted(
        math.dist(x, p) for j, p in enumerate(points) if j != skip
    )
    return distances[k - 1]


def loop_empirical_kl_terms(codes, target, k=1):
    """Eq. 4 per-example terms by loop in float64."""
    return [
        math.log(loop_kth_distance(z, target, k))
        - math.log(loop_kth_distance(z, codes, k, skip=b))
        for b, z in enumerate(codes)
    ]


def naive_empirical_kl(codes, target):
    """k=1 eq. 4 through full [B, m, d] differences and reduce_min."""
    to_target = tf.sqrt(
        tf.reduce_sum(tf.square(codes[:, None] - target[None]), -1)
    )
    to_codes = tf.sqrt(
        tf.reduce_sum(tf.square(codes[:, None] - codes[None]), -1)
        + tf.linalg.diag(tf.fill([tf.shape(codes)[0]], np.inf))
    )
    return tf.reduce_mean(
        tf.math.log(tf.reduce_min(to_target, 1))
        - tf.math.log(tf.reduce_min(to_codes, 1))
    )


# === Empirical KL: oracle, estimator relation, gradients ===


@pytest.mark.parametrize(
    "batch, m, k", [(5, 6, 1), (7, 9, 1), (9, 8, 2), (8, 8, 3)]
)
def test_empirical_kl_matches_loop_oracle(batch, m, k):
    rng = np.random.default_rng(10 * batch + k)
    codes = rng.random((batch, 4))
    target = rng.random((m, 4))
    expected = loop_empirical_kl_terms(codes.tolist(), target.tolist(), k)
    per_example = losses.empirical_kl_per_example(codes, target, k=k)
    np.testing.assert_allclose(per_example, expected, rtol=1e-5, atol=1e-5)
    scalar = losses.empirical_kl_loss(codes, target, k=k)
    assert float(scalar) == pytest.approx(float(np.mean(expected)), abs=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_empirical_kl_is_the_estimator_without_constants(k):
    rng = np.random.default_rng(20 + k)
    codes = rng.random((40, 6))
    target = rng.beta(0.3, 0.3, size=(30, 6))
    loss = float(losses.empirical_kl_loss(codes, target, k=k))
    divergence = estimators.knn_kl_divergence(codes, target, k=k)
    assert divergence == pytest.approx(
        6 * loss + math.log(30 / (40 - 1)), abs=1e-4
    )


def test_empirical_kl_gradient_matches_naive_formulation():
    rng = np.random.default_rng(6)
    codes = tf.constant(rng.random((9, 5)), tf.float32)
    target = tf.constant(rng.random((11, 5)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(codes)
        ours = losses.empirical_kl_loss(codes, target)
        naive = naive_empirical_kl(codes, target)
    assert float(ours) == pytest.approx(float(naive), abs=1e-5)
    np.testing.assert_allclose(
        tape.gradient(ours, codes), tape.gradient(naive, codes), atol=1e-4
    )


def test_empirical_kl_duplicates_are_floored_and_finite():
    rng = np.random.default_rng(7)
    codes = rng.random((6, 3))
    codes[1] = codes[0]
    target = rng.random((6, 3))
    value, grad = value_and_grad(
        losses.empirical_kl_per_example, codes, target
    )
    assert all_finite(value, grad)
    # rho of rows 0 and 1 is 0, floored at min_distance = 1e-6.
    nu = loop_kth_distance(codes[0], target, 1)
    assert float(value[0]) == pytest.approx(
        math.log(nu) - math.log(1e-6), rel=1e-5
    )


@pytest.mark.parametrize("batch, k", [(1, 1), (2, 2), (3, 5)])
def test_empirical_kl_undefined_batches_give_zero(batch, k):
    rng = np.random.default_rng(batch)
    value, grad = value_and_grad(
        losses.empirical_kl_per_example, rng.random((batch, 3)),
        rng.random((4, 3)), k,
    )
    np.testing.assert_array_equal(value, np.zeros(batch))
    assert all_finite(grad)


def test_empirical_kl_two_codes_is_defined():
    codes = np.array([[0.0, 0.0], [3.0, 4.0]])
    target = np.array([[0.0, 1.0], [3.0, 3.0]])
    # nu = 1 for both codes, rho = 5: terms are log(1) - log(5).
    np.testing.assert_allclose(
        losses.empirical_kl_per_example(codes, target),
        [-math.log(5.0)] * 2,
        rtol=1e-6,
    )


def test_empirical_kl_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"target_sample.shape=\(4, 3\)"):
        losses.empirical_kl_loss(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="k=0"):
        losses.empirical_kl_loss(np.zeros((4, 2)), np.zeros((4, 2)), k=0)
    with pytest.raises(ValueError, match="min_distance=0"):
        losses.empirical_kl_loss(
            np.zeros((4, 2)), np.zeros((4, 2)), min_distance=0.0
        )


# === Target sample of the KL loss ===


def test_kl_loss_draws_a_fresh_target_each_call_in_graph():
    loss = losses.EmpiricalKLLoss(seed=3)
    codes = tf.constant(np.random.default_rng(8).random((16, 8)), tf.float32)
    step = tf.function(lambda z: loss(tf.zeros([16]), z))  # y_true unused
    first, second = float(step(codes)), float(step(codes))
    assert first != second
    sample_a = loss.sample_target((4, 8))
    sample_b = loss.sample_target((4, 8))
    assert not np.allclose(sample_a, sample_b)


# === Keras loss class ===


def test_kl_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target='normal'"):
        losses.EmpiricalKLLoss(target="normal")
    with pytest.raises(ValueError, match="k=0"):
        losses.EmpiricalKLLoss(k=0)
    with pytest.raises(ValueError, match="alpha=0"):
        losses.EmpiricalKLLoss(alpha=0)


# === lambda1 warm-up ===


def test_kl_warmup_scales_the_term_by_step_over_warmup_steps():
    rng = np.random.default_rng(5)
    codes = rng.random((16, 8)).astype("float32")
    step = tf.Variable(0, dtype=tf.int64)
    ramped = losses.EmpiricalKLLoss(seed=2, warmup_steps=4, step_counter=step)
    full = losses.EmpiricalKLLoss(seed=2)
    for value, fraction in [(0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (9, 1.0)]:
        step.assign(value)
        # Same seed and call count: both draw the same target sample.
        got = float(ramped(codes, codes))
        want = float(full(codes, codes))
        assert got == pytest.approx(fraction * want, rel=1e-6, abs=1e-7)


def test_kl_warmup_follows_the_optimizer_in_fit():
    rng = np.random.default_rng(6)
    images = rng.random((32, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="sigmoid")]
    )
    optimizer = keras.optimizers.Adam(1e-3)
    kl = losses.EmpiricalKLLoss(seed=1, warmup_steps=10)
    kl.set_step_counter(optimizer.iterations)
    model.compile(optimizer=optimizer, loss=kl)
    model.fit(images, images, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert float(kl.warmup_factor()) == pytest.approx(0.4)


def test_kl_warmup_needs_a_counter_and_a_valid_length():
    codes = np.full((4, 2), 0.5, "float32")
    with pytest.raises(ValueError, match="step_counter=optimizer.iterations"):
        losses.EmpiricalKLLoss(warmup_steps=3)(codes, codes)
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="warmup_steps"):
            losses.EmpiricalKLLoss(warmup_steps=bad)
    config = losses.EmpiricalKLLoss(warmup_steps=np.int64(7)).get_config()
    assert config["warmup_steps"] == 7
    assert losses.EmpiricalKLLoss.from_config(config).warmup_steps == 7

"""Tests for eq. 2 (`shrewd_tf.losses.similarity`): slow-loop oracles,
analytic values, gradients against the naive [B, B, d] formulation,
degenerate batches and the `SimilarityMatchingLoss` targets."""

import numpy as np
import pytest
import tensorflow as tf

from tests.support import sources as helpers
from shrewd_tf import losses
from tests.support.tensors import all_finite
from tests.support.tensors import value_and_grad


# === Independent references ===


def loop_similarity_matching(codes, targets, gamma=0.1, rho=2.0):
    """Eq. 2 by double loop in float64; returns (scalar, per-row sums)."""
    batch = len(codes)
    manhattan = [
        [sum(abs(a - b) for a, b in zip(row, other)) for other in codes]
        for row in codes
    ]
    tau_z = sum(map(sum, manhattan))
    tau_y = sum(map(sum, targets))
    rows = []
    for i in range(batch):
        row = 0.0
        for j in range(batch):
            code_term = manhattan[i][j] / tau_z if tau_z > 0 else 0.0
            target_term = targets[i][j] / tau_y if tau_y > 0 else 0.0
            weight = gamma**rho / (gamma + targets[i][j]) ** rho
            row += abs(code_term - target_term) * weight
        rows.append(row)
    return sum(rows), rows


def naive_pairwise_manhattan(codes):
    return tf.reduce_sum(tf.abs(codes[:, None, :] - codes[None, :, :]), -1)


def naive_similarity_matching(codes, targets, gamma=0.1, rho=2.0):
    """Eq. 2 through a [B, B, d] tensor and TF's own gradients."""
    distances = naive_pairwise_manhattan(codes)
    terms = tf.abs(
        distances / tf.reduce_sum(distances) - targets / tf.reduce_sum(targets)
    )
    return tf.reduce_sum(terms * (gamma / (gamma + targets)) ** rho)


def random_targets(rng, batch):
    targets = rng.random((batch, batch))
    targets = targets + targets.T
    np.fill_diagonal(targets, 0.0)
    return targets


# === Similarity matching: gradient ===


def test_similarity_gradient_matches_naive_formulation():
    rng = np.random.default_rng(2)
    codes = tf.constant(rng.random((8, 12)), tf.float32)
    targets = tf.constant(random_targets(rng, 8), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(codes)
        ours = losses.similarity_matching_loss(codes, targets)
        naive = naive_similarity_matching(codes, targets)
    assert float(ours) == pytest.approx(float(naive), rel=1e-5)
    np.testing.assert_allclose(
        tape.gradient(ours, codes), tape.gradient(naive, codes), atol=1e-5
    )


# === Similarity matching: oracle and analytic values ===


@pytest.mark.parametrize("batch", [5, 6, 7, 8, 9])
def test_similarity_matches_loop_oracle(batch):
    rng = np.random.default_rng(batch)
    codes = rng.random((batch, 6))
    targets = random_targets(rng, batch)
    targets[0, 1] = targets[1, 0] = 0.0  # a same-class pair
    gamma, rho = 0.2, 1.5
    expected, rows = loop_similarity_matching(
        codes.tolist(), targets.tolist(), gamma, rho
    )
    scalar = losses.similarity_matching_loss(codes, targets, gamma, rho)
    per_example = losses.similarity_matching_per_example(
        codes, targets, gamma, rho
    )
    assert float(scalar) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(
        per_example, batch * np.array(rows), rtol=1e-5
    )
    assert float(np.mean(per_example)) == pytest.approx(float(scalar), rel=1e-6)


def test_similarity_is_zero_for_perfect_one_hot_codes():
    """Distinct classes, one-hot codes, all class distances 1.

    Every off-diagonal code distance is 2, so D / tau_z = 2 / (2 B (B - 1))
    = 1 / (B (B - 1)), which equals d / tau_y = 1 / (B (B - 1)); the
    diagonal terms are |0 - 0|. Hence L_sim = 0.
    """
    codes = np.eye(4)
    targets = 1.0 - np.eye(4)
    assert float(losses.similarity_matching_loss(codes, targets)) == (
        pytest.approx(0.0, abs=1e-7)
    )


def test_similarity_hand_computed_value():
    """Three classes, one-hot codes, d12 = 1, d13 = d23 = 2, gamma = 0.1,
    rho = 2.

    Code distances are all 2: tau_z = 6 * 2 = 12, D / tau_z = 1/6.
    tau_y = 2 * (1 + 2 + 2) = 10, so d12 / tau_y = 1/10, d13 / tau_y = 1/5.
    Weights: (0.1 / 1.1)^2 = 1/121 and (0.1 / 2.1)^2 = 1/441.
    L = 2 * (1/6 - 1/10) / 121 + 4 * (1/5 - 1/6) / 441
      = 2 / 1815 + 4 / 13230.
    Row 1 (and row 2) holds (1/15) / 121 + (1/30) / 441; row 3 holds
    2 * (1/30) / 441; the per-example values are B = 3 times these.
    """
    codes = np.eye(3)
    targets = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 2.0, 0.0]])
    expected = 2 / 1815 + 4 / 13230
    row_12 = (1 / 15) / 121 + (1 / 30) / 441
    row_3 = 2 * (1 / 30) / 441
    assert float(losses.similarity_matching_loss(codes, targets)) == (
        pytest.approx(expected, rel=1e-6)
    )
    np.testing.assert_allclose(
        losses.similarity_matching_per_example(codes, targets),
        3 * np.array([row_12, row_12, row_3]),
        rtol=1e-6,
    )


def test_similarity_is_scale_invariant():
    rng = np.random.default_rng(3)
    codes = rng.random((6, 5))
    targets = random_targets(rng, 6)
    base = float(losses.similarity_matching_loss(codes, targets))
    # Scaling codes leaves D / tau_z unchanged; scaling targets changes w.
    scaled = float(losses.similarity_matching_loss(3.0 * codes, targets))
    assert scaled == pytest.approx(base, rel=1e-5)


# === Similarity matching: degenerate batches ===


@pytest.mark.parametrize(
    "case", ["equal_targets", "zero_targets", "duplicate_codes", "equal_codes"]
)
def test_similarity_degenerate_batches_are_finite(case):
    rng = np.random.default_rng(4)
    codes = rng.random((6, 4))
    targets = random_targets(rng, 6)
    if case == "equal_targets":
        targets = np.full((6, 6), 0.7)
    elif case == "zero_targets":
        targets = np.zeros((6, 6))
    elif case == "duplicate_codes":
        codes[1] = codes[0]
        codes[3] = codes[0]
    else:
        codes = np.tile(codes[:1], (6, 1))
    value, grad = value_and_grad(
        losses.similarity_matching_loss, codes, targets
    )
    assert all_finite(value, grad)
    # The oracle applies the documented rules (x / 0 := 0 for tau = 0).
    expected, _ = loop_similarity_matching(codes.tolist(), targets.tolist())
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_similarity_zero_targets_give_constant_one():
    # d / tau_y := 0 and w = 1, so L = sum D / tau_z = 1 for any codes.
    rng = np.random.default_rng(5)
    value, grad = value_and_grad(
        losses.similarity_matching_loss, rng.random((5, 3)), np.zeros((5, 5))
    )
    assert float(value) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_similarity_tiny_batches(batch):
    rng = np.random.default_rng(batch)
    codes = rng.random((batch, 4))
    targets = random_targets(rng, batch)
    value, grad = value_and_grad(
        losses.similarity_matching_loss, codes, targets
    )
    assert all_finite(value, grad)
    expected, _ = loop_similarity_matching(codes.tolist(), targets.tolist())
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_similarity_rejects_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match=r"codes.shape=\(4,\)"):
        losses.similarity_matching_loss(np.zeros(4), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"target_distances.shape=\(4, 3\)"):
        losses.similarity_matching_loss(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="gamma=0"):
        losses.similarity_matching_loss(np.zeros((2, 2)), np.zeros((2, 2)), 0)


# === Keras loss class ===


CLASS_DISTANCES = [[0.0, 0.5, 1.0], [0.5, 0.0, 0.8], [1.0, 0.8, 0.0]]


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_similarity_loss_gathers_class_distances(label_shape):
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, size=7)
    codes = rng.random((7, 5)).astype("float32")
    loss = losses.SimilarityMatchingLoss(class_distances=CLASS_DISTANCES)
    y_true = labels if label_shape == "flat" else labels[:, None]
    matrix = np.array(CLASS_DISTANCES)
    targets = [[matrix[a, b] for b in labels] for a in labels]
    expected, rows = loop_similarity_matching(codes.tolist(), targets)
    assert float(loss(y_true, codes)) == pytest.approx(expected, rel=1e-5)
    per_example = losses.SimilarityMatchingLoss(
        class_distances=CLASS_DISTANCES, reduction="none"
    )(y_true, codes)
    assert per_example.shape == (7,)
    np.testing.assert_allclose(per_example, 7 * np.array(rows), rtol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_similarity_loss_with_embedding_targets(metric):
    rng = np.random.default_rng(10)
    embeddings = rng.normal(loc=2.0, size=(6, 9))
    codes = rng.random((6, 4)).astype("float32")
    targets = helpers.numpy_target_distances(embeddings, metric)
    loss = losses.SimilarityMatchingLoss(target_metric=metric)
    expected, _ = loop_similarity_matching(codes.tolist(), targets.tolist())
    assert float(loss(embeddings, codes)) == pytest.approx(expected, rel=1e-4)


def test_similarity_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        losses.SimilarityMatchingLoss(class_distances=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        losses.SimilarityMatchingLoss(class_distances=[[0, -1], [-1, 0]])
    with pytest.raises(ValueError, match="target_metric='l1'"):
        losses.SimilarityMatchingLoss(target_metric="l1")

"""Tests for the SHREWD losses: slow-loop oracles, analytic values, gradients
against the naive [B, B, d] formulation, degenerate batches, Keras usage and
serialisation."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support import sources as helpers
from tests.paths import REPO_ROOT
from shrewd_tf.ops import estimators
from shrewd_tf.losses import keras_losses as losses


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


def naive_pairwise_manhattan(codes):
    return tf.reduce_sum(tf.abs(codes[:, None, :] - codes[None, :, :]), -1)


def naive_similarity_matching(codes, targets, gamma=0.1, rho=2.0):
    """Eq. 2 through a [B, B, d] tensor and TF's own gradients."""
    distances = naive_pairwise_manhattan(codes)
    terms = tf.abs(
        distances / tf.reduce_sum(distances) - targets / tf.reduce_sum(targets)
    )
    return tf.reduce_sum(terms * (gamma / (gamma + targets)) ** rho)


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


def random_targets(rng, batch):
    targets = rng.random((batch, batch))
    targets = targets + targets.T
    np.fill_diagonal(targets, 0.0)
    return targets


def all_finite(*tensors):
    return all(bool(np.all(np.isfinite(np.asarray(t)))) for t in tensors)


@pytest.fixture
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


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


def value_and_grad(fn, codes, *args):
    codes = tf.constant(codes, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(codes)
        value = fn(codes, *args)
    return value, tape.gradient(value, codes)


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


# === Keras loss classes ===


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


def test_kl_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target='normal'"):
        losses.EmpiricalKLLoss(target="normal")
    with pytest.raises(ValueError, match="k=0"):
        losses.EmpiricalKLLoss(k=0)
    with pytest.raises(ValueError, match="alpha=0"):
        losses.EmpiricalKLLoss(alpha=0)


def make_losses():
    return [
        losses.SimilarityMatchingLoss(
            gamma=0.2, rho=1.5, class_distances=CLASS_DISTANCES
        ),
        losses.EmpiricalKLLoss(k=2, target="bernoulli_noise", seed=4),
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_serialize_round_trip_gives_identical_values(index):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, size=8)
    codes = rng.random((8, 6)).astype("float32")
    original = make_losses()[index]
    config = original.get_config()
    if index == 0:
        assert config["class_distances"] == CLASS_DISTANCES
    from_config = type(original).from_config(config)
    serialized = keras.saving.serialize_keras_object(make_losses()[index])
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(original)
    assert restored.get_config() == config
    # Fresh objects with the same seed draw the same first target sample.
    expected = float(original(labels, codes))
    assert float(from_config(labels, codes)) == expected
    assert float(restored(labels, codes)) == expected


def tiny_model(code_bits=6):
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    codes = keras.layers.Dense(code_bits, activation="sigmoid")(hidden)
    codes = keras.layers.Activation("linear", dtype="float32")(codes)
    return keras.Model(inputs, codes)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("index", [0, 1])
def test_fit_two_steps(index, jit_compile, float32_policy):
    # jit_compile=True is what Keras' "auto" picks on GPU machines.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.integers(0, 3, size=32)
    model = tiny_model()
    model.compile(
        optimizer="sgd", loss=make_losses()[index], jit_compile=jit_compile
    )
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["loss"][0])


def test_losses_are_float32_under_mixed_precision(float32_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    rng = np.random.default_rng(13)
    codes16 = tf.constant(rng.random((8, 6)), tf.float16)
    labels = rng.integers(0, 3, size=8)
    for loss in make_losses():
        value = loss(labels, codes16)
        assert value.dtype == tf.float32
        assert np.isfinite(float(value))
    # A model whose codes stay float16 (no float32 output layer).
    inputs = keras.Input((5,))
    codes = keras.layers.Dense(6, activation="sigmoid")(inputs)
    model = keras.Model(inputs, codes)
    assert model.output.dtype == "float16"
    model.compile(
        optimizer="sgd",
        loss=losses.SimilarityMatchingLoss(class_distances=CLASS_DISTANCES),
    )
    x = rng.normal(size=(32, 5)).astype("float32")
    history = model.fit(
        x, rng.integers(0, 3, size=32), batch_size=16, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


# === Distribution: the documented per-replica scale ===

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from shrewd_tf.losses import keras_losses as losses
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    rng = np.random.default_rng(0)
    codes = rng.random((8, 6)).astype("float32")
    labels = rng.integers(0, 3, size=8)
    matrix = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], float)
    with strategy.scope():
        sim = losses.SimilarityMatchingLoss(class_distances=matrix)
        kl = losses.EmpiricalKLLoss(seed=1)
    data = tf.data.Dataset.from_tensor_slices((labels, codes)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(data)))

    @tf.function
    def step(y, z):
        out = strategy.run(lambda y, z: (sim(y, z), kl(y, z)), args=(y, z))
        return [strategy.reduce("SUM", o, axis=None) for o in out]

    sim_value, kl_first = step(*batch)
    _, kl_second = step(*batch)

    @tf.function
    def replica_samples():
        sums = strategy.run(lambda: tf.reduce_sum(kl.sample_target((4, 6))))
        return strategy.experimental_local_results(sums)

    first_replica, second_replica = replica_samples()
    assert float(first_replica) != float(second_replica), "same samples"
    targets = matrix[labels][:, labels]
    per_replica = [
        float(losses.similarity_matching_loss(codes[:4], targets[:4, :4])),
        float(losses.similarity_matching_loss(codes[4:], targets[4:, 4:])),
    ]
    print(float(sim_value), np.mean(per_replica),
          float(kl_first), float(kl_second))
    """
)


def test_mirrored_strategy_optimises_mean_of_per_replica_losses():
    # Also checks that the replicas draw different KL target samples.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=str(REPO_ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sim_value, expected, kl_first, kl_second = map(
        float, result.stdout.split()[-4:]
    )
    assert sim_value == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(kl_first) and kl_first != kl_second


def test_mixed_float16_values_match_float32_within_input_rounding(
    float32_policy,
):
    """Under `mixed_float16` the codes arrive in float16; the losses cast
    them to float32, so their values must be the float32 values of the
    ROUNDED codes (float32 arithmetic: rel 1e-5), and differ from the
    float32 values of the unrounded codes by no more than that rounding can
    explain. Rounding to float16 moves a code in [0, 1] by |delta| <= 2^-12
    (half the float16 spacing 2^-11 of [0.5, 1)); the bounds below are
    computed from the actual delta."""
    rng = np.random.default_rng(21)
    codes32 = rng.random((16, 8)).astype(np.float32)
    codes16 = codes32.astype(np.float16)
    rounded = codes16.astype(np.float32)
    delta = rounded.astype(np.float64) - codes32
    assert 0 < np.abs(delta).max() <= 2.0**-12
    labels = rng.integers(0, 3, size=16)
    target = rng.beta(0.1, 0.1, size=(16, 8)).astype(np.float32)

    def values(policy, codes):
        keras.mixed_precision.set_global_policy(policy)
        sim = losses.SimilarityMatchingLoss(class_distances=CLASS_DISTANCES)
        kl = losses.EmpiricalKLLoss(k=1, seed=7)
        out = (
            float(sim(labels, codes)),
            np.asarray(losses.empirical_kl_per_example(codes, target)),
            float(kl(labels, codes)),
        )
        keras.mixed_precision.set_global_policy("float32")
        return out

    sim16, kl_terms16, kl16 = values("mixed_float16", tf.constant(codes16))
    sim_rounded, kl_terms_rounded, kl_rounded = values("float32", rounded)
    sim32, kl_terms32, kl32 = values("float32", codes32)
    # float16 in == float32 on the rounded values: computed in float32.
    assert sim16 == pytest.approx(sim_rounded, rel=1e-5)
    np.testing.assert_allclose(kl_terms16, kl_terms_rounded, rtol=1e-5,
                               atol=1e-6)
    assert kl16 == pytest.approx(kl_rounded, rel=1e-5, abs=1e-6)

    # L_sim = sum_ij w_ij |D_ij / tau - t_ij|: rounding changes it by at
    # most sum_ij w_ij |D'_ij / tau' - D_ij / tau| (triangle inequality).
    x, x16 = codes32.astype(np.float64), rounded.astype(np.float64)
    d = np.abs(x[:, None] - x[None]).sum(-1)
    d16 = np.abs(x16[:, None] - x16[None]).sum(-1)
    t = np.asarray(CLASS_DISTANCES)[labels][:, labels]
    w = (0.1 / (0.1 + t)) ** 2.0
    sim_bound = np.sum(w * np.abs(d16 / d16.sum() - d / d.sum()))
    assert abs(sim16 - sim32) <= sim_bound + 1e-5 * sim32
    assert sim_bound < 1e-2 * sim32  # the tolerance is tight

    # Eq. 4 terms log nu_i - log rho_i: with m_i = |delta_i| and M = max m,
    # nu_i (to the fixed target) moves by <= m_i and rho_i by <= m_i + M,
    # and |log a - log b| <= |a - b| / min(a, b).
    m = np.linalg.norm(delta, axis=1)
    pair = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(pair, np.inf)
    rho = pair.min(axis=1)

    def kl_bound(sample):
        nu = np.linalg.norm(x[:, None] - sample[None], axis=-1).min(axis=1)
        assert np.all(nu > m) and np.all(rho > m + m.max())
        return m / (nu - m) + (m + m.max()) / (rho - m - m.max())

    bound = kl_bound(target)
    assert np.all(np.abs(kl_terms16 - kl_terms32) <= bound + 1e-5)
    assert bound.max() < 0.05  # the tolerance is tight
    # The Keras loss: a fresh sampler with the same seed draws the same
    # target in both policies (its first draw), so its mean moves by at
    # most the mean bound for that target.
    drawn = np.asarray(losses.EmpiricalKLLoss(k=1, seed=7).sample_target(
        (16, 8)))
    assert abs(kl16 - kl32) <= kl_bound(drawn).mean() + 1e-5


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

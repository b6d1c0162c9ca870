"""Tests of what both Keras losses share (`SimilarityMatchingLoss`,
`EmpiricalKLLoss`, through `shrewd_tf.losses`): serialisation round trips,
`fit` with and without XLA, float32 under mixed precision, and the
per-replica scale under `MirroredStrategy`."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.paths import REPO_ROOT
from shrewd_tf import losses


@pytest.fixture
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


# === Keras loss classes ===


CLASS_DISTANCES = [[0.0, 0.5, 1.0], [0.5, 0.0, 0.8], [1.0, 0.8, 0.0]]


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
    from shrewd_tf import losses
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

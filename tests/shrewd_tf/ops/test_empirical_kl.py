"""Tests for shrewd_tf.ops.empirical_kl: the kNN KL estimate of eq. 4.

References: a float64 NumPy brute-force loop (blocks, scales, exact
neighbour selection), `shrewd_tf.ops.estimators.knn_kl_divergence` (the
Wang-Kulkarni-Verdu estimate with every constant), and the analysis in
docs/kl_binarisation.md (what the joint estimate rewards in 64 bits).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.ops import empirical_kl
from shrewd_tf.ops import estimators
from shrewd_tf import losses
from shrewd_tf.evaluation import metrics
from shrewd_tf.ops import target_sampling

# === Reference ===


def ref_terms(codes, target, k, block_bits, scale, floor=1e-6):
    """Per-example terms by brute force in float64."""
    codes = np.asarray(codes, np.float64)
    target = np.asarray(target, np.float64)
    n, d = codes.shape
    m = len(target)
    g = block_bits or d
    out = np.zeros(n)
    for b in range(n):
        total = 0.0
        for start in range(0, d, g):
            z = codes[b, start:start + g]
            nu = sorted(
                math.dist(z, t[start:start + g]) for t in target
            )[k - 1]
            rho = sorted(
                math.dist(z, other[start:start + g])
                for j, other in enumerate(codes) if j != b
            )[k - 1]
            log_ratio = math.log(max(nu, floor)) - math.log(max(rho, floor))
            if scale == "paper":
                total += log_ratio / (d // g)
            else:
                total += g * log_ratio + math.log(m / (n - 1))
        out[b] = total
    return out


# === Values ===


@pytest.mark.parametrize("block_bits", [None, 1, 4, 8])
@pytest.mark.parametrize("scale", ["paper", "wkv"])
@pytest.mark.parametrize("k", [1, 3])
def test_terms_match_a_brute_force_loop(block_bits, scale, k):
    rng = np.random.default_rng(7)
    codes = rng.normal(0.5, 0.4, (24, 16)).astype(np.float32)
    target = rng.beta(0.1, 0.1, (40, 16)).astype(np.float32)
    got = empirical_kl.empirical_kl_per_example(
        codes, target, k=k, block_bits=block_bits, scale=scale
    )
    want = ref_terms(codes, target, k, block_bits, scale)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=2e-5)


def test_wkv_scale_is_the_wang_kulkarni_verdu_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (200, 5))
    y = rng.normal(0.5, 1.2, (300, 5))
    got = empirical_kl.empirical_kl_loss(
        x.astype(np.float32), y.astype(np.float32), k=2, scale="wkv"
    )
    want = estimators.knn_kl_divergence(x, y, k=2)
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_blocks_of_one_bit_sum_per_bit_estimates_in_wkv_scale():
    rng = np.random.default_rng(2)
    x = rng.normal(0.3, 1.0, (100, 4))
    y = rng.normal(0.0, 1.0, (150, 4))
    got = empirical_kl.empirical_kl_loss(
        x.astype(np.float32), y.astype(np.float32), k=3, block_bits=1,
        scale="wkv",
    )
    want = sum(
        estimators.knn_kl_divergence(x[:, [i]], y[:, [i]], k=3)
        for i in range(4)
    )
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_tight_clusters_select_the_exact_neighbour():
    """Noise 3e-4 around 32 corners of {0,1}^64: Gram-expansion selection in
    float32 took the wrong neighbour 70 % of the time."""
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 2, (32, 64)).astype(np.float64)
    codes = corners[rng.integers(0, 32, 256)] + rng.normal(0, 3e-4, (256, 64))
    codes32 = codes.astype(np.float32)
    blocks = codes32[None]
    got = empirical_kl.kth_neighbour_sq_distances(blocks, blocks, 1, True)
    want = estimators.knn_distances(
        codes32.astype(np.float64), codes32.astype(np.float64), k=1,
        exclude_self=True,
    )[:, 0]
    got_log_rho = 0.5 * np.log(got.numpy()[0])
    np.testing.assert_allclose(got_log_rho, np.log(want), atol=1e-3)


def test_bad_arguments_name_the_field():
    codes = np.zeros((8, 6), np.float32)
    with pytest.raises(ValueError, match="block_bits.*divide"):
        empirical_kl.empirical_kl_loss(codes, codes, block_bits=4)
    with pytest.raises(ValueError, match="block_bits"):
        losses.EmpiricalKLLoss(block_bits=0)
    with pytest.raises(ValueError, match="scale"):
        empirical_kl.empirical_kl_loss(codes, codes, scale="nats")
    with pytest.raises(ValueError, match="target_multiple"):
        losses.EmpiricalKLLoss(target_multiple=0)


def test_loss_class_draws_target_multiple_times_batch():
    loss = losses.EmpiricalKLLoss(target_multiple=4, block_bits=8, seed=3)
    sample = loss.sample_target((4 * 16, 64))
    assert sample.shape == (64, 64)
    config = loss.get_config()
    assert config["target_multiple"] == 4 and config["block_bits"] == 8
    again = losses.EmpiricalKLLoss.from_config(config)
    assert again.get_config() == config


# === What the joint estimate rewards in 64 bits (docs/kl_binarisation.md) ===


def _balanced_binary(n, d, rng):
    return rng.integers(0, 2, (n, d)).astype(np.float32)


def test_joint_estimate_rewards_spreading_unbounded_codes():
    """Codes 0.5 + s (b - 0.5) for balanced binary b: the paper's joint
    estimate is LOWER for codes spread past the target's support (s = 2, 3)
    than for binary codes (s = 1), and below zero (a true KL is >= 0): so
    it drives a linear head outward, not to {0, 1}."""
    rng = np.random.default_rng(4)
    bits = _balanced_binary(256, 64, rng)
    noise = rng.normal(0, 0.05, bits.shape).astype(np.float32)
    target = target_sampling.sample_target_codes((256, 64), alpha=0.1, seed=5)

    def value(s):
        codes = 0.5 + s * (bits - 0.5) + noise
        return float(empirical_kl.empirical_kl_loss(codes, target))

    binary = value(1.0)
    assert value(2.0) < binary - 0.1
    assert value(3.0) < binary - 0.1
    assert value(3.0) < 0.0
    assert value(0.6) > binary  # shrinking towards 0.5 is still penalised


def test_blockwise_estimate_prefers_binary_codes_to_spread_ones():
    rng = np.random.default_rng(6)
    bits = _balanced_binary(256, 64, rng)
    noise = rng.normal(0, 0.02, bits.shape).astype(np.float32)
    target = target_sampling.sample_target_codes((256, 64), alpha=0.1, seed=7)

    def value(s):
        codes = 0.5 + s * (bits - 0.5) + noise
        return float(empirical_kl.empirical_kl_loss(codes, target, block_bits=8))

    binary = value(1.0)
    assert all(binary < value(s) - 0.3 for s in (0.6, 1.5, 2.0, 3.0))


# === Free codes: the default configuration binarises ===


def test_default_kl_configuration_binarises_free_codes():
    """Minimise L_KL alone (the library defaults of LossConfig and the code
    head of ModelConfig) over free [128, 64] pre-activations: the codes move
    to the near-binary, balanced, all-distinct target, well past what the
    head gives before training."""
    import dataclasses

    from shrewd_tf import config as config_lib
    from shrewd_tf.models import code_head
    from shrewd_tf.training import objective as training

    loss_config = dataclasses.replace(config_lib.LossConfig(), losses="SIM-KL")
    model_config = config_lib.ModelConfig()
    kl = training.make_losses(
        loss_config, class_distances=np.zeros((2, 2)), seed=0
    )[training.KL_OUTPUT]
    layers = code_head.code_head_activation(
        model_config.code_activation, gain=model_config.code_gain
    )
    rng = np.random.default_rng(0)
    variable = tf.Variable(rng.normal(0.0, 1.0, (128, 64)).astype(np.float32))
    optimizer = tf.keras.optimizers.Adam(2e-2)

    def head(x):
        for layer in layers:
            x = layer(x, training=True)
        return x

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = kl(tf.zeros_like(variable), head(variable))
        optimizer.apply_gradients(
            [(tape.gradient(value, variable), variable)]
        )

    before = metrics.code_statistics(head(variable).numpy())
    for _ in range(300):
        step()
    after = metrics.code_statistics(head(variable).numpy())
    assert after["near_binary"] >= 0.95 > before["near_binary"] + 0.05
    assert after["bit_balance_deviation"] <= 0.05
    assert after["distinct_fraction"] == 1.0


def test_paper_setting_does_not_binarise_free_codes():
    """The paper-literal setting (linear head, joint estimate, Beta(0.1), m =
    B) on the same free codes: they spread instead (section 1 of
    docs/kl_binarisation.md)."""
    from shrewd_tf import config as config_lib

    paper = config_lib.ExperimentConfig().with_preset("paper").loss
    loss = losses.EmpiricalKLLoss(
        k=paper.kl_k, alpha=paper.kl_alpha, block_bits=paper.kl_block_bits,
        scale=paper.kl_scale, target_multiple=paper.kl_target_multiple,
        seed=0,
    )
    rng = np.random.default_rng(0)
    variable = tf.Variable(rng.normal(0.5, 0.3, (128, 64)).astype(np.float32))
    optimizer = tf.keras.optimizers.Adam(2e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(tf.zeros_like(variable), variable)
        optimizer.apply_gradients(
            [(tape.gradient(value, variable), variable)]
        )

    for _ in range(300):
        step()
    after = metrics.code_statistics(variable.numpy())
    assert after["near_binary"] < 0.3
    assert float(np.std(variable.numpy())) > 0.6  # spread past [0, 1]

"""Tests for shrewd_tf.ops.target_sampling against scipy's distributions."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from shrewd_tf.ops import target_sampling


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0, 2.0])
def test_beta_target_matches_scipy_beta(alpha):
    sample = np.asarray(
        target_sampling.sample_target_codes(
            (500, 8), "beta", alpha=alpha, seed=1
        )
    )
    assert sample.dtype == np.float32 and sample.shape == (500, 8)
    assert np.all((sample >= 0) & (sample <= 1))
    # Kolmogorov-Smirnov distance to scipy's Beta(alpha, alpha) (1% critical
    # value for n = 4000: 1.63 / sqrt(n) = 0.026), taken over x < 1 - 1e-6:
    # float32 cannot hold 1 - t for t < 6e-8, so that upper-tail mass (9%
    # at alpha = 0.1) is rounded to exactly 1.
    values = np.sort(sample.ravel().astype(np.float64))
    cdf = stats.beta(alpha, alpha).cdf(values)
    rank = np.arange(values.size)
    below = values < 1 - 1e-6
    statistic = max(
        np.max(np.abs(rank[below] / values.size - cdf[below])),
        np.max(np.abs((rank[below] + 1) / values.size - cdf[below])),
    )
    assert statistic < 0.026


def test_bernoulli_noise_and_uniform_targets():
    bits = np.asarray(
        target_sampling.sample_target_codes(
            (4000, 8), "bernoulli_noise", noise_std=0.05, seed=2
        )
    )
    assert abs(np.mean(bits > 0.5) - 0.5) < 0.02
    assert abs(np.std(bits - np.round(bits)) - 0.05) < 0.005
    uniform = np.asarray(
        target_sampling.sample_target_codes((4000, 8), "uniform")
    )
    assert np.all((uniform >= 0) & (uniform < 1))
    assert abs(uniform.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="distribution='gauss'"):
        target_sampling.sample_target_codes((2, 2), "gauss")


def test_unseeded_sampling_is_fresh_each_call_in_graph():
    unseeded = tf.function(
        lambda: target_sampling.sample_target_codes((4, 8))
    )
    assert not np.allclose(unseeded(), unseeded())

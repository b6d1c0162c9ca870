"""Samples of the target code distribution for the empirical KL loss.

`sample_target_codes(shape, distribution, ...)` draws codes of independent
bits: Beta(alpha, alpha) (the paper's target; balanced and near-binary for
alpha << 1), a fair coin plus Gaussian noise, or uniform. Sampling uses
`tf.random.stateless_*` ops with a shape-[2] int32 seed (`_stateless_seed`
turns None, ints and Keras `SeedGenerator` states into one), and, except
for Beta with alpha > 1, compiles under XLA.
"""

import math

import numpy as np
import tensorflow as tf
from keras import ops

TARGET_DISTRIBUTIONS = ("beta", "bernoulli_noise", "uniform")


def _stateless_seed(seed):
    """A shape-[2] int32 seed for `tf.random.stateless_*` ops.

    An int gives [seed, 0]; None draws one with a stateful op, so it is
    fresh on every execution, also inside `tf.function`; a tensor (e.g. a
    `keras.random.SeedGenerator` state) is reduced to int32 as Keras does.
    """
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed) % (2**31 - 1), 0], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


def _uniform(shape, seed):
    return tf.random.stateless_uniform(shape, seed, dtype=tf.float32)


def _balanced_beta_johnk(shape, alpha, seed):
    """Beta(alpha, alpha) by Johnk's method, for alpha <= 1.

    With U, V ~ U(0, 1], X = U^(1/alpha), Y = V^(1/alpha), the draw
    X / (X + Y) conditioned on X + Y <= 1 is Beta(alpha, alpha). Acceptance
    is Gamma(alpha + 1)^2 / Gamma(2 alpha + 1) (0.986 at alpha = 0.1, 0.5
    at alpha = 1); enough candidates are drawn at once that all are
    rejected with probability < 1e-12 per value (then the first candidate
    is used). Logs keep tiny powers from underflowing. Only uniform draws
    are used, so this compiles under XLA, unlike Gamma sampling.
    """
    log_accept = 2.0 * math.lgamma(alpha + 1.0) - math.lgamma(2 * alpha + 1)
    log_reject = math.log1p(-math.exp(log_accept)) if log_accept < 0 else None
    tries = 1 if not log_reject else math.ceil(math.log(1e-12) / log_reject)
    draw_shape = tf.concat([[2, tries], shape], axis=0)
    # 1 - U is in (0, 1], so the logs are finite.
    log_xy = ops.log(1.0 - _uniform(draw_shape, seed)) / alpha
    log_x, log_y = log_xy[0], log_xy[1]
    log_sum = ops.logaddexp(log_x, log_y)
    first_accepted = ops.argmax(ops.cast(log_sum <= 0.0, "int32"), axis=0)
    candidates = ops.exp(log_x - log_sum)
    return ops.take_along_axis(candidates, first_accepted[None], axis=0)[0]


def sample_target_codes(
    shape, distribution="beta", alpha=0.1, noise_std=0.05, seed=None
):
    """Draws codes from a target distribution of independent bits.

    * "beta": Beta(alpha, alpha) per bit: balanced, and near-binary for
      alpha << 1 (the paper's target). For alpha <= 1 it uses Johnk's
      method (uniform draws only, compiles under XLA); for alpha > 1 it
      draws two Gamma(alpha) variates in float64 (Gamma sampling has no XLA
      kernel: train with `jit_compile=False`).
    * "bernoulli_noise": a fair coin per bit plus N(0, noise_std^2).
    * "uniform": U[0, 1) per bit.

    Args:
        shape: output shape, e.g. (B, d); entries may be tensors.
        distribution: one of "beta", "bernoulli_noise", "uniform".
        alpha: Beta parameter, > 0.
        noise_std: noise standard deviation for "bernoulli_noise", >= 0.
        seed: None (fresh on every execution), an int (reproducible), or a
            shape-[2] integer tensor as taken by `tf.random.stateless_*`.

    Returns:
        float32 tensor of `shape`.

    Raises:
        ValueError: on an unknown distribution or alpha <= 0.
    """
    if distribution not in TARGET_DISTRIBUTIONS:
        raise ValueError(
            f"`distribution` must be one of {TARGET_DISTRIBUTIONS}. "
            f"Received: distribution={distribution!r}"
        )
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0. Received: alpha={alpha}")
    seed = _stateless_seed(seed)
    shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
    if distribution == "uniform":
        return _uniform(shape, seed)
    if distribution == "bernoulli_noise":
        # One draw for coin and noise; the noise is the inverse normal CDF
        # of the second half. 2u - 1 = -1 (erfinv = -inf) has probability
        # 2^-24 and is nudged inside.
        draw = _uniform(tf.concat([[2], shape], axis=0), seed)
        coins = ops.cast(draw[0] < 0.5, "float32")
        centred = ops.maximum(2.0 * draw[1] - 1.0, -1.0 + 1e-7)
        return coins + noise_std * math.sqrt(2.0) * ops.erfinv(centred)
    if alpha <= 1.0:
        return _balanced_beta_johnk(shape, float(alpha), seed)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    gammas = [
        tf.random.stateless_gamma(shape, s, alpha=alpha, dtype=tf.float64)
        for s in (seeds[0], seeds[1])
    ]
    return ops.cast(gammas[0] / (gammas[0] + gammas[1]), "float32")

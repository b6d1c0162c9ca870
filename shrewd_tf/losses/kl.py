"""Empirical KL divergence, eq. 4 of "Learning to hash with semantic
similarity metrics and empirical KL divergence", as a Keras loss.

The kNN maths is in `shrewd_tf.ops.empirical_kl` (pure functions that tests
call directly) and the target sample comes from
`shrewd_tf.ops.target_sampling`. The loss couples the examples of a batch,
so it returns one value per example (`[B]`) whose mean is the paper's
scalar. Neighbours are searched within one replica's batch, or across
replicas with `cross_replica=True` (`shrewd_tf.losses.replicas`). Computed in
float32 whatever the input dtype, and compiles under XLA.
"""

import numbers

import keras
import tensorflow as tf
from keras import ops

from shrewd_tf.losses.replicas import gather_across_replicas
from shrewd_tf.losses.replicas import local_rows
from shrewd_tf.ops.empirical_kl import check_block_bits
from shrewd_tf.ops.empirical_kl import check_scale
from shrewd_tf.ops.empirical_kl import empirical_kl_per_example
from shrewd_tf.ops.target_sampling import TARGET_DISTRIBUTIONS
from shrewd_tf.ops.target_sampling import _stateless_seed
from shrewd_tf.ops.target_sampling import sample_target_codes
from shrewd_tf.ops.validation import check_positive_int


@keras.saving.register_keras_serializable(package="shrewd_tf")
class EmpiricalKLLoss(keras.losses.Loss):
    """Eq. 4 as a Keras loss: kNN KL divergence from codes to a target.

    Each call draws a FRESH target sample with the shape of `y_pred` from
    `sample_target_codes(target, alpha, noise_std)`, seeded by a
    `keras.random.SeedGenerator` whose state advances on every call (also
    inside `tf.function`) and is folded with the replica id, so replicas
    draw different samples. `y_true` is ignored. Neighbours are searched
    within this replica's batch. Returns [B] per-example terms whose mean is
    eq. 4; see `empirical_kl_per_example`. Computed in float32 under any
    mixed-precision policy.

    Args:
        k: neighbour rank, >= 1.
        target: "beta" (Beta(alpha, alpha) per bit, default),
            "bernoulli_noise" or "uniform".
        alpha: Beta parameter, > 0. The default 0.02 puts 96 % of the
            target's values within 0.1 of {0, 1}; the paper's 0.1 puts 81 %
            (docs/kl_binarisation.md).
        noise_std: noise of the "bernoulli_noise" target, >= 0.
        min_distance: distance floor before the log, > 0.
        seed: int or None, initial seed of the target sampler.
        cross_replica: search neighbours (among codes and target samples)
            over the global batch, all-gathered across replicas.
        block_bits: None (the paper's joint estimate in d dimensions) or
            a divisor g of d: the estimate is made per block of g bits
            (`shrewd_tf.ops.empirical_kl`; 1 is per bit).
        scale: "paper" (eq. 4 as written) or "wkv" (times d, plus the
            constant: an estimate in nats).
        target_multiple: the target sample has `target_multiple` x B codes
            (m = B in the paper).
        warmup_steps: ramp the term linearly from 0 to its full weight over
            this many optimiser steps (0: no warm-up, the paper). Needs a
            step counter: `step_counter=optimizer.iterations`, or
            `set_step_counter` after the optimiser exists.
        step_counter: a scalar integer variable counting training steps
            (`optimizer.iterations`); only read, never advanced here.
        name: loss name.
        **kwargs: `reduction` etc., passed to `keras.losses.Loss`.

    Raises:
        ValueError: on invalid k, target, alpha, noise_std, min_distance,
            block_bits, scale, target_multiple or warmup_steps.
    """

    def __init__(
        self,
        k=1,
        target="beta",
        alpha=0.02,
        noise_std=0.05,
        min_distance=1e-6,
        seed=None,
        cross_replica=False,
        block_bits=None,
        scale="paper",
        target_multiple=1,
        warmup_steps=0,
        step_counter=None,
        name="empirical_kl",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(warmup_steps, bool) or not (
            isinstance(warmup_steps, numbers.Integral) and warmup_steps >= 0
        ):
            raise ValueError(
                "`warmup_steps` must be an int >= 0 (0: no warm-up). "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        block_bits = check_block_bits(block_bits)
        check_scale(scale)
        target_multiple = check_positive_int("target_multiple", target_multiple)
        k = check_positive_int("k", k)
        if target not in TARGET_DISTRIBUTIONS:
            raise ValueError(
                f"`target` must be one of {TARGET_DISTRIBUTIONS}. "
                f"Received: target={target!r}"
            )
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0. Received: alpha={alpha}")
        if not noise_std >= 0:
            raise ValueError(
                f"`noise_std` must be >= 0. Received: noise_std={noise_std}"
            )
        if not min_distance > 0:
            raise ValueError(
                "`min_distance` must be > 0. "
                f"Received: min_distance={min_distance}"
            )
        self.k = int(k)
        self.target = target
        self.alpha = float(alpha)
        self.noise_std = float(noise_std)
        self.min_distance = float(min_distance)
        self.seed = seed
        self.cross_replica = bool(cross_replica)
        self.block_bits = block_bits
        self.scale = scale
        self.target_multiple = int(target_multiple)
        self.warmup_steps = int(warmup_steps)
        self.step_counter = step_counter
        self.seed_generator = keras.random.SeedGenerator(seed)

    def set_step_counter(self, step_counter):
        """Reads the warm-up's step from `step_counter` (for example
        `optimizer.iterations`, which Keras advances once per step)."""
        self.step_counter = step_counter

    def warmup_factor(self):
        """min(1, step / warmup_steps): the weight's fraction this step."""
        if not self.warmup_steps:
            return 1.0
        if self.step_counter is None:
            raise ValueError(
                f"EmpiricalKLLoss has warmup_steps={self.warmup_steps} but "
                "no step counter. Pass `step_counter=optimizer.iterations` "
                "or call `set_step_counter(optimizer.iterations)` before "
                "training."
            )
        step = ops.cast(ops.convert_to_tensor(self.step_counter), "float32")
        return ops.minimum(1.0, step / float(self.warmup_steps))

    def sample_target(self, shape):
        """A fresh float32 target sample of `shape`.

        The seed is the next state of `self.seed_generator`, folded with the
        replica id under `tf.distribute`, so replicas draw different samples.
        """
        seed = _stateless_seed(self.seed_generator.next())
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return sample_target_codes(
            shape,
            self.target,
            alpha=self.alpha,
            noise_std=self.noise_std,
            seed=seed,
        )

    def call(self, y_true, y_pred):
        codes = ops.cast(y_pred, "float32")
        batch, bits = ops.shape(codes)
        targets = self.sample_target((batch * self.target_multiple, bits))
        rows = None
        if self.cross_replica:
            # Gathered as [B, multiple * d] rows next to the codes' [B, d].
            width = codes.shape[1] * self.target_multiple
            per_code = ops.reshape(targets, (batch, width))
            (codes, per_code), rows = gather_across_replicas(codes, per_code)
            targets = ops.reshape(per_code, (-1, codes.shape[1]))
        values = empirical_kl_per_example(
            codes, targets, self.k, self.min_distance, self.block_bits,
            self.scale,
        )
        if self.warmup_steps:
            values = values * self.warmup_factor()
        return local_rows(values, rows)

    def get_config(self):
        return {
            **super().get_config(),
            "k": self.k,
            "target": self.target,
            "alpha": self.alpha,
            "noise_std": self.noise_std,
            "min_distance": self.min_distance,
            "seed": self.seed,
            "cross_replica": self.cross_replica,
            "block_bits": self.block_bits,
            "scale": self.scale,
            "target_multiple": self.target_multiple,
            "warmup_steps": self.warmup_steps,
        }

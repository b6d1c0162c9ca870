"""The two SHREWD training losses: similarity matching (eq. 2) and empirical
KL divergence (eq. 4) of "Learning to hash with semantic similarity metrics
and empirical KL divergence".

Codes z are the continuous network outputs, roughly in [0, 1]^d; the binary
code is z > 0.5, and the Manhattan distance between binary codes is their
Hamming distance.

Both losses couple the examples of a batch, so the Keras `Loss` classes
return one value per example (`[B]`) whose mean is the paper's scalar.
By default pairs and neighbours are formed within the batch of ONE replica
(nothing crosses devices; the optimised objective is then the mean over
replicas of the per-replica losses). With `cross_replica=True` the Keras
losses all-gather codes and targets across replicas first, so pairs and
neighbours span the global batch and the objective is exactly eq. 2 / eq. 4
on the global batch (gradients flow back through the all-gather).

The maths is in pure functions (`similarity_matching_loss`,
`empirical_kl_loss` and their `*_per_example` forms) that tests call
directly. Everything is computed in float32 whatever the input dtype, so the
losses are safe under the `mixed_float16` / `mixed_bfloat16` policies.

The pairwise code and target distances of eq. 2 are in `shrewd_tf.ops.pairwise`
(memory-lean L1 with a custom gradient); the kNN maths of eq. 4 is in
`shrewd_tf.ops.empirical_kl` (re-exported here) and its target sample comes from
`shrewd_tf.ops.target_sampling`. Everything here also compiles under XLA,
which Keras' default `jit_compile="auto"` turns on for `fit` on GPU
machines.
"""


import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from shrewd_tf.ops.empirical_kl import KL_SCALES  # noqa: F401 (re-export)
from shrewd_tf.ops.empirical_kl import check_block_bits
from shrewd_tf.ops.empirical_kl import check_positive_int
from shrewd_tf.ops.empirical_kl import check_scale
from shrewd_tf.ops.empirical_kl import empirical_kl_loss  # noqa: F401
from shrewd_tf.ops.empirical_kl import empirical_kl_per_example
from shrewd_tf.ops.pairwise import TARGET_METRICS
from shrewd_tf.ops.pairwise import _check_codes
from shrewd_tf.ops.pairwise import pairwise_manhattan_distances
from shrewd_tf.ops.pairwise import pairwise_target_distances
from shrewd_tf.ops.target_sampling import TARGET_DISTRIBUTIONS
from shrewd_tf.ops.target_sampling import _stateless_seed
from shrewd_tf.ops.target_sampling import sample_target_codes

# Floor for tau_z, the sum of all pairwise code distances. It only matters
# when every code in the batch is identical (tau_z = 0); any real batch has
# tau_z many orders of magnitude larger.
_TAU_EPSILON = 1e-12


# === Similarity matching (eq. 2) ===


def similarity_weights(target_distances, gamma=0.1, rho=2.0):
    """Pair weights w = gamma^rho / (gamma + d)^rho of eq. 2.

    Args:
        target_distances: float tensor [B, B], non-negative.
        gamma: positive scale; pairs closer than gamma get weight ~1.
        rho: decay exponent.

    Returns:
        float32 tensor [B, B] in (0, 1].
    """
    target_distances = ops.cast(target_distances, "float32")
    return ops.power(gamma / (gamma + target_distances), rho)


def _check_similarity_args(codes, target_distances, gamma, rho):
    if not gamma > 0:
        raise ValueError(f"`gamma` must be > 0. Received: gamma={gamma}")
    if not rho >= 0:
        raise ValueError(f"`rho` must be >= 0. Received: rho={rho}")
    codes = _check_codes(codes)
    target_distances = ops.stop_gradient(
        ops.cast(target_distances, "float32")
    )
    if len(target_distances.shape) != 2 or (
        None not in (codes.shape[0], *target_distances.shape)
        and target_distances.shape != (codes.shape[0], codes.shape[0])
    ):
        raise ValueError(
            "`target_distances` must have shape [B, B] for codes [B, d]. "
            f"Received: target_distances.shape={target_distances.shape}, "
            f"codes.shape={codes.shape}"
        )
    return codes, target_distances


def similarity_matching_per_example(
    codes, target_distances, gamma=0.1, rho=2.0
):
    """Eq. 2 split over examples: B times the row sums of its pair terms.

    The pair term is |D_bb' / tau_z - d_bb' / tau_y| * w_bb' with D the
    Manhattan distances between codes, tau_z = sum D and tau_y = sum d over
    all ordered pairs (the diagonal included), w from `similarity_weights`.
    Row b gets B * sum_b' term_bb', so the MEAN over the batch is exactly
    eq. 2, and Keras' default "sum_over_batch_size" reduction reproduces
    eq. 2 on one replica.

    Under `tf.distribute` with R replicas of B examples each, pairs are
    formed within each replica. Keras divides each replica's sum by its B
    and by R, and the gradients of the replicas are summed, so the optimised
    objective is (1/R) sum_r L_sim(replica r): the MEAN of per-replica eq. 2,
    the same scale as one device. A Keras `sample_weight` multiplies row
    b's value, i.e. weights the pairs (b, b') for all b'.

    Degenerate batches: if every target distance is 0 (tau_y = 0) the target
    term d / tau_y is defined as 0. If every code is identical (tau_z = 0),
    tau_z is floored at 1e-12 (then D / tau_z = 0). B = 1 gives 0. Values
    and gradients stay finite in all these cases.

    Args:
        codes: float tensor [B, d], continuous codes; computed in float32.
        target_distances: float tensor [B, B], non-negative; no gradient
            flows into it.
        gamma: weight scale of eq. 2, > 0.
        rho: weight exponent of eq. 2, >= 0.

    Returns:
        float32 tensor [B].

    Raises:
        ValueError: on bad shapes or parameters.
    """
    codes, target_distances = _check_similarity_args(
        codes, target_distances, gamma, rho
    )
    code_distances = pairwise_manhattan_distances(codes)
    tau_z = ops.maximum(ops.sum(code_distances), _TAU_EPSILON)
    tau_y = ops.sum(target_distances)
    has_targets = tau_y > 0.0
    scaled_targets = ops.where(
        has_targets,
        target_distances / ops.where(has_targets, tau_y, 1.0),
        0.0,
    )
    terms = ops.abs(code_distances / tau_z - scaled_targets)
    terms = terms * similarity_weights(target_distances, gamma, rho)
    batch = ops.cast(ops.shape(codes)[0], "float32")
    return batch * ops.sum(terms, axis=1)


def similarity_matching_loss(codes, target_distances, gamma=0.1, rho=2.0):
    """L_sim of eq. 2: match normalised code distances to target distances.

    L_sim = sum_{b,b'} |D_bb' / tau_z - d_bb' / tau_y| w_bb' over all
    ordered pairs; see `similarity_matching_per_example` for the terms and
    the rules for degenerate batches.

    Args:
        codes: float tensor [B, d].
        target_distances: float tensor [B, B].
        gamma: weight scale, > 0 (paper: 0.1).
        rho: weight exponent, >= 0 (paper: 2).

    Returns:
        float32 scalar.
    """
    return ops.mean(
        similarity_matching_per_example(codes, target_distances, gamma, rho)
    )


# === Across replicas ===


def gather_across_replicas(*tensors):
    """All-gathers [B, ...] tensors along axis 0 across replicas in sync.

    The tensors are flattened to [B, n_i], concatenated and gathered in ONE
    collective (several collectives per step can be matched out of order
    between replicas), then split and reshaped back. Outside
    `tf.distribute`, or with one replica, they are returned unchanged.

    Returns:
        (gathered tensors, rows): `rows` [B_local] indexes this replica's
        examples in the gathered batch (replicas must have equal local
        batches, as with `drop_remainder=True`), or None when unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors, None
    local = tf.shape(tensors[0])[0]
    widths = []
    for t in tensors:
        feature_shape = t.shape[1:]
        if not feature_shape.is_fully_defined():
            raise ValueError(
                "Gathering across replicas needs static feature sizes. "
                f"Received shapes: {[t.shape for t in tensors]}"
            )
        widths.append(int(np.prod(feature_shape.as_list(), dtype=np.int64)))
    flat = [
        tf.reshape(tf.cast(t, tf.float32), [local, w])
        for t, w in zip(tensors, widths)
    ]
    gathered = context.all_gather(tf.concat(flat, axis=1), axis=0)
    parts = tf.split(gathered, widths, axis=1)
    out = tuple(
        tf.reshape(part, tf.concat([[-1], tf.shape(t)[1:]], axis=0))
        for part, t in zip(parts, tensors)
    )
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    rows = replica * local + tf.range(local)
    return out, rows


def _local_rows(values, rows):
    return values if rows is None else tf.gather(values, rows)


# === Keras losses ===


@keras.saving.register_keras_serializable(package="shrewd_tf")
class SimilarityMatchingLoss(keras.losses.Loss):
    """Eq. 2 as a Keras loss: match code distances to target distances.

    `y_pred` are the codes [B, d]. `y_true` gives the targets:

    * with `class_distances` (a C x C matrix): integer labels [B] or [B, 1];
      the target distance of a pair is `class_distances[y_b, y_b']`.
      (Keras casts `y_true` to float32; labels are rounded back.)
    * without: float embeddings [B, E]; targets are pairwise
      `target_metric` distances ("cosine": 1 - cos, or "euclidean").

    Returns [B] per-example values whose batch mean is eq. 2 on this
    replica's batch; see `similarity_matching_per_example` for the scale
    under `tf.distribute` and the degenerate-batch rules. Computed in
    float32 under any mixed-precision policy.

    Args:
        gamma: weight scale of eq. 2, > 0.
        rho: weight exponent of eq. 2, >= 0.
        class_distances: optional C x C array-like of non-negative class
            distances.
        target_metric: "cosine" or "euclidean", for embedding targets.
        cross_replica: form pairs over the global batch (all-gather across
            replicas) instead of within each replica's batch.
        name: loss name.
        **kwargs: `reduction` etc., passed to `keras.losses.Loss`.

    Raises:
        ValueError: on a non-square, negative or non-finite
            `class_distances` or an unknown `target_metric`.

    Example:
        ```python
        loss = SimilarityMatchingLoss(class_distances=[[0, 1], [1, 0]])
        loss(np.array([0, 1, 1]), codes)  # codes: [3, d]
        ```
    """

    def __init__(
        self,
        gamma=0.1,
        rho=2.0,
        class_distances=None,
        target_metric="cosine",
        cross_replica=False,
        name="similarity_matching",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not gamma > 0:
            raise ValueError(f"`gamma` must be > 0. Received: gamma={gamma}")
        if not rho >= 0:
            raise ValueError(f"`rho` must be >= 0. Received: rho={rho}")
        if target_metric not in TARGET_METRICS:
            raise ValueError(
                f"`target_metric` must be one of {TARGET_METRICS}. "
                f"Received: target_metric={target_metric!r}"
            )
        if class_distances is not None:
            matrix = np.asarray(class_distances, dtype=np.float64)
            if (
                matrix.ndim != 2
                or matrix.shape[0] != matrix.shape[1]
                or matrix.shape[0] < 1
                or not np.all(np.isfinite(matrix))
                or np.any(matrix < 0)
            ):
                raise ValueError(
                    "`class_distances` must be a finite, non-negative square "
                    f"matrix. Received: class_distances with shape "
                    f"{matrix.shape}: {matrix!r}"
                )
            class_distances = matrix
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.class_distances = class_distances
        self.target_metric = target_metric
        self.cross_replica = bool(cross_replica)

    def target_distances(self, y_true):
        """Target distance matrix [B, B] (float32) for a batch's y_true."""
        if self.class_distances is None:
            return pairwise_target_distances(y_true, self.target_metric)
        labels = ops.cast(ops.round(ops.reshape(y_true, (-1,))), "int32")
        matrix = ops.convert_to_tensor(self.class_distances, dtype="float32")
        return ops.take(ops.take(matrix, labels, axis=0), labels, axis=1)

    def call(self, y_true, y_pred):
        codes = ops.cast(y_pred, "float32")
        rows = None
        if self.cross_replica:
            (codes, y_true), rows = gather_across_replicas(codes, y_true)
        values = similarity_matching_per_example(
            codes, self.target_distances(y_true), self.gamma, self.rho
        )
        return _local_rows(values, rows)

    def get_config(self):
        class_distances = self.class_distances
        if class_distances is not None:
            class_distances = class_distances.tolist()
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "rho": self.rho,
            "class_distances": class_distances,
            "target_metric": self.target_metric,
            "cross_replica": self.cross_replica,
        }


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
        return _local_rows(values, rows)

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

"""Similarity matching, eq. 2 of "Learning to hash with semantic similarity
metrics and empirical KL divergence": match normalised code distances to
target distances.

Codes z are the continuous network outputs, roughly in [0, 1]^d; the binary
code is z > 0.5, and the Manhattan distance between binary codes is their
Hamming distance.

The loss couples the examples of a batch, so the Keras `Loss` returns one
value per example (`[B]`) whose mean is the paper's scalar. Pairs are formed
within one replica's batch, or across replicas with `cross_replica=True`
(`shrewd_tf.losses.replicas`).

The maths is in pure functions (`similarity_matching_loss` and
`similarity_matching_per_example`) that tests call directly. Everything is
computed in float32 whatever the input dtype, so the loss is safe under the
`mixed_float16` / `mixed_bfloat16` policies. The pairwise code and target
distances are in `shrewd_tf.ops.pairwise` (memory-lean L1 with a custom
gradient). Everything here also compiles under XLA, which Keras' default
`jit_compile="auto"` turns on for `fit` on GPU machines.
"""

import keras
import numpy as np
from keras import ops

from shrewd_tf.losses.replicas import gather_across_replicas
from shrewd_tf.losses.replicas import local_rows
from shrewd_tf.ops.pairwise import TARGET_METRICS
from shrewd_tf.ops.pairwise import _check_codes
from shrewd_tf.ops.pairwise import pairwise_manhattan_distances
from shrewd_tf.ops.pairwise import pairwise_target_distances

# Floor for tau_z, the sum of all pairwise code distances. It only matters
# when every code in the batch is identical (tau_z = 0); any real batch has
# tau_z many orders of magnitude larger.
_TAU_EPSILON = 1e-12


# === Eq. 2 (pure functions) ===


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


# === Keras loss ===


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
        return local_rows(values, rows)

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

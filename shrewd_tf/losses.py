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

Memory: a naive pairwise L1 matrix goes through a [B, B, d] tensor (4 GiB in
float32 at B = 4096, d = 64, and as much again for its gradient).
`pairwise_manhattan_distances` instead accumulates bit by bit into a
[B, B] buffer (in tiles of rows) and has a custom gradient that loops the
same way.
This part uses TensorFlow directly (`tf.custom_gradient`, `tf.foldl`,
`tf.map_fn`): the package targets the TensorFlow backend. Everything here,
target sampling included, also compiles under XLA, which Keras' default
`jit_compile="auto"` turns on for `fit` on GPU machines.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Rows per tile of the pairwise L1 loops: a [128, 4096] float32 block is
# 2 MiB, small enough to stay in cache while it accumulates over the bits.
_TILE_ROWS = 128

# Floor for tau_z, the sum of all pairwise code distances. It only matters
# when every code in the batch is identical (tau_z = 0); any real batch has
# tau_z many orders of magnitude larger.
_TAU_EPSILON = 1e-12

TARGET_METRICS = ("cosine", "euclidean")
TARGET_DISTRIBUTIONS = ("beta", "bernoulli_noise", "uniform")


# === Pairwise distances ===


def _check_codes(codes, name="codes"):
    codes = ops.cast(codes, "float32")
    if len(codes.shape) != 2:
        raise ValueError(
            f"`{name}` must be 2-D: [batch, dim]. "
            f"Received: {name}.shape={codes.shape}"
        )
    return codes


def _row_tiles(x, rows):
    """Zero-pads [B, ...] to a multiple of `rows` and splits it into
    [num_tiles, rows, ...]."""
    shape = tf.shape(x)
    padding = [[0, (-shape[0]) % rows]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.reshape(
        tf.pad(x, padding), tf.concat([[-1, rows], shape[1:]], axis=0)
    )


def pairwise_manhattan_distances(codes):
    """All-pairs Manhattan (L1) distances, without a [B, B, d] tensor.

    The forward pass loops over bits and accumulates |z_ik - z_jk| into a
    [B, B] buffer. The custom gradient loops the same way:
    d/dz_ik sum_ij G_ij |z_ik - z_jk| = sum_j (G_ij + G_ji) sign(z_ik - z_jk),
    with the subgradient 0 at z_ik = z_jk, so duplicated codes get finite
    gradients. Peak memory is a few [B, B] float32 buffers (64 MiB each at
    B = 4096) instead of [B, B, d] tensors (4 GiB at d = 64).

    Both loops also run over tiles of 128 rows, so that the [128, B] block
    being accumulated stays in CPU cache across the bits (4x faster than
    whole [B, B] passes at B = 4096 on CPU). All loops are `tf.foldl` /
    `tf.map_fn` with `parallel_iterations=1` (concurrent iterations would
    multiply the peak) and static shapes, so the function also compiles
    under XLA (`jit_compile=True`). Second derivatives are not supported.

    Args:
        codes: float tensor [B, d]; computed in float32.

    Returns:
        float32 tensor [B, B], symmetric, zero diagonal.

    Raises:
        ValueError: if `codes` is not 2-D.
    """
    codes = _check_codes(codes)

    @tf.custom_gradient
    def distances(z):
        batch = tf.shape(z)[0]
        bit_major = tf.transpose(z)  # [d, B]

        def tile_distances(tile):  # [T, d] -> [T, B]
            def add_bit(acc, columns):
                tile_column, column = columns
                return acc + tf.abs(tile_column[:, None] - column[None, :])

            return tf.foldl(
                add_bit,
                (tf.transpose(tile), bit_major),
                initializer=tf.zeros([_TILE_ROWS, batch], z.dtype),
                parallel_iterations=1,
            )

        tiles = tf.map_fn(
            tile_distances, _row_tiles(z, _TILE_ROWS), parallel_iterations=1
        )
        result = tf.reshape(tiles, [-1, batch])[:batch]

        def grad(upstream):
            both_ways = upstream + tf.transpose(upstream)

            def tile_grad(tile_and_weights):  # [T, d], [T, B] -> [T, d]
                tile, weights = tile_and_weights

                def bit_grad(columns):
                    tile_column, column = columns
                    sign = tf.sign(tile_column[:, None] - column[None, :])
                    return tf.reduce_sum(sign * weights, axis=1)

                by_bit = tf.map_fn(
                    bit_grad,
                    (tf.transpose(tile), bit_major),
                    fn_output_signature=z.dtype,
                    parallel_iterations=1,
                )
                return tf.transpose(by_bit)

            tiles = tf.map_fn(
                tile_grad,
                (_row_tiles(z, _TILE_ROWS), _row_tiles(both_ways, _TILE_ROWS)),
                fn_output_signature=z.dtype,
                parallel_iterations=1,
            )
            return tf.reshape(tiles, [-1, tf.shape(z)[1]])[:batch]

        return result, grad

    return distances(codes)


def pairwise_target_distances(embeddings, metric="cosine"):
    """Target distances between the embeddings of a batch (no gradient).

    Args:
        embeddings: float tensor [B, E], e.g. sentence embeddings.
        metric: "cosine" for 1 - cos(e_i, e_j) (in [0, 2]; a zero vector
            has cosine 0 to everything) or "euclidean" for |e_i - e_j|_2.

    Returns:
        float32 tensor [B, B], symmetric, exactly zero on the diagonal.

    Raises:
        ValueError: on an unknown metric or non-2-D embeddings.
    """
    if metric not in TARGET_METRICS:
        raise ValueError(
            f"`metric` must be one of {TARGET_METRICS}. "
            f"Received: metric={metric!r}"
        )
    embeddings = ops.stop_gradient(_check_codes(embeddings, "embeddings"))
    batch = ops.shape(embeddings)[0]
    if metric == "cosine":
        unit = embeddings / ops.maximum(
            ops.norm(embeddings, axis=1, keepdims=True), 1e-12
        )
        cosine = ops.clip(ops.matmul(unit, ops.transpose(unit)), -1.0, 1.0)
        distances = 1.0 - cosine
    else:
        # Centring reduces the cancellation of the Gram expansion.
        centred = embeddings - ops.mean(embeddings, axis=0, keepdims=True)
        sq_norms = ops.sum(ops.square(centred), axis=1)
        sq = (
            sq_norms[:, None]
            + sq_norms[None, :]
            - 2.0 * ops.matmul(centred, ops.transpose(centred))
        )
        distances = ops.sqrt(ops.maximum(sq, 0.0))
    return ops.where(ops.eye(batch, dtype="bool"), 0.0, distances)


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


# === Empirical KL divergence (eq. 4) ===


def _kth_neighbour_sq_distances(queries, points, k, exclude_self):
    """Squared Euclidean distance from each query to its k-th neighbour.

    The neighbour is selected on a gradient-free Gram-expansion matrix (the
    diagonal masked with +inf when `exclude_self`), then the distance to it
    is recomputed exactly as |q - p|^2 so gradients reach the query and the
    selected point. Returns [Q]; needs k <= number of candidates (callers
    mask the other case).
    """
    q = ops.stop_gradient(queries)
    p = ops.stop_gradient(points)
    centre = ops.mean(p, axis=0, keepdims=True)
    q = q - centre
    p = p - centre
    sq = (
        ops.sum(ops.square(q), axis=1)[:, None]
        + ops.sum(ops.square(p), axis=1)[None, :]
        - 2.0 * ops.matmul(q, ops.transpose(p))
    )
    if exclude_self:
        sq = ops.where(ops.eye(ops.shape(q)[0], dtype="bool"), np.inf, sq)
    num_points = tf.shape(points)[0]
    rank = tf.maximum(tf.minimum(k, num_points), 1)
    _, index = tf.math.top_k(-sq, k=rank)
    nearest = ops.take(points, index[:, rank - 1], axis=0)
    return ops.sum(ops.square(queries - nearest), axis=1)


def empirical_kl_per_example(codes, target_sample, k=1, min_distance=1e-6):
    """Per-example terms of eq. 4: log nu_k(z_b) - log rho_k(z_b).

    nu_k(z_b) is the Euclidean distance from code z_b to its k-th nearest
    neighbour in `target_sample`, rho_k(z_b) to its k-th nearest neighbour
    among the other codes of the batch (self excluded by masking the
    diagonal with +inf; duplicates of z_b at other rows do count).
    Neighbours are searched within this batch only (per replica under
    `tf.distribute`).

    Both distances are floored at `min_distance` before the log, so
    duplicated codes give a finite value (and a zero gradient for that
    distance) instead of -log 0.

    The neighbour is selected on float32 Gram-expansion distances without
    gradient, then its distance is recomputed exactly as |z_b - z'| (the
    gradient reaches z_b and, for rho, the neighbour code). Candidates whose
    squared distances differ by less than the float32 rounding of the
    expansion (~1e-6 for codes in [0, 1]^64) may be selected either way.
    Memory is O(B m) (no [B, m, d] tensor).

    The mean of these terms is `shrewd_tf.estimators.knn_kl_divergence`
    without the factor d and the constant:
    D = d * mean(terms) + log(m / (B - 1)).

    If the batch has k or fewer codes (no k-th other code) or the target
    sample fewer than k points, the estimate is undefined and the terms are
    0 (the batch contributes nothing).

    Args:
        codes: float tensor [B, d]; computed in float32.
        target_sample: float tensor [m, d], samples of the target
            distribution; no gradient flows into it.
        k: neighbour rank, >= 1.
        min_distance: distance floor, > 0.

    Returns:
        float32 tensor [B].

    Raises:
        ValueError: on bad shapes or parameters.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
    if not (min_distance > 0 and math.isfinite(min_distance)):
        raise ValueError(
            "`min_distance` must be a finite number > 0. "
            f"Received: min_distance={min_distance}"
        )
    k = int(k)
    codes = _check_codes(codes)
    target_sample = ops.stop_gradient(
        _check_codes(target_sample, "target_sample")
    )
    if None not in (codes.shape[1], target_sample.shape[1]) and (
        codes.shape[1] != target_sample.shape[1]
    ):
        raise ValueError(
            "`codes` and `target_sample` must have the same number of bits. "
            f"Received: codes.shape={codes.shape}, "
            f"target_sample.shape={target_sample.shape}"
        )
    floor = float(min_distance) ** 2
    nu_sq = _kth_neighbour_sq_distances(codes, target_sample, k, False)
    rho_sq = _kth_neighbour_sq_distances(codes, codes, k, True)
    # log of a distance = half the log of its square.
    terms = 0.5 * (
        ops.log(ops.maximum(nu_sq, floor)) - ops.log(ops.maximum(rho_sq, floor))
    )
    defined = ops.logical_and(
        ops.shape(codes)[0] > k, ops.shape(target_sample)[0] >= k
    )
    return ops.where(defined, terms, 0.0)


def empirical_kl_loss(codes, target_sample, k=1, min_distance=1e-6):
    """L_KL of eq. 4: mean_b [log nu_k(z_b; target) - log rho_k(z_b; codes)].

    See `empirical_kl_per_example` for the conventions.

    Args:
        codes: float tensor [B, d].
        target_sample: float tensor [m, d].
        k: neighbour rank, >= 1 (paper: 1).
        min_distance: distance floor, > 0.

    Returns:
        float32 scalar.
    """
    return ops.mean(
        empirical_kl_per_example(codes, target_sample, k, min_distance)
    )


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


# === Keras losses ===


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
        alpha: Beta parameter, > 0 (0.1: balanced and near-binary).
        noise_std: noise of the "bernoulli_noise" target, >= 0.
        min_distance: distance floor before the log, > 0.
        seed: int or None, initial seed of the target sampler.
        cross_replica: search neighbours (among codes and target samples)
            over the global batch, all-gathered across replicas.
        name: loss name.
        **kwargs: `reduction` etc., passed to `keras.losses.Loss`.

    Raises:
        ValueError: on invalid k, target, alpha, noise_std or min_distance.
    """

    def __init__(
        self,
        k=1,
        target="beta",
        alpha=0.1,
        noise_std=0.05,
        min_distance=1e-6,
        seed=None,
        cross_replica=False,
        name="empirical_kl",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"`k` must be a positive integer. Received: k={k!r}"
            )
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
        self.seed_generator = keras.random.SeedGenerator(seed)

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
        targets = self.sample_target(ops.shape(codes))
        rows = None
        if self.cross_replica:
            (codes, targets), rows = gather_across_replicas(codes, targets)
        values = empirical_kl_per_example(
            codes, targets, self.k, self.min_distance
        )
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
        }

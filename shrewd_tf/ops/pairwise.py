"""Pairwise distances within a batch for the similarity-matching loss.

* `pairwise_manhattan_distances(codes)`: all-pairs L1 distances between
  continuous codes [B, d] -> [B, B], with a custom gradient. Between binary
  codes (z in {0, 1}^d) it is their Hamming distance.
* `pairwise_target_distances(embeddings, metric)`: cosine or Euclidean
  target distances between embeddings [B, E] -> [B, B], without gradient.

Everything is computed in float32 whatever the input dtype.

Memory: a naive pairwise L1 matrix goes through a [B, B, d] tensor (4 GiB in
float32 at B = 4096, d = 64, and as much again for its gradient).
`pairwise_manhattan_distances` instead accumulates bit by bit into a
[B, B] buffer (in tiles of rows) and has a custom gradient that loops the
same way.
This part uses TensorFlow directly (`tf.custom_gradient`, `tf.foldl`,
`tf.map_fn`): the package targets the TensorFlow backend. It compiles under
XLA, which Keras' default `jit_compile="auto"` turns on for `fit` on GPU
machines.
"""

import tensorflow as tf
from keras import ops

# Rows per tile of the pairwise L1 loops: a [128, 4096] float32 block is
# 2 MiB, small enough to stay in cache while it accumulates over the bits.
_TILE_ROWS = 128

TARGET_METRICS = ("cosine", "euclidean")


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

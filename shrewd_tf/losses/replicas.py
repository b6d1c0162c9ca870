"""Pairs and neighbours across replicas: the all-gather behind
`cross_replica=True`.

Both SHREWD losses couple the examples of a batch. By default pairs and
neighbours are formed within the batch of ONE replica (nothing crosses
devices; the optimised objective is then the mean over replicas of the
per-replica losses). With `cross_replica=True` the Keras losses all-gather
codes and targets across replicas first (`gather_across_replicas`), so pairs
and neighbours span the global batch and the objective is exactly eq. 2 /
eq. 4 on the global batch (gradients flow back through the all-gather); each
replica then keeps its own examples' values (`local_rows`).
"""

import numpy as np
import tensorflow as tf


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


def local_rows(values, rows):
    """This replica's rows of per-example `values` computed on the gathered
    batch (`rows` from `gather_across_replicas`; None: all of them)."""
    return values if rows is None else tf.gather(values, rows)

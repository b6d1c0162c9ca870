"""Small numeric helpers the loss and model tests share."""

import numpy as np
import tensorflow as tf


def all_finite(*tensors):
    """Whether every value of every tensor is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(t)))) for t in tensors)


def value_and_grad(fn, codes, *args):
    """`fn(codes, *args)` and its gradient with respect to `codes`."""
    codes = tf.constant(codes, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(codes)
        value = fn(codes, *args)
    return value, tape.gradient(value, codes)


def random_normal_images(shape, n=4, seed=0):
    """`n` float32 images of `shape` drawn from N(0, 1)."""
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("f4")

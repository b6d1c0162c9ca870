"""Tests for shrewd_tf.training.distribution: strategies and precision."""

import keras
import pytest
import tensorflow as tf

from shrewd_tf.training import distribution


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_make_strategy_names():
    assert distribution.make_strategy("default").num_replicas_in_sync == 1
    # No GPU here: "auto" is the default strategy.
    assert distribution.make_strategy("auto").num_replicas_in_sync == 1
    mirrored = distribution.make_strategy("virtual_cpus:2")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2
    with pytest.raises(ValueError, match="bogus"):
        distribution.make_strategy("bogus")


def test_virtual_cpus_cannot_change_after_init():
    with pytest.raises(RuntimeError, match="count=3"):
        distribution.configure_virtual_cpus(3)


def test_precision_policy(float32_policy):
    assert distribution.set_precision_policy("auto") == "float32"  # no GPU
    assert distribution.set_precision_policy("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="fp8"):
        distribution.set_precision_policy("fp8")

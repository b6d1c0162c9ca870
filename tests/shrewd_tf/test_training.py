import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf import config as config_lib
from shrewd_tf import training


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_make_strategy_names():
    assert training.make_strategy("default").num_replicas_in_sync == 1
    # No GPU here: "auto" is the default strategy.
    assert training.make_strategy("auto").num_replicas_in_sync == 1
    mirrored = training.make_strategy("virtual_cpus:2")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2
    with pytest.raises(ValueError, match="bogus"):
        training.make_strategy("bogus")


def test_virtual_cpus_cannot_change_after_init():
    with pytest.raises(RuntimeError, match="count=3"):
        training.configure_virtual_cpus(3)


def test_precision_policy(float32_policy):
    assert training.set_precision_policy("auto") == "float32"  # no GPU
    assert training.set_precision_policy("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="fp8"):
        training.set_precision_policy("fp8")


@pytest.mark.parametrize(
    "losses, expected",
    [
        # With L_sim: eq. 1 as written (lambda = 0.01); a detached head
        # (CLASS off) is still trained with weight 1.
        ("SIM-KL-CLASS", {"code": 1.0, "code_kl": 0.01, "logits": 0.01}),
        ("SIM-KL", {"code": 1.0, "code_kl": 0.01, "logits": 1.0}),
        ("SIM", {"code": 1.0, "logits": 1.0}),
        # Without L_sim: rescaled so the largest weight is 1.
        ("KL-CLASS", {"code_kl": 1.0, "logits": 1.0}),
        ("CLASS", {"logits": 1.0}),
        ("SIM-KL-REG", {"code": 1.0, "code_kl": 0.01, "embedding": 0.01}),
    ],
)
def test_loss_weights_follow_eq_1(losses, expected):
    cfg = config_lib.LossConfig(losses=losses)
    assert training.loss_weights(cfg) == pytest.approx(expected)
    assert set(training.make_losses(cfg, np.ones((2, 2)) - np.eye(2))) == set(
        expected
    )


def test_optimizers_follow_the_paper():
    adam = training.make_optimizer(config_lib.TrainConfig())
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(5e-4)
    sgd_cfg = config_lib.TrainConfig(
        optimizer="sgd", learning_rate=0.05, lr_decay_epochs=100
    )
    sgd = training.make_optimizer(sgd_cfg, num_replicas=4, steps_per_epoch=10)
    assert sgd.nesterov
    # 0.05 x replicas, decayed by 0.1 every 100 epochs (1000 steps).
    sched = sgd._learning_rate
    assert float(sched(0)) == pytest.approx(0.2)
    assert float(sched(999)) == pytest.approx(0.2)
    assert float(sched(1000)) == pytest.approx(0.02)
    assert float(sched(2500)) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="rmsprop"):
        training.make_optimizer(config_lib.TrainConfig(optimizer="rmsprop"))

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf import config as config_lib
from shrewd_tf import losses as losses_lib
from shrewd_tf.training import distribution
from shrewd_tf.training import objective as training


@pytest.mark.parametrize(
    "losses, expected",
    [
        # With L_sim: eq. 1 as written (lambda = 0.01); a detached head
        # (CLASS off) is still trained with weight 1.
        ("SIM-KL-CLASS", {"code": 1.0, "code_kl": 0.01, "logits": 0.01}),
        ("SIM-KL", {"code": 1.0, "code_kl": 0.01, "logits": 1.0}),
        ("SIM", {"code": 1.0, "logits": 1.0}),
        # Without L_sim: eq. 1 as written too (lambda1, lambda2), not
        # rescaled, so ablation rows weigh each term alike.
        ("KL-CLASS", {"code_kl": 0.01, "logits": 0.01}),
        ("CLASS", {"logits": 0.01}),
        # Labelled caption data: the detached head still learns (accuracy).
        (
            "SIM-KL-REG",
            {"code": 1.0, "code_kl": 0.01, "embedding": 0.01, "logits": 1.0},
        ),
        ("REG", {"embedding": 0.01, "logits": 1.0}),
    ],
)
def test_loss_weights_follow_eq_1(losses, expected):
    cfg = config_lib.LossConfig(losses=losses)
    assert training.loss_weights(cfg) == pytest.approx(expected)
    assert set(training.make_losses(cfg, np.ones((2, 2)) - np.eye(2))) == set(
        expected
    )


def test_loss_weights_are_the_configured_lambdas_without_sim():
    cfg = config_lib.LossConfig(
        losses="KL-CLASS", kl_weight=0.03, class_weight=0.2
    )
    assert training.loss_weights(cfg) == {"code_kl": 0.03, "logits": 0.2}
    cfg = config_lib.LossConfig(losses="CLASS", class_weight=0.2)
    assert training.loss_weights(cfg) == {"logits": 0.2}


@pytest.mark.parametrize(
    "losses, expected",
    [
        ("SIM-KL-REG", {"code": 1.0, "code_kl": 0.01, "embedding": 0.01}),
        ("SIM-KL", {"code": 1.0, "code_kl": 0.01}),
        ("REG", {"embedding": 0.01}),
    ],
)
def test_unlabelled_data_has_no_classification_loss(losses, expected):
    cfg = config_lib.LossConfig(losses=losses)
    assert training.loss_weights(cfg, labelled=False) == pytest.approx(expected)
    made = training.make_losses(cfg, None, labelled=False)
    assert set(made) == set(expected)
    if "code" in made:  # caption targets: cosine distances of embeddings
        assert made["code"].class_distances is None
        assert made["code"].target_metric == "cosine"


@pytest.mark.parametrize("losses", ["CLASS", "SIM-KL-CLASS", "KL-CLASS"])
def test_class_losses_need_labels(losses):
    cfg = config_lib.LossConfig(losses=losses)
    with pytest.raises(ValueError, match=f"losses='{losses}'"):
        training.loss_weights(cfg, labelled=False)


def test_target_sources():
    outputs = ["code", "logits", "embedding", "code_kl"]
    assert training.target_sources(outputs, True, True) == {
        "code": "embeddings", "logits": "labels", "embedding": "embeddings",
        "code_kl": "labels",
    }
    # Class distances for the code, captions for the regression head.
    assert training.target_sources(outputs, False, True)["code"] == "labels"
    assert training.target_sources(
        ["code", "embedding", "code_kl"], True, False
    ) == {"code": "embeddings", "embedding": "embeddings", "code_kl": "embeddings"}
    with pytest.raises(ValueError, match="unlabelled"):
        training.target_sources(["code", "logits"], True, False)
    with pytest.raises(ValueError, match="unlabelled"):
        training.target_sources(["code"], False, False)


def test_targets_for_picks_each_outputs_target():
    labels = tf.constant([1, 2], tf.int64)
    embeddings = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    images = tf.zeros((2, 3))
    same = training.targets_for(["code", "logits"])
    _, targets = same(images, labels)
    assert targets["code"] is labels and targets["logits"] is labels
    sources = {"code": "embeddings", "logits": "labels", "code_kl": "labels"}
    pick = training.targets_for(["code", "logits", "code_kl"], sources)
    _, targets = pick(images, {"labels": labels, "embeddings": embeddings})
    assert targets["code"] is embeddings
    assert targets["logits"] is labels and targets["code_kl"] is labels
    with pytest.raises(ValueError, match="embedding"):
        training.targets_for(["code", "embedding"], {"code": "labels"})


def test_compile_without_logits_for_unlabelled_data():
    from shrewd_tf.models import shrewd_model as models

    cfg = config_lib.ExperimentConfig().with_overrides(
        {"loss.losses": "SIM-KL-REG", "model.code_bits": 8}
    )
    model = models.build_shrewd_model(
        "cifar_resnet", (8, 8, 1), None, code_bits=8, regression_dim=4,
        encoder_kwargs={"depth": 8, "base_filters": 2},
    )
    train_model = training.compile_shrewd_model(
        model, cfg, None, labelled=False
    )
    assert sorted(train_model.output) == ["code", "code_kl", "embedding"]
    # A labelled run needs the logits head the model lacks.
    with pytest.raises(ValueError, match="logits"):
        training.compile_shrewd_model(model, cfg, None, labelled=True)


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


# === One device vs MirroredStrategy over two virtual CPUs ===

_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(16, 5)).astype("float32")
_LABELS = _RNG.integers(0, 4, 16)
_W = _RNG.normal(size=(5, 6)).astype("float32") * 0.5
_TARGETS = _RNG.random((16, 6)).astype("float32")
_DISTANCES = np.array(
    [[0, 0.2, 0.8, 0.8], [0.2, 0, 0.8, 0.8], [0.8, 0.8, 0, 0.2], [0.8, 0.8, 0.2, 0]]
)


class _FixedTargetKL(losses_lib.EmpiricalKLLoss):
    """KL loss whose target sample is a fixed array, split by replica."""

    def sample_target(self, shape):
        context = tf.distribute.get_replica_context()
        targets = tf.constant(_TARGETS)
        rows = shape[0]
        if context is None or context.num_replicas_in_sync == 1:
            return targets[:rows]
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
        return targets[start : start + rows]


def _fit(strategy, loss_name, cross_replica, steps=3):
    """A linear code model (no batch norm) trained a few SGD steps."""
    with strategy.scope():
        inputs = keras.Input((5,))
        code = keras.layers.Dense(6, use_bias=False)(inputs)
        model = keras.Model(inputs, code)
        model.set_weights([_W])
        if loss_name == "sim":
            loss = losses_lib.SimilarityMatchingLoss(
                class_distances=_DISTANCES, cross_replica=cross_replica
            )
        else:
            loss = _FixedTargetKL(cross_replica=cross_replica)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    data = tf.data.Dataset.from_tensor_slices((_X, _LABELS)).batch(16).repeat()
    history = model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return model.get_weights()[0], history.history["loss"][0]


def _per_half(loss_name, weights):
    codes = _X @ weights
    if loss_name == "sim":
        targets = _DISTANCES[_LABELS][:, _LABELS]
        values = [
            losses_lib.similarity_matching_loss(codes[h], targets[h][:, h])
            for h in (slice(0, 8), slice(8, 16))
        ]
    else:
        values = [
            losses_lib.empirical_kl_loss(codes[h], _TARGETS[h])
            for h in (slice(0, 8), slice(8, 16))
        ]
    return float(np.mean(values))


@pytest.mark.parametrize("loss_name", ["sim", "kl"])
def test_cross_replica_mirrored_equals_one_device(loss_name):
    """cross_replica=True: pairs span the global batch, so two replicas
    take exactly the steps one device takes on the whole batch."""
    single, single_loss = _fit(tf.distribute.get_strategy(), loss_name, False)
    mirrored = distribution.make_strategy("virtual_cpus:2")
    gathered, gathered_loss = _fit(mirrored, loss_name, True)
    np.testing.assert_allclose(gathered, single, rtol=1e-4, atol=1e-5)
    assert gathered_loss == pytest.approx(single_loss, rel=1e-4)
    assert not np.allclose(gathered, _W)  # it did train


@pytest.mark.parametrize("loss_name", ["sim", "kl"])
def test_per_replica_mirrored_optimises_mean_of_replica_losses(loss_name):
    """cross_replica=False: each replica sees its own 8 examples; the loss
    is the mean of the two halves' losses, not the global one."""
    mirrored = distribution.make_strategy("virtual_cpus:2")
    _, first_loss = _fit(mirrored, loss_name, False, steps=1)
    assert first_loss == pytest.approx(_per_half(loss_name, _W), rel=1e-4)
    single, _ = _fit(tf.distribute.get_strategy(), loss_name, False)
    local, _ = _fit(mirrored, loss_name, False)
    assert not np.allclose(local, single, rtol=1e-4, atol=1e-5)


def test_recalibrate_batch_norm_averages_the_batch_statistics():
    """Moving stats become the exact mean of the batches' statistics."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(96, 3)) * [1.0, 2.0, 3.0] + [5.0, -1.0, 0.5]).astype(
        "float32"
    )
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(dense(inputs)))
    data = tf.data.Dataset.from_tensor_slices(x).batch(32)
    assert training.recalibrate_batch_norm(model, data, steps=3) == 1
    h = x @ np.ones((3, 2), np.float32)
    batches = h.reshape(3, 32, 2)
    np.testing.assert_allclose(bn.moving_mean, batches.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance, batches.var(1).mean(0), rtol=1e-4
    )
    assert bn.momentum == 0.99  # restored
    np.testing.assert_allclose(model.get_weights()[0], np.ones((3, 2)))


def test_kl_warmup_epochs_become_steps_on_the_optimizer_counter():
    from shrewd_tf.models import shrewd_model as models

    cfg = config_lib.ExperimentConfig().with_overrides(
        {"loss.losses": "SIM-KL", "model.code_bits": 8,
         "loss.kl_warmup_epochs": 1.5}
    )
    assert training.kl_warmup_steps(cfg.loss, 10) == 15
    assert training.kl_warmup_steps(
        config_lib.LossConfig(kl_warmup_epochs=0.01), 10) == 1
    assert training.kl_warmup_steps(config_lib.LossConfig(), 10) == 0
    with pytest.raises(ValueError, match="kl_warmup_epochs=-1"):
        training.kl_warmup_steps(config_lib.LossConfig(kl_warmup_epochs=-1), 10)
    model = models.build_shrewd_model(
        "cifar_resnet", (8, 8, 1), 3, code_bits=8,
        encoder_kwargs={"depth": 8, "base_filters": 2},
    )
    train_model = training.compile_shrewd_model(
        model, cfg, np.ones((3, 3)) - np.eye(3), steps_per_epoch=10
    )
    kl = train_model.loss["code_kl"]
    assert kl.warmup_steps == 15
    assert kl.step_counter is train_model.optimizer.iterations
    train_model.optimizer.iterations.assign(6)
    assert float(kl.warmup_factor()) == pytest.approx(0.4)

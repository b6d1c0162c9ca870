"""Tests for shrewd_tf.models.shrewd_model: heads, weight decay, precision,
serialisation, bounded code heads, the one-hot baseline."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.models import shrewd_model as models
from tests.support.tensors import random_normal_images as random_images

TINY = {"depth": 8, "base_filters": 4}  # n = 1 block per stage


@pytest.fixture
def mixed_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def tiny_model(**kwargs):
    arguments = {
        "encoder_name": "cifar_resnet",
        "input_shape": (8, 8, 3),
        "num_classes": 5,
        "code_bits": 16,
        "encoder_kwargs": TINY,
    }
    arguments.update(kwargs)
    return models.build_shrewd_model(**arguments)


# === Weight decay ===


def test_weight_decay_is_l2_on_every_kernel():
    model = tiny_model(weight_decay=1e-3, regression_dim=3)
    kernels = [
        v for v in model.trainable_weights if v.name == "kernel"
    ]
    assert len(kernels) == 7 + 3  # depth - 1 convs + code/logits/embedding
    expected = sum(1e-3 * np.sum(np.square(v.numpy())) for v in kernels)
    np.testing.assert_allclose(
        float(sum(model.losses)), expected, rtol=1e-5
    )


# === Heads ===


def test_output_names_shapes_dtypes():
    model = tiny_model(regression_dim=7)
    outputs = model(random_images((8, 8, 3)))
    assert set(outputs) == {"code", "logits", "embedding"}
    assert outputs["code"].shape == (4, 16)
    assert outputs["logits"].shape == (4, 5)
    assert outputs["embedding"].shape == (4, 7)
    for value in outputs.values():
        assert value.dtype == tf.float32


def test_no_classification_head():
    model = tiny_model(num_classes=None, regression_dim=4)
    assert set(model(random_images((8, 8, 3)))) == {"code", "embedding"}


def test_heads_are_linear_maps_of_the_code():
    model = tiny_model(regression_dim=3)
    outputs = model(random_images((8, 8, 3)))
    code = outputs["code"].numpy()
    for name in ("logits", "embedding"):
        kernel, bias = model.get_layer(name).get_weights()
        np.testing.assert_allclose(
            outputs[name].numpy(), code @ kernel + bias, rtol=1e-5, atol=1e-5
        )


def head_gradients(model, output_name):
    images = random_images((8, 8, 3), n=6)
    labels = np.arange(6) % 5
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        if output_name == "logits":
            loss = keras.losses.sparse_categorical_crossentropy(
                labels, outputs["logits"], from_logits=True
            )
        else:
            loss = tf.square(outputs[output_name])
        loss = tf.reduce_mean(loss)
    encoder_vars = model.encoder.trainable_variables
    head_vars = model.get_layer(output_name).trainable_variables
    code_vars = model.get_layer("code").trainable_variables
    grads = tape.gradient(loss, encoder_vars + code_vars + head_vars)
    n_enc, n_code = len(encoder_vars), len(code_vars)
    return grads[:n_enc], grads[n_enc : n_enc + n_code], grads[n_enc + n_code :]


def is_zero(grad):
    return grad is None or not np.any(keras.ops.convert_to_numpy(grad))


def test_detached_head_blocks_gradient_to_encoder():
    model = tiny_model(classification_head="detached")
    encoder_grads, code_grads, head_grads = head_gradients(model, "logits")
    assert encoder_grads and all(is_zero(g) for g in encoder_grads)
    assert all(is_zero(g) for g in code_grads)
    assert not any(is_zero(g) for g in head_grads)  # the head still learns


def test_attached_head_trains_encoder():
    model = tiny_model(classification_head="attached")
    encoder_grads, code_grads, head_grads = head_gradients(model, "logits")
    variables = model.encoder.trainable_variables
    kernels = [
        g for g, v in zip(encoder_grads, variables) if v.name == "kernel"
    ]
    assert kernels and not any(is_zero(g) for g in kernels)
    assert not any(is_zero(g) for g in code_grads + head_grads)


@pytest.mark.parametrize(
    "mode,blocked", [("attached", False), ("detached", True)]
)
def test_regression_head_mode(mode, blocked):
    model = tiny_model(num_classes=None, regression_dim=4, regression_head=mode)
    encoder_grads, _, head_grads = head_gradients(model, "embedding")
    assert all(is_zero(g) for g in encoder_grads) == blocked
    assert not any(is_zero(g) for g in head_grads)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"code_bits": 0}, "code_bits=0"),
        ({"code_bits": 8.0}, r"code_bits=8\.0"),
        ({"num_classes": -1}, "num_classes=-1"),
        ({"classification_head": "frozen"}, "classification_head='frozen'"),
        ({"regression_dim": 0}, "regression_dim=0"),
        ({"encoder_name": "vgg16"}, "encoder_name='vgg16'"),
        ({"encoder_kwargs": {"depth": 9}}, "depth=9"),
        ({"weight_decay": -1.0}, r"weight_decay=-1\.0"),
        ({"input_shape": (8, 8)}, r"input_shape=\(8, 8\)"),
        ({"encoder_name": "resnet20", "encoder_kwargs": {"depth": 8}}, "depth"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


# === Precision and serialisation ===


def test_mixed_float16_encoder_but_float32_heads(mixed_policy):
    model = tiny_model(regression_dim=3)
    features = model.encoder(random_images((8, 8, 3)))
    assert features.dtype == tf.float16
    conv = model.encoder.get_layer("stem_conv")
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    outputs = model(random_images((8, 8, 3)))
    for name in ("code", "logits", "embedding"):
        assert outputs[name].dtype == tf.float32, name
        assert model.get_layer(name).compute_dtype == "float32"


def randomise_weights(model, seed=0):
    """Moves every weight (BN statistics too) away from initialisation."""
    rng = np.random.default_rng(seed)
    model.set_weights([
        rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
        for w in model.get_weights()
    ])


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(regression_dim=3, weight_decay=1e-4)
    randomise_weights(model)
    images = random_images((8, 8, 3))
    expected = model(images, training=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, models.ShrewdModel)
    assert loaded.get_config() == model.get_config()
    got = loaded(images, training=False)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())
    # The detached head is restored as detached.
    assert any(isinstance(l, models.StopGradient) for l in loaded.layers)


# === Code head activations ===


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize(
    "activation, gain",
    [("sigmoid", 1.0), ("sigmoid", 5.0), ("tanh", 2.0),
     ("batchnorm_sigmoid", 5.0)],
)
def test_bounded_code_heads_match_numpy(activation, gain):
    model = tiny_model(code_activation=activation, code_gain=gain)
    randomise_weights(model)
    images = random_images((8, 8, 3), n=6)
    code = model(images, training=True)["code"].numpy()
    features = model.encoder(images, training=True).numpy()
    kernel, bias = model.get_layer("code_preactivation").get_weights()
    h = features @ kernel + bias
    if activation == "batchnorm_sigmoid":
        bn = model.get_layer("code_batch_norm")
        gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + bn.epsilon) * gamma + beta
    if activation == "tanh":
        want = 0.5 * (1.0 + np.tanh(gain * h))
    else:
        want = _sigmoid(gain * h)
    np.testing.assert_allclose(code, want, rtol=1e-4, atol=1e-5)
    assert np.all((code >= 0) & (code <= 1))
    # The classification head reads the bounded code.
    kernel, bias = model.get_layer("logits").get_weights()
    logits = model(images, training=True)["logits"].numpy()
    np.testing.assert_allclose(logits, code @ kernel + bias, rtol=1e-4,
                               atol=1e-4)


def test_bounded_code_head_round_trips(tmp_path):
    model = tiny_model(code_activation="batchnorm_sigmoid", code_gain=5.0)
    randomise_weights(model)
    images = random_images((8, 8, 3))
    expected = model(images, training=False)["code"].numpy()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded(images, training=False)["code"].numpy(), expected
    )


def test_code_head_arguments_are_checked():
    with pytest.raises(ValueError, match="code_activation.*Received"):
        tiny_model(code_activation="relu")
    with pytest.raises(ValueError, match="gain"):
        tiny_model(code_activation="sigmoid", code_gain=0.0)


# === One-hot baseline ===


def test_one_hot_baseline_is_exactly_one_hot(tmp_path):
    classifier = tiny_model(num_classes=6)
    randomise_weights(classifier, seed=2)
    baseline = models.build_one_hot_baseline(classifier)
    images = random_images((8, 8, 3), n=12)
    outputs = baseline(images, training=False)
    logits = classifier(images, training=False)["logits"].numpy()
    code = outputs["code"].numpy()
    assert code.dtype == np.float32 and code.shape == (12, 6)
    assert set(np.unique(code)) <= {0.0, 1.0}
    np.testing.assert_array_equal(code.sum(axis=1), np.ones(12))
    np.testing.assert_array_equal(code.argmax(axis=1), logits.argmax(axis=1))
    np.testing.assert_array_equal(outputs["logits"].numpy(), logits)
    path = tmp_path / "baseline.keras"
    baseline.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded(images)["code"].numpy(), code)


def test_one_hot_baseline_needs_logits():
    model = tiny_model(num_classes=None, regression_dim=2)
    with pytest.raises(ValueError, match="logits"):
        models.build_one_hot_baseline(model)

"""Tests for shrewd_tf.models.shrewd_model: encoders, heads, precision, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.models import shrewd_model as models

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


def random_images(shape, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("f4")


# === Architecture: independent counts and a NumPy forward pass ===


def expected_cifar_resnet_params(depth, base_filters, channels, stages=3):
    """Parameter count from the architecture's definition (no biases)."""
    n = (depth - 2) // (2 * stages)
    widths = [base_filters * 2**s for s in range(stages)]
    conv = 9 * channels * widths[0]  # stem
    bn_channels = widths[0]
    previous = widths[0]
    for width in widths:
        conv += 9 * previous * width + (2 * n - 1) * 9 * width * width
        bn_channels += 2 * n * width
        previous = width
    return conv + 4 * bn_channels  # BN: gamma, beta, moving mean/var


@pytest.mark.parametrize(
    "depth,base_filters,channels", [(8, 4, 1), (20, 16, 3), (14, 3, 2)]
)
def test_cifar_resnet_counts(depth, base_filters, channels):
    encoder = models.cifar_resnet((16, 16, channels), depth, base_filters)
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == depth - 1
    assert encoder.count_params() == expected_cifar_resnet_params(
        depth, base_filters, channels
    )
    assert encoder.output.shape == (None, 4 * base_filters)


def test_resnet110w_counts():
    encoder = models.resnet110w((32, 32, 3))
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 109  # 6 * 18 + 1: 110 weighted layers with the head
    expected = expected_cifar_resnet_params(110, 32, 3)
    assert encoder.count_params() == expected
    assert 6.8e6 < expected < 7.0e6  # 4x ResNet-110's 1.73 M
    assert encoder.output.shape == (None, 128)
    strided = [c.name for c in convs if c.strides == (2, 2)]
    assert strided == ["stage2_block1_conv1", "stage3_block1_conv1"]
    # Exactly 2 parameter-free projection shortcuts, no 1x1 convs.
    assert all(c.kernel_size == (3, 3) for c in convs)
    pads = [l for l in encoder.layers
            if isinstance(l, models.ChannelZeroPadding)]
    assert len(pads) == 2


def conv_same(x, kernel, stride):
    """TF "SAME" convolution by loops: pad total = max((o-1)s + k - i, 0),
    the smaller half before."""
    h, w, _ = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    padded = np.pad(
        x, [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
            (0, 0)]
    )
    out = np.zeros((out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, i * stride + k)
            cols = slice(j * stride, j * stride + k)
            patch = padded[rows, cols]
            out[i, j] = np.tensordot(patch, kernel, axes=3)
    return out


def reference_forward(encoder, image, depth=8, stages=3):
    """Post-activation ResNet (option A shortcuts) in NumPy, inference BN."""
    weights = {l.name: l.get_weights() for l in encoder.layers}

    def bn(x, name):
        gamma, beta, mean, var = weights[name]
        return (x - mean) / np.sqrt(var + 1e-3) * gamma + beta

    relu = lambda x: np.maximum(x, 0)
    x = relu(bn(conv_same(image, weights["stem_conv"][0], 1), "stem_bn"))
    n = (depth - 2) // (2 * stages)
    for s in range(stages):
        for b in range(n):
            name = f"stage{s + 1}_block{b + 1}"
            stride = 2 if s > 0 and b == 0 else 1
            kernel1 = weights[f"{name}_conv1"][0]
            y = relu(bn(conv_same(x, kernel1, stride), f"{name}_bn1"))
            y = bn(conv_same(y, weights[f"{name}_conv2"][0], 1), f"{name}_bn2")
            shortcut = x
            if stride == 2:  # 2x2 average pooling of an even-sized map
                h, w, c = x.shape
                shortcut = x.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))
            extra = kernel1.shape[-1] - x.shape[-1]
            shortcut = np.pad(
                shortcut, [(0, 0), (0, 0), (extra // 2, extra - extra // 2)]
            )
            x = relu(y + shortcut)
    return x.mean(axis=(0, 1))


def test_cifar_resnet_matches_numpy_reference():
    encoder = models.cifar_resnet((8, 8, 2), depth=8, base_filters=2)
    rng = np.random.default_rng(3)
    for layer in encoder.layers:  # non-trivial BN statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, c), rng.normal(size=c),
                rng.normal(size=c), rng.uniform(0.5, 2.0, c),
            ])
    images = random_images((8, 8, 2), n=2, seed=4)
    got = keras.ops.convert_to_numpy(encoder(images, training=False))
    expected = np.stack([reference_forward(encoder, im) for im in images])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(7, 7, 1), (28, 28, 1), (224, 224, 3)])
def test_cifar_resnet_any_input_size(shape):
    encoder = models.cifar_resnet(shape, depth=8, base_filters=2)
    out = encoder(random_images(shape, n=1))
    assert out.shape == (1, 8)


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


# === ResNet-50 ===


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_resnet50_random_weights_small_inputs(shape):
    encoder = models.resnet50(shape, weight_decay=1e-4)
    out = encoder(random_images(shape, n=2))
    assert out.shape == (2, 2048)
    resized = [
        l for l in encoder.layers if isinstance(l, keras.layers.Resizing)
    ]
    assert len(resized) == (1 if shape[0] < 32 else 0)
    backbone = encoder.get_layer("resnet50")
    convs = [l for l in backbone.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 53  # 1 stem + 16 blocks x 3 + 4 projection shortcuts
    assert len(encoder.losses) == 53  # one L2 term per conv kernel


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

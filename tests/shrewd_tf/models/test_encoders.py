"""Tests for shrewd_tf.models.encoders: independent parameter counts, a
NumPy forward pass, any input size, ResNet-50 with random weights."""

import keras
import numpy as np
import pytest

from shrewd_tf.models import encoders
from tests.support.tensors import random_normal_images as random_images


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
    encoder = encoders.cifar_resnet((16, 16, channels), depth, base_filters)
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == depth - 1
    assert encoder.count_params() == expected_cifar_resnet_params(
        depth, base_filters, channels
    )
    assert encoder.output.shape == (None, 4 * base_filters)


def test_resnet110w_counts():
    encoder = encoders.resnet110w((32, 32, 3))
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
            if isinstance(l, encoders.ChannelZeroPadding)]
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
    encoder = encoders.cifar_resnet((8, 8, 2), depth=8, base_filters=2)
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
    encoder = encoders.cifar_resnet(shape, depth=8, base_filters=2)
    out = encoder(random_images(shape, n=1))
    assert out.shape == (1, 8)


# === ResNet-50 ===


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_resnet50_random_weights_small_inputs(shape):
    encoder = encoders.resnet50(shape, weight_decay=1e-4)
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

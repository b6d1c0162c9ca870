"""Image encoders: standardised float images [B, H, W, C] -> pooled
features [B, F].

* `cifar_resnet(depth, base_filters)`: the CIFAR ResNet of He et al. (2016,
  Sec. 4.2) as used by Barz & Denzler (2019): depth = 6n + 2, three stages
  of n post-activation basic blocks with base_filters x (1, 2, 4) filters,
  parameter-free shortcuts (2x2 average pooling + channel zero padding,
  "option A", `ChannelZeroPadding`), global average pooling. `resnet110w`
  (n = 18, 32/64/128 filters) is the CIFAR-100 encoder of the SHREWD
  paper; `resnet20` (n = 3, 16/32/64) is the same code, small enough for
  CPU runs.
* `resnet50`: `keras.applications.ResNet50` with random weights (weights are
  never downloaded); inputs smaller than 32x32 are upsampled inside the
  model.

`build_encoder(name, ...)` builds one by name (`ENCODER_NAMES`).
"""

import keras
from keras import ops

ENCODER_NAMES = ("resnet110w", "resnet20", "resnet50", "cifar_resnet")
DEFAULT_CIFAR_WEIGHT_DECAY = 2e-4
DEFAULT_RESNET50_WEIGHT_DECAY = 5e-5
RESNET50_MIN_SIZE = 32
# PyTorch's default (momentum=0.1 there), which the paper trained with.
# Keras' 0.99 lags weights that move fast early in training, and models
# evaluated after a few epochs then classify far worse at inference than in
# training; `trainer` also recalibrates the statistics after fit.
BATCH_NORM_MOMENTUM = 0.9


# === Layers ===


@keras.saving.register_keras_serializable(package="shrewd_tf")
class ChannelZeroPadding(keras.layers.Layer):
    """Zero-pads the last (channel) axis: [..., C] -> [..., C + before + after].

    The parameter-free "option A" shortcut of He et al. uses it to match the
    channels of a downsampling residual block.

    Args:
        pad_before: int >= 0, zero channels put before the input channels.
        pad_after: int >= 0, zero channels put after them.
    """

    def __init__(self, pad_before, pad_after, **kwargs):
        super().__init__(**kwargs)
        if min(pad_before, pad_after) < 0:
            raise ValueError(
                "Channel padding must be >= 0. Received: "
                f"pad_before={pad_before}, pad_after={pad_after}"
            )
        self.pad_before = pad_before
        self.pad_after = pad_after

    def call(self, inputs):
        rank = len(inputs.shape)
        paddings = [[0, 0]] * (rank - 1) + [[self.pad_before, self.pad_after]]
        return ops.pad(inputs, paddings)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        if channels is not None:
            channels += self.pad_before + self.pad_after
        return (*input_shape[:-1], channels)

    def get_config(self):
        return {
            **super().get_config(),
            "pad_before": self.pad_before,
            "pad_after": self.pad_after,
        }


# === Encoders ===


def l2_regularizer(weight_decay):
    """L2 penalty `weight_decay * sum(w**2)`, or None for 0 / None."""
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _validate_image_shape(input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] is None or shape[-1] < 1:
        raise ValueError(
            "input_shape must be (height, width, channels) with a known "
            f"channel count. Received: input_shape={input_shape}"
        )
    if any(s is not None and s < 1 for s in shape[:2]):
        raise ValueError(
            "input_shape must have positive height and width. "
            f"Received: input_shape={input_shape}"
        )
    return shape


def _basic_block(x, filters, stride, weight_decay, name):
    """Post-activation basic block: relu(bn(conv(relu(bn(conv(x))))) + s(x))."""
    in_filters = x.shape[-1]
    shortcut = x
    if stride > 1:
        # padding="same" keeps the shortcut's size equal to the strided
        # conv's (ceil(H / stride)) for odd feature maps too.
        shortcut = keras.layers.AveragePooling2D(
            stride, strides=stride, padding="same", name=f"{name}_pool"
        )(shortcut)
    if filters > in_filters:
        extra = filters - in_filters
        shortcut = ChannelZeroPadding(
            extra // 2, extra - extra // 2, name=f"{name}_pad"
        )(shortcut)
    elif filters < in_filters:
        raise ValueError(
            "Blocks cannot reduce channels. Received: "
            f"filters={filters} for {in_filters} input channels"
        )
    for i, conv_stride in ((1, stride), (2, 1)):
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=conv_stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=l2_regularizer(weight_decay),
            name=f"{name}_conv{i}",
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn{i}"
        )(x)
        if i == 1:
            x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def cifar_resnet(
    input_shape,
    depth=110,
    base_filters=16,
    num_stages=3,
    weight_decay=DEFAULT_CIFAR_WEIGHT_DECAY,
    name=None,
):
    """CIFAR ResNet encoder (He et al. 2016, Sec. 4.2; Barz & Denzler 2019).

    Layout: 3x3 stem conv (base_filters) + BN + ReLU, then `num_stages`
    stages of n = (depth - 2) / (2 * num_stages) basic blocks with
    base_filters * 2**s filters; the first block of every stage after the
    first has stride 2. Shortcuts have no parameters: 2x2 average pooling
    (stride 2) and zero channel padding where the shape changes. Convs have
    no bias (each is followed by BN); kernels use He-normal initialisation
    and an L2 penalty `weight_decay * sum(w**2)`.

    Counts (num_stages=3): depth - 1 conv layers; conv weights
    9 * (C * f + (2n - 1) * f**2 + sum_{s=1,2} [(f_s/2) * f_s
    + (2n - 1) * f_s**2]) with f = base_filters, f_s = f * 2**s, plus
    4 BN values per conv output channel. ResNet-110 (f=16): 1.73 M
    parameters; ResNet-110w (f=32): 6.91 M.

    Args:
        input_shape: (H, W, C); any H, W >= 1 (None allowed).
        depth: int, 2 * num_stages * n + 2 (110 for n = 18 with 3 stages).
        base_filters: int, filters of the first stage (16; 32 = "wide").
        num_stages: int >= 1.
        weight_decay: float >= 0, L2 coefficient on conv kernels.
        name: model name; default `f"cifar_resnet{depth}"`.

    Returns:
        keras.Model: images [B, H, W, C] -> features
        [B, base_filters * 2**(num_stages - 1)] (compute dtype of the
        global policy).

    Raises:
        ValueError: depth not of the form 2 * num_stages * n + 2, or other
            invalid arguments.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
        Barz & Denzler, "Hierarchy-based Image Embeddings for Semantic Image
        Retrieval", WACV 2019.
    """
    input_shape = _validate_image_shape(input_shape)
    if not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(
            f"num_stages must be a positive int. Received: "
            f"num_stages={num_stages}"
        )
    if (
        not isinstance(depth, int)
        or depth < 2 * num_stages + 2
        or (depth - 2) % (2 * num_stages)
    ):
        raise ValueError(
            f"depth must be 2 * num_stages * n + 2 with n >= 1 "
            f"({2 * num_stages}n + 2). Received: depth={depth}"
        )
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ValueError(
            f"base_filters must be a positive int. Received: "
            f"base_filters={base_filters}"
        )
    if weight_decay is None or weight_decay < 0:
        raise ValueError(
            f"weight_decay must be >= 0. Received: weight_decay={weight_decay}"
        )
    blocks_per_stage = (depth - 2) // (2 * num_stages)

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(
        base_filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=l2_regularizer(weight_decay),
        name="stem_conv",
    )(inputs)
    x = keras.layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM, name="stem_bn"
    )(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(num_stages):
        filters = base_filters * 2**stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x,
                filters,
                stride,
                weight_decay,
                name=f"stage{stage + 1}_block{block + 1}",
            )
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(
        inputs, features, name=name or f"cifar_resnet{depth}"
    )


def resnet110w(input_shape, weight_decay=DEFAULT_CIFAR_WEIGHT_DECAY):
    """ResNet-110w encoder: `cifar_resnet(depth=110, base_filters=32)`.

    The CIFAR-100 encoder of the SHREWD paper (from Barz & Denzler's
    "resnet-110-wfc": ResNet-110 with twice the channels, 32/64/128),
    6.91 M parameters, 128 pooled features.
    """
    return cifar_resnet(
        input_shape,
        depth=110,
        base_filters=32,
        weight_decay=weight_decay,
        name="resnet110w",
    )


def resnet20(input_shape, weight_decay=DEFAULT_CIFAR_WEIGHT_DECAY):
    """ResNet-20 encoder (n = 3, 16/32/64 filters, 64 features) for CPU runs."""
    return cifar_resnet(
        input_shape,
        depth=20,
        base_filters=16,
        weight_decay=weight_decay,
        name="resnet20",
    )


def resnet50(input_shape, weight_decay=DEFAULT_RESNET50_WEIGHT_DECAY):
    """ImageNet ResNet-50 encoder with random weights, 2048 pooled features.

    Wraps `keras.applications.ResNet50(weights=None, include_top=False,
    pooling="avg")`; weights are never downloaded. ResNet-50 needs at least
    32x32 inputs, so smaller heights/widths are bilinearly upsampled to 32
    inside the model (28x28 Fashion-MNIST -> 32x32). Any channel count works
    with random weights (1 = grayscale). The L2 penalty `weight_decay *
    sum(w**2)` is attached to every conv kernel (Keras applications take no
    regularizer argument); the default 5e-5 matches SGD weight decay 1e-4.

    Args:
        input_shape: (H, W, C) with known H and W.
        weight_decay: float >= 0.

    Returns:
        keras.Model: images [B, H, W, C] -> features [B, 2048].
    """
    input_shape = _validate_image_shape(input_shape)
    height, width, channels = input_shape
    if height is None or width is None:
        raise ValueError(
            "resnet50 needs a known input height and width. "
            f"Received: input_shape={input_shape}"
        )
    if weight_decay is None or weight_decay < 0:
        raise ValueError(
            f"weight_decay must be >= 0. Received: weight_decay={weight_decay}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    size = (max(height, RESNET50_MIN_SIZE), max(width, RESNET50_MIN_SIZE))
    if size != (height, width):
        x = keras.layers.Resizing(*size, name="upsample")(x)
    backbone = keras.applications.ResNet50(
        weights=None,
        include_top=False,
        pooling="avg",
        input_shape=(*size, channels),
    )
    if weight_decay:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.Conv2D):
                layer.kernel_regularizer = l2_regularizer(weight_decay)
                layer.kernel.regularizer = layer.kernel_regularizer
    features = backbone(x)
    return keras.Model(inputs, features, name="resnet50")


def build_encoder(name, input_shape, weight_decay=None, **encoder_kwargs):
    """Builds an encoder by name.

    Args:
        name: one of `ENCODER_NAMES`. `"cifar_resnet"` takes `depth`,
            `base_filters` and `num_stages` in `encoder_kwargs`.
        input_shape: (H, W, C).
        weight_decay: None for the encoder's default (2e-4 CIFAR ResNets,
            5e-5 ResNet-50) or a float >= 0.
        **encoder_kwargs: extra arguments of `cifar_resnet`.

    Returns:
        keras.Model: images [B, H, W, C] -> features [B, F].

    Raises:
        ValueError: unknown name or arguments.
    """
    builders = {
        "resnet110w": resnet110w,
        "resnet20": resnet20,
        "resnet50": resnet50,
        "cifar_resnet": cifar_resnet,
    }
    if name not in builders:
        raise ValueError(
            f"encoder_name must be one of {ENCODER_NAMES}. "
            f"Received: encoder_name={name!r}"
        )
    allowed = {"depth", "base_filters", "num_stages"}
    if name != "cifar_resnet":
        allowed = set()
    unknown = set(encoder_kwargs) - allowed
    if unknown:
        raise ValueError(
            f"Encoder {name!r} takes no arguments {sorted(unknown)}. "
            f"Received: encoder_kwargs={encoder_kwargs}"
        )
    if weight_decay is not None:
        encoder_kwargs["weight_decay"] = weight_decay
    return builders[name](input_shape, **encoder_kwargs)

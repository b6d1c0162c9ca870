"""The SHREWD model: an encoder with the hash-code, classification and
regression heads, and the paper's trivial one-hot baseline.

`ShrewdModel` puts the heads on an encoder (`shrewd_tf.models.encoders`)
and returns a dict of named float32 outputs: `code` (the continuous hash
code, shaped by `shrewd_tf.models.code_head`), `logits` (the
classification head) and optionally `embedding` (a regression head).
"""

import keras
from keras import ops

from shrewd_tf import contract
from shrewd_tf.models.code_head import CODE_ACTIVATIONS  # noqa: F401 (re-export)
from shrewd_tf.models.code_head import CodeSquash  # noqa: F401 (re-export)
from shrewd_tf.models.code_head import code_head_activation
from shrewd_tf.models.encoders import BATCH_NORM_MOMENTUM
from shrewd_tf.models.encoders import DEFAULT_CIFAR_WEIGHT_DECAY
from shrewd_tf.models.encoders import DEFAULT_RESNET50_WEIGHT_DECAY
from shrewd_tf.models.encoders import build_encoder
from shrewd_tf.models.encoders import l2_regularizer
from shrewd_tf.ops.validation import check_positive_int

HEAD_MODES = ("detached", "attached")


# === Layers ===


@keras.saving.register_keras_serializable(package="shrewd_tf")
class StopGradient(keras.layers.Layer):
    """Identity in the forward pass, zero gradient in the backward pass.

    Keeps the input dtype (no autocasting), so a float32 code stays float32
    under a mixed policy.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False

    def call(self, inputs):
        return ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="shrewd_tf")
class OneHotArgmax(keras.layers.Layer):
    """One-hot of the argmax: logits [B, K] -> float32 [B, K] of 0/1.

    Ties go to the lowest index (`ops.argmax`). Not differentiable; used by
    the trivial one-hot baseline only.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        num_classes = inputs.shape[-1]
        return ops.one_hot(
            ops.argmax(inputs, axis=-1), num_classes, dtype="float32"
        )

    def compute_output_shape(self, input_shape):
        return input_shape


# === Functional Model ===


@keras.saving.register_keras_serializable(package="shrewd_tf")
class ShrewdModel(keras.Model):
    """Encoder + linear hash-code head + classification/regression heads.

    Outputs (a dict, all float32 even under a `mixed_float16` policy):

    * `"code"` [B, code_bits]: Dense on the pooled features, then the
      `code_activation` (`code_head_activation`); the continuous codes
      z-hat, binarised at 0.5 after training.
    * `"logits"` [B, num_classes] (if `num_classes`): Dense on the code. In
      `"detached"` mode it sees `stop_gradient(code)`: the classification
      loss trains only this head (the paper's detached head, so accuracy is
      always reported; the loss must still include cross-entropy on
      `logits`, with any weight, for the head to learn). In `"attached"`
      mode the cross-entropy also trains the encoder (the CLASS loss on).
    * `"embedding"` [B, regression_dim] (if `regression_dim`): Dense on the
      code, regressing caption/target embeddings (the REG loss); attached
      by default, so the regression loss trains the encoder.

    Inputs are standardised float images [B, H, W, C]
    (`datasets.make_image_dataset`).

    Args:
        encoder_name: one of `ENCODER_NAMES`.
        image_shape: (H, W, C).
        num_classes: int >= 1, or None for no classification head.
        code_bits: int >= 1, hash code length.
        classification_head: `"detached"` or `"attached"`.
        regression_dim: None or int >= 1.
        regression_head: `"attached"` or `"detached"`.
        weight_decay: None (encoder default) or float >= 0: L2 on every
            conv/dense kernel, heads included.
        encoder_kwargs: dict of extra `cifar_resnet` arguments (`depth`,
            `base_filters`, `num_stages`) for `encoder_name="cifar_resnet"`.
        code_activation: one of `CODE_ACTIVATIONS` ("linear": the paper's
            unbounded head; saved models without this key load as linear).
        code_gain: fixed gain of the bounded code heads (1: plain sigmoid).

    Raises:
        ValueError: invalid arguments (the message quotes the value).
    """

    def __init__(
        self,
        encoder_name,
        image_shape,
        num_classes,
        code_bits=64,
        classification_head="detached",
        regression_dim=None,
        regression_head="attached",
        weight_decay=None,
        encoder_kwargs=None,
        code_activation="linear",
        code_gain=1.0,
        **kwargs,
    ):
        code_bits = check_positive_int("code_bits", code_bits)
        activation_layers = code_head_activation(
            code_activation, gain=code_gain, momentum=BATCH_NORM_MOMENTUM
        )
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
        if regression_dim is not None:
            regression_dim = check_positive_int(
                "regression_dim", regression_dim
            )
        for arg, mode in (
            ("classification_head", classification_head),
            ("regression_head", regression_head),
        ):
            if mode not in HEAD_MODES:
                raise ValueError(
                    f"{arg} must be one of {HEAD_MODES}. "
                    f"Received: {arg}={mode!r}"
                )
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(
                f"weight_decay must be >= 0. Received: weight_decay="
                f"{weight_decay}"
            )
        image_shape = tuple(image_shape)
        encoder_kwargs = dict(encoder_kwargs or {})

        # === Layers ===
        encoder = build_encoder(
            encoder_name, image_shape, weight_decay, **encoder_kwargs
        )
        if weight_decay is None:
            head_decay = (
                DEFAULT_RESNET50_WEIGHT_DECAY
                if encoder_name == "resnet50"
                else DEFAULT_CIFAR_WEIGHT_DECAY
            )
        else:
            head_decay = weight_decay

        def head(units, name):
            return keras.layers.Dense(
                units,
                kernel_regularizer=l2_regularizer(head_decay),
                dtype="float32",
                name=name,
            )

        # === Functional Model ===
        inputs = keras.Input(shape=image_shape, name="image")
        features = encoder(inputs)
        if activation_layers:
            code = head(code_bits, "code_preactivation")(features)
            for layer in activation_layers:
                code = layer(code)
        else:
            code = head(code_bits, contract.CODE_OUTPUT)(features)
        outputs = {contract.CODE_OUTPUT: code}
        if num_classes is not None:
            head_input = code
            if classification_head == "detached":
                head_input = StopGradient(name="detach_logits")(code)
            outputs[contract.LOGITS_OUTPUT] = head(
                num_classes, contract.LOGITS_OUTPUT
            )(head_input)
        if regression_dim is not None:
            head_input = code
            if regression_head == "detached":
                head_input = StopGradient(name="detach_embedding")(code)
            outputs[contract.EMBEDDING_OUTPUT] = head(
                regression_dim, contract.EMBEDDING_OUTPUT
            )(head_input)
        kwargs.setdefault("name", "shrewd")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.encoder_name = encoder_name
        self.image_shape = image_shape
        self.num_classes = num_classes
        self.code_bits = code_bits
        self.classification_head = classification_head
        self.regression_dim = regression_dim
        self.regression_head = regression_head
        self.weight_decay = weight_decay
        self.encoder_kwargs = encoder_kwargs
        self.code_activation = code_activation
        self.code_gain = code_gain
        self.encoder = encoder

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder_name": self.encoder_name,
            "image_shape": self.image_shape,
            "num_classes": self.num_classes,
            "code_bits": self.code_bits,
            "classification_head": self.classification_head,
            "regression_dim": self.regression_dim,
            "regression_head": self.regression_head,
            "weight_decay": self.weight_decay,
            "encoder_kwargs": self.encoder_kwargs,
            "code_activation": self.code_activation,
            "code_gain": self.code_gain,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_shrewd_model(
    encoder_name,
    input_shape,
    num_classes,
    code_bits=64,
    classification_head="detached",
    regression_dim=None,
    regression_head="attached",
    weight_decay=None,
    encoder_kwargs=None,
    name="shrewd",
    code_activation="linear",
    code_gain=1.0,
):
    """Builds a `ShrewdModel` (see its docstring for outputs and modes).

    Set the precision policy (e.g. `keras.mixed_precision.set_global_policy(
    "mixed_float16")`) BEFORE calling this: the encoder computes in the
    policy's dtype while the heads stay float32.

    Args:
        encoder_name: `"resnet110w"`, `"resnet20"`, `"resnet50"` or
            `"cifar_resnet"` (with `encoder_kwargs`).
        input_shape: (H, W, C) of the standardised input images.
        num_classes: int, or None for a model without `logits`.
        code_bits: hash code length (64 in the paper).
        classification_head: `"detached"` (CLASS loss off) or `"attached"`.
        regression_dim: None, or the target embedding size for `embedding`.
        regression_head: `"attached"` (REG loss trains the encoder) or
            `"detached"`.
        weight_decay: None (encoder default) or float >= 0.
        encoder_kwargs: dict for `"cifar_resnet"`, e.g.
            `{"depth": 8, "base_filters": 4}`.
        name: model name.
        code_activation, code_gain: see `code_head_activation`.

    Returns:
        ShrewdModel with outputs {"code", ["logits"], ["embedding"]}.

    Example:
        >>> model = build_shrewd_model("resnet20", (32, 32, 3), 100)
        >>> outputs = model(images)  # {"code": [B, 64], "logits": [B, 100]}
    """
    return ShrewdModel(
        encoder_name=encoder_name,
        image_shape=input_shape,
        num_classes=num_classes,
        code_bits=code_bits,
        classification_head=classification_head,
        regression_dim=regression_dim,
        regression_head=regression_head,
        weight_decay=weight_decay,
        encoder_kwargs=encoder_kwargs,
        name=name,
        code_activation=code_activation,
        code_gain=code_gain,
    )


def build_one_hot_baseline(classifier_model, name="one_hot_baseline"):
    """The paper's trivial baseline: the "code" is the predicted class.

    Args:
        classifier_model: a keras.Model whose output is the logits
            [B, K] or a dict with a `"logits"` entry (e.g. a ShrewdModel).
        name: model name.

    Returns:
        keras.Model with outputs `{"code": one_hot(argmax(logits)) float32
        [B, K], "logits": float32 [B, K]}` (K-bit codes with exactly one 1).

    Raises:
        ValueError: `classifier_model` has no `"logits"` output.
    """
    inputs = keras.Input(
        shape=classifier_model.inputs[0].shape[1:], name="image"
    )
    outputs = classifier_model(inputs)
    if isinstance(outputs, dict):
        if contract.LOGITS_OUTPUT not in outputs:
            raise ValueError(
                "classifier_model must output logits or a dict with "
                f"{contract.LOGITS_OUTPUT!r}. Received outputs: "
                f"{sorted(outputs)}"
            )
        outputs = outputs[contract.LOGITS_OUTPUT]
    logits = keras.layers.Activation(
        "linear", dtype="float32", name=contract.LOGITS_OUTPUT
    )(outputs)
    code = OneHotArgmax(name=contract.CODE_OUTPUT)(logits)
    return keras.Model(
        inputs,
        {contract.CODE_OUTPUT: code, contract.LOGITS_OUTPUT: logits},
        name=name,
    )

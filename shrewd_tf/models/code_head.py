"""The code head's range: how pre-activations h become the code z.

`code_head_activation(name, gain)` returns the layers that follow the code
head's Dense: none for the paper's linear head, or a `CodeSquash`
(sigmoid(gain h) or (1 + tanh(gain h)) / 2), optionally after a batch norm.
docs/kl_binarisation.md explains why the default is bounded.
"""

import keras
from keras import ops

from shrewd_tf import contract

# "linear" is the paper's head.
CODE_ACTIVATIONS = ("linear", "sigmoid", "tanh", "batchnorm_sigmoid")


@keras.saving.register_keras_serializable(package="shrewd_tf")
class CodeSquash(keras.layers.Layer):
    """Maps code pre-activations into (0, 1) with a fixed gain.

    `kind="sigmoid"`: sigmoid(gain x); `kind="tanh"`: (1 + tanh(gain x)) / 2
    (= sigmoid(2 gain x)). A gain > 1 makes a standardised pre-activation
    land near 0 or 1 unless it is close to 0.
    """

    def __init__(self, kind="sigmoid", gain=1.0, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("sigmoid", "tanh"):
            raise ValueError(
                f"kind must be 'sigmoid' or 'tanh'. Received: kind={kind!r}"
            )
        if not gain > 0:
            raise ValueError(f"gain must be > 0. Received: gain={gain!r}")
        self.kind = kind
        self.gain = float(gain)

    def call(self, inputs):
        if self.kind == "tanh":
            return 0.5 * (1.0 + ops.tanh(self.gain * inputs))
        return ops.sigmoid(self.gain * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "gain": self.gain}


def code_head_activation(
    name, code_name=contract.CODE_OUTPUT, gain=1.0, momentum=0.9
):
    """The layers that turn code pre-activations h into the code z.

    * "linear": z = h, unbounded (the paper's head).
    * "sigmoid": z = sigmoid(gain h), in (0, 1).
    * "tanh": z = (1 + tanh(gain h)) / 2 = sigmoid(2 gain h), in (0, 1): a
      rescaled tanh, twice as steep.
    * "batchnorm_sigmoid": z = sigmoid(gain BatchNorm(h)): each bit's
      pre-activation is standardised over the batch (so bits start
      balanced), with a learned scale and shift.

    Why bounded: in 64 dimensions with batch-sized samples, the kNN KL
    estimate of eq. 4 only sees the codes' second moments and keeps
    falling as an unbounded code spreads out; on (0, 1) the same estimate
    is lowest for balanced binary codes (docs/kl_binarisation.md).

    Args:
        name: one of `CODE_ACTIVATIONS`.
        code_name: name of the last layer (the model's "code" output).
        gain: fixed factor on the pre-activation of the bounded heads.
        momentum: the batch norm's moving-average momentum.

    Returns:
        list of float32 keras layers to apply in order (empty: identity).
    """
    if name not in CODE_ACTIVATIONS:
        raise ValueError(
            f"code_activation must be one of {CODE_ACTIVATIONS}. "
            f"Received: code_activation={name!r}"
        )
    if name == "linear":
        return []
    layers = []
    if name == "batchnorm_sigmoid":
        layers.append(
            keras.layers.BatchNormalization(
                momentum=momentum,
                dtype="float32",
                name=f"{code_name}_batch_norm",
            )
        )
    kind = "tanh" if name == "tanh" else "sigmoid"
    layers.append(
        CodeSquash(kind, gain, dtype="float32", name=code_name)
    )
    return layers

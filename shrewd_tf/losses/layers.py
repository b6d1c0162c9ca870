"""The SHREWD losses as Keras loss layers, for objectives kept inside a
functional model.

`SimilarityMatchingLayer` (eq. 2) and `EmpiricalKLLayer` (eq. 4) take the
codes (and, for eq. 2, the targets), call `self.add_loss(weight * value)`
and return the codes unchanged, so a model can be compiled with
`loss=None` (or only a cross-entropy on other outputs):

```python
codes = SimilarityMatchingLayer(class_distances=distances)(codes, labels)
codes = EmpiricalKLLayer(weight=0.01)(codes)
```

Each layer holds an instance of the matching `Loss` class
(`shrewd_tf.losses.similarity`, `shrewd_tf.losses.kl`), built from the
layer's keyword arguments (everything that class's constructor names:
`gamma`, `cross_replica`, `alpha`, `seed`, ...), so options added to the
`Loss` classes reach the layers without editing them.
The added value is the batch mean of that loss's per-example values, i.e.
exactly the `Loss` object's value with Keras' default
"sum_over_batch_size" reduction on one device, times `weight` (the lambda
of eq. 1). It is computed in float32 under any mixed-precision policy; the
returned codes keep their dtype (the layers do not autocast their inputs).

Distribution (Keras 3, TensorFlow backend): the layers add the UNSCALED
per-replica mean. In `fit`, Keras' TensorFlow trainer sums each tensor of
`model.losses` and multiplies it by 1 / num_replicas
(`TensorFlowTrainer._aggregate_additional_loss`, which calls
`keras.losses.loss.scale_loss_for_distribution`), exactly the scaling a
`Loss` object applies to its own reduced value, and the replicas' gradients
are summed. So under `tf.distribute` the optimised objective is the same as
with the `Loss` classes: by default pairs (eq. 2) and neighbours (eq. 4)
are formed within each replica's batch and the objective is the mean over
replicas of the per-replica losses; with `cross_replica=True` codes and
targets are all-gathered first and the objective is eq. 2 / eq. 4 on the
global batch (replicas need equal local batches). The logged "loss" is
unscaled again by Keras. A custom training loop that reads `model.losses`
under a strategy must apply the 1 / num_replicas itself (as for
regularisation losses, `tf.nn.scale_regularization_loss`). (Checked
against Keras 3.15.)

MirroredStrategy runs each replica's step in its own thread, and Keras 3
keeps a layer's added losses in one list shared by the threads; after a
cross-replica sync point in the forward pass (the all-gather of
`cross_replica=True`) one replica would also read the other's loss. These
layers therefore keep their added losses per thread: `layer.losses` and
`model.losses` show the losses of the calls made in the reading thread.
"""

import inspect
import threading

import keras
from keras import ops
from keras.src.backend import in_stateless_scope

from shrewd_tf.losses.kl import EmpiricalKLLoss
from shrewd_tf.losses.similarity import SimilarityMatchingLoss

# Constructor parameters of a `Loss` class that stay with the layer: the
# layer has its own name and dtype policy and always takes the batch mean.
_NOT_LOSS_ARGS = ("self", "name", "reduction", "dtype")


def _loss_arg_names(loss_class):
    """Keyword arguments that `loss_class`'s own constructor names."""
    return tuple(
        name
        for name, parameter in inspect.signature(
            loss_class.__init__
        ).parameters.items()
        if name not in _NOT_LOSS_ARGS
        and parameter.kind
        in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    )


class _LossLayer(keras.layers.Layer):
    """Identity layer that adds `weight * mean(loss.call(targets, codes))`.

    Subclasses set `loss_class`. Keyword arguments named by
    `loss_class.__init__` build `self.loss`; the others (name, dtype,
    trainable) go to `keras.layers.Layer`.
    """

    loss_class = None

    def __init__(self, weight=1.0, **kwargs):
        loss_args = _loss_arg_names(self.loss_class)
        loss_kwargs = {k: kwargs.pop(k) for k in loss_args if k in kwargs}
        if "autocast" in kwargs:
            raise ValueError(
                f"{type(self).__name__} never autocasts its inputs (the "
                "codes pass through with their dtype). Received: autocast="
                f"{kwargs['autocast']!r}"
            )
        super().__init__(autocast=False, **kwargs)
        weight = float(weight)
        if not weight >= 0:
            raise ValueError(
                f"`weight` must be a number >= 0. Received: weight={weight}"
            )
        self.weight = weight
        self.loss = self.loss_class(**loss_kwargs)
        # Track the loss's random state (EmpiricalKLLoss.seed_generator) as
        # this layer's, like keras.layers.Dropout's.
        self._loss_seed_generators = [
            value
            for value in vars(self.loss).values()
            if isinstance(value, keras.random.SeedGenerator)
        ]
        self._thread_losses = threading.local()
        self.built = True

    # --- add_loss per replica thread ---
    # Keras keeps a layer's added losses in ONE list, which the model clears
    # when it is called. MirroredStrategy traces the replicas in threads that
    # take turns at each cross-replica sync point (the all-gather of
    # `cross_replica=True`, a synchronised batch norm): replica 1 then clears
    # the list after replica 0 added to it, and reads replica 0's loss with
    # its own, so its logged loss (not its gradient: tapes are per thread)
    # would count replica 0's twice. These layers keep their added losses per
    # thread instead; within a stateless scope Keras' own handling applies.

    def _own_thread_losses(self):
        local = self._thread_losses
        if not hasattr(local, "losses"):
            local.losses = []
        return local.losses

    def add_loss(self, loss):
        super().add_loss(loss)
        if not in_stateless_scope():
            self._own_thread_losses().extend(keras.tree.flatten(loss))

    def _get_own_losses(self):
        if in_stateless_scope():
            return super()._get_own_losses()
        return list(self._own_thread_losses())

    def _clear_losses(self):
        super()._clear_losses()
        self._own_thread_losses().clear()

    def _loss_value(self, targets, codes):
        """float32 scalar: weight x the Loss object's value on one device.

        Inputs are converted as `keras.losses.Loss.__call__` converts them
        (to the loss's float32 dtype), then reduced by the mean, without
        the 1 / num_replicas that `Loss.__call__` applies: Keras applies it
        to `add_loss` values (see the module docstring).
        """
        dtype = self.loss.dtype
        codes = ops.convert_to_tensor(codes, dtype=dtype)
        if targets is not None:
            targets = ops.convert_to_tensor(targets, dtype=dtype)
        values = self.loss.call(targets, codes)
        return ops.multiply(ops.mean(values), ops.cast(self.weight, dtype))

    def compute_output_spec(self, codes, *args, **kwargs):
        if isinstance(codes, (list, tuple)):
            codes = codes[0]
        return keras.KerasTensor(codes.shape, dtype=codes.dtype)

    def get_config(self):
        loss_config = self.loss.get_config()
        base_keys = keras.losses.Loss.get_config(self.loss)
        return {
            **super().get_config(),
            "weight": self.weight,
            **{k: v for k, v in loss_config.items() if k not in base_keys},
        }


@keras.saving.register_keras_serializable(package="shrewd_tf")
class SimilarityMatchingLayer(_LossLayer):
    """Eq. 2 as a loss layer: adds `weight * L_sim`, returns the codes.

    Call it as `layer(codes, targets)` or `layer([codes, targets])`:

    * codes: float [B, d], the continuous codes (any float dtype);
    * targets: integer labels [B] or [B, 1] with `class_distances`, or float
      embeddings [B, E] without (pairwise `target_metric` distances).

    The added loss is the mean of
    `SimilarityMatchingLoss.call(targets, codes)`, i.e. exactly
    `SimilarityMatchingLoss(...)(targets, codes)` times `weight`, in
    float32; the output is `codes` itself. Pairs are formed within each
    replica's batch under `tf.distribute`, or across replicas with
    `cross_replica=True`; in `fit` the objective matches the `Loss` class
    on any number of replicas (module docstring).

    Args:
        weight: multiplier of the added loss (lambda of eq. 1), >= 0.
        **kwargs: the arguments of
            `shrewd_tf.losses.similarity.SimilarityMatchingLoss`
            (`gamma`, `rho`, `class_distances`, `target_metric`,
            `cross_replica`, ...) and of `keras.layers.Layer` (`name`,
            `dtype`, `trainable`).

    Example:
        ```python
        codes = SimilarityMatchingLayer(class_distances=[[0, 1], [1, 0]])(
            codes, labels
        )
        ```
    """

    loss_class = SimilarityMatchingLoss

    def call(self, codes, targets=None):
        if targets is None:
            if not isinstance(codes, (list, tuple)) or len(codes) != 2:
                raise ValueError(
                    "SimilarityMatchingLayer needs targets: call it as "
                    "layer(codes, targets) or layer([codes, targets])."
                )
            codes, targets = codes
        self.add_loss(self._loss_value(targets, codes))
        return codes


@keras.saving.register_keras_serializable(package="shrewd_tf")
class EmpiricalKLLayer(_LossLayer):
    """Eq. 4 as a loss layer: adds `weight * L_KL`, returns the codes.

    Call it as `layer(codes)` with float codes [B, d]. Like
    `EmpiricalKLLoss`, each call draws a fresh target sample of the codes'
    shape (seeded by the loss's `SeedGenerator`, tracked as this layer's
    and folded with the replica id under `tf.distribute`). The added loss
    is the mean of `EmpiricalKLLoss.call(None, codes)`, i.e. exactly
    `EmpiricalKLLoss(...)(None, codes)` times `weight`, in float32; the
    output is `codes` itself. Neighbours are searched within each replica's
    batch, or across replicas with `cross_replica=True` (module docstring
    for the scaling in `fit`).

    Args:
        weight: multiplier of the added loss (lambda of eq. 1), >= 0.
        **kwargs: the arguments of `shrewd_tf.losses.kl.EmpiricalKLLoss`
            (`k`, `target`, `alpha`, `noise_std`, `min_distance`, `seed`,
            `cross_replica`, ...) and of `keras.layers.Layer`.
    """

    loss_class = EmpiricalKLLoss

    def call(self, codes):
        self.add_loss(self._loss_value(None, codes))
        return codes

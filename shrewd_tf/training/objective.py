"""The optimiser, eq. 1 and the SHREWD compile step.

Call `compile_shrewd_model` inside `strategy.scope()`, after the precision
policy is set (`shrewd_tf.training.distribution` has the devices, the
strategy and the policy, and the order they go in).

The end-to-end `train(config)` lives in `shrewd_tf.training.trainer`.
"""


import keras
import tensorflow as tf

from shrewd_tf import losses as losses_lib
from shrewd_tf.contract import CODE_OUTPUT
from shrewd_tf.contract import EMBEDDING_OUTPUT
from shrewd_tf.contract import KL_OUTPUT
from shrewd_tf.contract import LOGITS_OUTPUT

# === Optimiser ===


def make_optimizer(train_config, num_replicas=1, steps_per_epoch=1):
    """The paper's optimisers.

    "adam": Adam at `learning_rate` with decoupled weight decay (the CIFAR
    setting: 5e-4, 1e-4). "sgd": SGD with Nesterov momentum at
    `learning_rate * num_replicas` (the ImageNet setting: 0.05 per GPU).
    Either decays the rate by `lr_decay_factor` every `lr_decay_epochs`.
    """
    rate = train_config.learning_rate
    if train_config.optimizer == "sgd":
        rate = rate * num_replicas
    if train_config.lr_decay_epochs:
        step = train_config.lr_decay_epochs * steps_per_epoch
        # Keras keeps values[i] while step <= boundaries[i]: the decayed
        # rate starts at the first step of epoch lr_decay_epochs.
        boundaries = [step * i - 1 for i in range(1, 20)]
        values = [rate * train_config.lr_decay_factor**i for i in range(20)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, values
        )
    decay = train_config.weight_decay or None
    if train_config.optimizer == "adam":
        if decay:
            return keras.optimizers.AdamW(learning_rate=rate, weight_decay=decay)
        return keras.optimizers.Adam(learning_rate=rate)
    if train_config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=rate,
            momentum=train_config.momentum,
            nesterov=True,
            weight_decay=decay,
        )
    raise ValueError(
        "Unknown optimizer; expected adam or sgd. "
        f"Received: optimizer={train_config.optimizer!r}"
    )


# === Losses of eq. 1 ===


def loss_weights(loss_config, labelled=True):
    """Weights of the active terms of eq. 1, by model output.

    Eq. 1 literally, L = L_sim + lambda1 L_KL + lambda2 L_cls, for every
    loss set: sim 1, KL lambda1 (`kl_weight`), CLASS/REG lambda2
    (`class_weight`), and a term that is off is simply absent. So KL-CLASS
    trains with lambda1 and lambda2, CLASS with lambda2, and REG with
    lambda2: the ablation rows differ only in the terms they drop, with the
    same weight per term and the same balance against the model's L2 and
    the optimiser's weight decay. (Earlier versions rescaled the weights
    without L_sim so the largest was 1; that made KL-CLASS and CLASS
    effectively 100x less regularised than eq. 1 and is gone.) With
    labelled data and CLASS off, the detached classification head is still
    trained, with weight 1 (REG sets included): its gradient stops at the
    code, so it changes no code and only gives the accuracy. Unlabelled
    data has no classification head.

    Args:
        loss_config: `config.LossConfig`.
        labelled: whether the data has class labels.

    Raises:
        ValueError: CLASS in the loss set with `labelled=False`.
    """
    terms = loss_config.terms
    if "class" in terms and not labelled:
        raise ValueError(
            f"Loss set {loss_config.losses!r} includes CLASS, which needs "
            "class labels, but the data is unlabelled (label -1, no class "
            "names). Use a caption loss set: SIM, SIM-KL, SIM-KL-REG or REG. "
            f"Received: losses={loss_config.losses!r}"
        )
    raw = {}
    if "sim" in terms:
        raw[CODE_OUTPUT] = 1.0
    if "kl" in terms:
        raw[KL_OUTPUT] = loss_config.kl_weight
    if "class" in terms:
        raw[LOGITS_OUTPUT] = loss_config.class_weight
    if "reg" in terms:
        raw[EMBEDDING_OUTPUT] = loss_config.class_weight
    if "class" not in terms and labelled:
        raw[LOGITS_OUTPUT] = 1.0  # the detached head
    return raw


def make_losses(loss_config, class_distances=None, seed=None, labelled=True,
                steps_per_epoch=1):
    """Keras losses keyed by model output (see `loss_weights`).

    Args:
        loss_config: `config.LossConfig`.
        class_distances: [C, C] target distances for integer labels; None
            when the similarity targets are caption embeddings (cosine
            distance).
        seed: seed of the KL target sampler.
        labelled: whether the data has class labels (cross-entropy on
            `logits` only then).
        steps_per_epoch: converts `kl_warmup_epochs` into steps. With a
            warm-up, the KL loss needs `set_step_counter` (done by
            `compile_shrewd_model`).
    """
    terms = loss_config.terms
    weights = loss_weights(loss_config, labelled)
    losses = {}
    if "sim" in terms:
        losses[CODE_OUTPUT] = losses_lib.SimilarityMatchingLoss(
            gamma=loss_config.gamma,
            rho=loss_config.rho,
            class_distances=class_distances,
            target_metric="cosine",
            cross_replica=loss_config.cross_replica,
        )
    if "kl" in terms:
        losses[KL_OUTPUT] = losses_lib.EmpiricalKLLoss(
            k=loss_config.kl_k,
            target=loss_config.kl_target,
            alpha=loss_config.kl_alpha,
            seed=seed,
            cross_replica=loss_config.cross_replica,
            block_bits=loss_config.kl_block_bits,
            scale=loss_config.kl_scale,
            target_multiple=loss_config.kl_target_multiple,
            warmup_steps=kl_warmup_steps(loss_config, steps_per_epoch),
        )
    if "reg" in terms:
        losses[EMBEDDING_OUTPUT] = keras.losses.CosineSimilarity(
            name="regression"
        )
    if LOGITS_OUTPUT in weights:
        losses[LOGITS_OUTPUT] = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, name="cross_entropy"
        )
    return losses


def kl_warmup_steps(loss_config, steps_per_epoch):
    """`kl_warmup_epochs` in optimiser steps (rounded, >= 1 when on).

    Raises:
        ValueError: a negative or non-finite `kl_warmup_epochs`.
    """
    epochs = loss_config.kl_warmup_epochs
    if not (isinstance(epochs, (int, float)) and 0 <= epochs < float("inf")):
        raise ValueError(
            "`loss.kl_warmup_epochs` must be a finite number >= 0 (0: no "
            f"warm-up). Received: kl_warmup_epochs={epochs!r}"
        )
    if epochs == 0:
        return 0
    return max(1, int(round(epochs * steps_per_epoch)))


def with_kl_output(model):
    """Wraps `model` so its code is also output as `code_kl`.

    Keras attaches one loss per output; the similarity and KL losses both
    act on the code, so the training model exposes it twice.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = dict(model(inputs))
    outputs[KL_OUTPUT] = keras.layers.Identity(name=KL_OUTPUT)(
        outputs[CODE_OUTPUT]
    )
    return _TrainingModel(inputs, outputs, name=f"{model.name}_training")


class _TrainingModel(keras.Model):
    """The functional training model, buildable under multi-worker fit.

    Before its first step, Keras' TF `fit` builds the model symbolically
    from one batch, and when that batch is distributed it first calls
    `strategy.reduce("MEAN", batch)` on the whole (images, {output:
    target}) nest. `Strategy.reduce` takes one value, not a nest: under
    MultiWorkerMirroredStrategy with more than one worker the nest goes to
    the collective ops as is and fit dies with "Attempt to convert a value
    (PerReplica:{...}) ... to a Tensor" (issue 12). The build needs only
    shapes and dtypes, so this builds from this worker's first replica's
    part of the batch: no reduction and no collective.

    Then, with several workers, Keras averages each step's logs with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
    losses and metrics ("Invalid reduction dimension 0 for input with 0
    dimensions"); there the steps return each log as shape [1], which that
    reduction averages back to a scalar over the replicas.
    """

    def train_step(self, data):
        return self._reducible_logs(super().train_step(data))

    def test_step(self, data):
        return self._reducible_logs(super().test_step(data))

    def _reducible_logs(self, logs):
        strategy = self.distribute_strategy
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return logs
        extended = strategy.extended
        if not extended._in_multi_worker_mode():  # pylint: disable=W0212
            return logs
        return tf.nest.map_structure(
            lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        local = self._distribute_strategy.experimental_local_results
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: local(v)[0]
                if isinstance(v, tf.distribute.DistributedValues)
                else v,
                next(it),
            )
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)


def compile_shrewd_model(model, config, class_distances, num_replicas=1,
                         steps_per_epoch=1, labelled=True):
    """Builds the training model and compiles it with eq. 1.

    Call inside `strategy.scope()`. Returns the training model (the code
    output appears twice, see `with_kl_output`); `model` itself is what
    gets exported.

    Args:
        model: a ShrewdModel; it must have the outputs the losses need
            (`logits` when labelled, `embedding` for REG).
        config: `config.ExperimentConfig`.
        class_distances: [C, C], or None for caption-embedding targets.
        num_replicas, steps_per_epoch: for the optimiser's schedule.
        labelled: whether the data has class labels.

    Raises:
        ValueError: a loss for an output the model lacks.
    """
    train_model = with_kl_output(model)
    losses = make_losses(
        config.loss, class_distances, seed=config.train.seed,
        labelled=labelled, steps_per_epoch=steps_per_epoch,
    )
    missing = sorted(set(losses) - set(train_model.output))
    if missing:
        raise ValueError(
            f"Loss set {config.loss.losses!r} needs model outputs "
            f"{missing}. Received: outputs {sorted(train_model.output)}"
        )
    weights = loss_weights(config.loss, labelled)
    jit = config.train.jit_compile
    if isinstance(jit, str) and jit != "auto":
        jit = jit.lower() in ("1", "true", "yes")
    metrics = {}
    if LOGITS_OUTPUT in train_model.output:
        metrics[LOGITS_OUTPUT] = ["sparse_categorical_accuracy"]
    optimizer = make_optimizer(config.train, num_replicas, steps_per_epoch)
    if KL_OUTPUT in losses and losses[KL_OUTPUT].warmup_steps:
        losses[KL_OUTPUT].set_step_counter(optimizer.iterations)
    train_model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights={name: weights[name] for name in losses},
        metrics=metrics,
        jit_compile=jit,
    )
    return train_model


def target_sources(output_names, caption_targets, labelled):
    """Which target each output trains on: {output: "labels"|"embeddings"}.

    The code (similarity loss) gets caption embeddings when
    `caption_targets` (semantics="captions") and labels otherwise; the
    regression output `embedding` gets embeddings; `logits` gets labels;
    `code_kl` ignores its target and gets whichever exists.

    Raises:
        ValueError: an output that needs labels when `labelled` is False.
    """
    from shrewd_tf.data import pipelines as inputs  # pylint: disable=import-outside-toplevel

    labels, embeddings = inputs.LABEL_TARGETS, inputs.EMBEDDING_TARGETS
    sources = {}
    for name in output_names:
        if name == EMBEDDING_OUTPUT:
            sources[name] = embeddings
        elif name == KL_OUTPUT:
            sources[name] = labels if labelled else embeddings
        elif name == CODE_OUTPUT and caption_targets:
            sources[name] = embeddings
        else:
            sources[name] = labels
    needs_labels = sorted(n for n, s in sources.items() if s == labels)
    if needs_labels and not labelled:
        raise ValueError(
            f"Outputs {needs_labels} train on class labels, but the data is "
            "unlabelled. Received: caption_targets="
            f"{caption_targets}, outputs {list(output_names)}"
        )
    return sources


def targets_for(output_names, sources=None):
    """Maps (images, targets) batches to (images, {output: target}).

    Without `sources` every output gets the same targets (integer labels
    [B]; outputs without a loss ignore them). With `sources` (from
    `target_sources`), targets is a dict {"labels": int64 [B],
    "embeddings": float32 [B, E]} and each output gets its entry.
    """
    names = tuple(output_names)
    if sources is None:

        def split(images, labels):
            return images, {name: labels for name in names}

        return split
    missing = [name for name in names if name not in sources]
    if missing:
        raise ValueError(
            f"No target source for outputs {missing}. Received: "
            f"sources={sources}"
        )

    def pick(images, targets):
        return images, {name: targets[sources[name]] for name in names}

    return pick


# === Batch-norm statistics ===


def _sublayers(layer):
    for sub in getattr(layer, "layers", ()):
        yield sub
        yield from _sublayers(sub)


def recalibrate_batch_norm(model, dataset, steps=50):
    """Precise BN: sets moving statistics from the final weights.

    Runs `steps` batches of `dataset` ((images, ...) tuples) through the
    model in training mode, with each BatchNormalization's momentum set so
    that its moving mean/variance become the exact average of the batches'
    statistics (momentum t/(t+1) at batch t). Weights are not changed. The
    moving averages kept during training lag weights that change fast, which
    can cost much accuracy at inference after short runs.

    Returns:
        the number of batch-norm layers recalibrated.
    """
    layers = [
        layer
        for layer in _sublayers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for step, batch in enumerate(dataset.take(steps)):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = step / (step + 1.0)
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)

"""`train(config)`: one SHREWD training run with `model.fit`, end to end.

Writes under `config.train.output_dir`:

* `config.json` — the full ExperimentConfig of the run;
* `backup/` — `keras.callbacks.BackupAndRestore` state: a killed run
  started again with the same output_dir resumes at the last finished
  epoch (deleted when the run completes);
* `checkpoints/epoch-NNN.weights.h5` — weights after every epoch;
* `logs/` — TensorBoard; `history.csv` — per-epoch losses and retrieval
  metrics;
* `model.keras` — the trained ShrewdModel (codes + logits), its batch-norm
  statistics recalibrated on training batches (`recalibrate_batch_norm`),
  written atomically;
* `metrics.json` / `metrics.md` — the final evaluation on the test split.
"""

import dataclasses
import logging
import os
import sys
import tempfile
import time

import keras

from shrewd_tf import callbacks as callbacks_lib
from shrewd_tf import evaluation
from shrewd_tf import inputs
from shrewd_tf import models
from shrewd_tf import training

log = logging.getLogger(__name__)

# Training batches averaged into the batch-norm statistics after fit.
BATCH_NORM_RECALIBRATION_STEPS = 50


@dataclasses.dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        model: the trained ShrewdModel (outputs code, logits).
        history: per-epoch logs, {name: [values]}.
        metrics: final test-split metrics (see evaluation.retrieval_metrics)
            plus wall_seconds, precision and replicas.
        output_dir: where the artefacts are.
        test_outputs: {output: np.ndarray} on the test split.
    """

    model: keras.Model
    history: dict
    metrics: dict
    output_dir: str
    test_outputs: dict


def parse_encoder(name):
    """"cifar_resnet:<depth>[:<base_filters>]" -> ("cifar_resnet", kwargs)."""
    if not name.startswith("cifar_resnet:"):
        return name, {}
    parts = name.split(":")[1:]
    kwargs = {"depth": int(parts[0])}
    if len(parts) > 1:
        kwargs["base_filters"] = int(parts[1])
    return "cifar_resnet", kwargs


def build_model(config, num_classes, input_shape):
    """The ShrewdModel a config describes (build inside strategy.scope())."""
    encoder, encoder_kwargs = parse_encoder(config.model.encoder)
    attached = "class" in config.loss.terms
    return models.build_shrewd_model(
        encoder,
        input_shape,
        num_classes,
        code_bits=config.model.code_bits,
        classification_head="attached" if attached else "detached",
        regression_dim=config.model.regression_dim,
        weight_decay=config.model.weight_decay,
        encoder_kwargs=encoder_kwargs,
    )


def save_model_atomically(model, path):
    """Saves a .keras file via a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, suffix=".keras")
    os.close(handle)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def train(config, data=None, extra_callbacks=(), verbose="auto"):
    """Trains, saves and evaluates one configuration.

    Args:
        config: `config.ExperimentConfig`.
        data: optional pre-loaded `inputs.ExperimentData` (to share one load
            between runs); default: `inputs.load_experiment_data`.
        extra_callbacks: more Keras callbacks (after ours).
        verbose: Keras fit verbosity; "auto" is a progress bar on a terminal
            and one line per epoch otherwise (logs, CI).

    Returns:
        TrainResult.
    """
    train_cfg = config.train
    precision = training.set_precision_policy(train_cfg.precision)
    strategy = training.make_strategy(train_cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = train_cfg.per_replica_batch_size * replicas
    if data is None:
        data = inputs.load_experiment_data(config.data)
    steps = len(data.train_labels) // global_batch
    if train_cfg.steps_per_epoch:
        steps = min(steps, train_cfg.steps_per_epoch)
    if steps < 1:
        raise ValueError(
            f"The global batch ({global_batch}) is larger than the training "
            f"set ({len(data.train_labels)} images). Received: "
            f"per_replica_batch_size={train_cfg.per_replica_batch_size}"
        )
    out = train_cfg.output_dir
    os.makedirs(out, exist_ok=True)
    config.save_json(os.path.join(out, "config.json"))
    log.info(
        "training %s (%s) on %d images: %d replicas x %d = %d per step, "
        "%d steps/epoch, %d epochs, precision %s",
        config.name, config.loss.losses, len(data.train_labels), replicas,
        train_cfg.per_replica_batch_size, global_batch, steps,
        train_cfg.epochs, precision,
    )

    keras.utils.set_random_seed(train_cfg.seed)
    with strategy.scope():
        model = build_model(config, data.num_classes, data.input_shape)
        train_model = training.compile_shrewd_model(
            model, config, data.class_distances, replicas, steps
        )
    split = training.targets_for(list(train_model.output))
    train_ds = (
        data.train_dataset(global_batch, train_cfg.seed, config.data.augment)
        .repeat()
        .map(split)
    )
    similarity = 1.0 - data.class_distances
    count = min(config.data.validation_subset, len(data.test_labels))
    callbacks = [
        callbacks_lib.RetrievalEvaluation(
            data.eval_dataset(data.test_images[:count]),
            data.test_labels[:count],
            similarity,
            every=train_cfg.eval_every,
        ),
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, "checkpoints", "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        *extra_callbacks,
    ]
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    history = train_model.fit(
        train_ds,
        epochs=train_cfg.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles, seeded
    )
    wall = time.perf_counter() - start
    with strategy.scope():
        recalibrated = training.recalibrate_batch_norm(
            model,
            data.train_dataset(global_batch, train_cfg.seed, config.data.augment),
            steps=BATCH_NORM_RECALIBRATION_STEPS,
        )
    log.info("recalibrated %d batch-norm layers", recalibrated)
    save_model_atomically(model, os.path.join(out, "model.keras"))

    test_outputs = evaluation.predict_outputs(
        model, data.eval_dataset(data.test_images)
    )
    metrics = evaluation.retrieval_metrics(
        test_outputs["code"], data.test_labels, similarity,
        logits=test_outputs.get("logits"),
    )
    metrics.update(
        wall_seconds=wall,
        precision=precision,
        replicas=replicas,
        images_per_second=steps * global_batch * train_cfg.epochs / wall,
    )
    evaluation.write_metrics({config.name: metrics}, out)
    return TrainResult(
        model=model,
        history={k: list(map(float, v)) for k, v in history.history.items()},
        metrics=metrics,
        output_dir=out,
        test_outputs=test_outputs,
    )

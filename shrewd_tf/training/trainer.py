"""`train(config)`: one SHREWD training run with `model.fit`, end to end.

Writes under `config.train.output_dir` (the names are in
`shrewd_tf.contract`; "atomic" is `shrewd_tf.io`):

* `config.json` — the full ExperimentConfig of the run;
* `backup/` — `keras.callbacks.BackupAndRestore` state: a killed run
  started again with the same output_dir resumes at the last finished
  epoch (deleted when the run completes);
* `checkpoints/epoch-NNN.weights.h5` — weights after every epoch;
* `logs/` — TensorBoard; `history.csv` — per-epoch losses and retrieval
  metrics;
* `model.keras` — the trained ShrewdModel (code, and logits when labelled,
  embedding with REG), its batch-norm statistics recalibrated on training
  batches (`recalibrate_batch_norm`), written atomically;
* `preprocessing.json` — {"image_shape": [H, W, C], "mean": [C],
  "std": [C]} in uint8 pixel units: the model's input is (x - mean) / std
  of uint8 images x of that shape (read by the exporter); atomic;
* `metrics.json` / `metrics.md` — the final evaluation on the test split
  (class metrics when labelled, caption metrics when the records carry
  caption embeddings, see `evaluation.retrieval_metrics`).
"""

import dataclasses
import logging
import os
import sys
import time

import keras

from shrewd_tf import contract
from shrewd_tf import io as io_lib
from shrewd_tf.data import pipelines as inputs
from shrewd_tf.evaluation import evaluate as evaluation
from shrewd_tf.io import atomic_path
from shrewd_tf.io import write_json_atomically
from shrewd_tf.models import shrewd_model as models
from shrewd_tf.semantics import distances as semantics
from shrewd_tf.training import callbacks as callbacks_lib
from shrewd_tf.training import distribution
from shrewd_tf.training import objective as training

log = logging.getLogger(__name__)

# Training batches averaged into the batch-norm statistics after fit.
BATCH_NORM_RECALIBRATION_STEPS = 50
# Queries of the per-epoch caption Kendall tau (each against the whole
# validation subset).
VALIDATION_KENDALL_QUERIES = 250


@dataclasses.dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        model: the trained ShrewdModel (outputs code, [logits],
            [embedding]).
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


def build_model(config, num_classes, input_shape, embedding_dim=None):
    """The ShrewdModel a config describes (build inside strategy.scope()).

    Args:
        config: `config.ExperimentConfig`.
        num_classes: C, or None (unlabelled data) for no `logits` head.
        input_shape: (H, W, C).
        embedding_dim: the data's caption embedding size E, the width of
            the regression head when the loss set has REG and
            `model.regression_dim` is None.

    Raises:
        ValueError: REG without a width, or `model.regression_dim` that
            differs from E.
    """
    encoder, encoder_kwargs = parse_encoder(config.model.encoder)
    attached = "class" in config.loss.terms
    regression_dim = config.model.regression_dim
    if "reg" in config.loss.terms:
        if regression_dim is None:
            regression_dim = embedding_dim
        if regression_dim is None:
            raise ValueError(
                f"Loss set {config.loss.losses!r} regresses caption "
                "embeddings (REG), but the data has none. Received: "
                "embedding_dim=None, model.regression_dim=None"
            )
        if embedding_dim is not None and regression_dim != embedding_dim:
            raise ValueError(
                "model.regression_dim must equal the caption embedding size "
                f"({embedding_dim}) to regress the embeddings. Received: "
                f"regression_dim={regression_dim}"
            )
    return models.build_shrewd_model(
        encoder,
        input_shape,
        num_classes,
        code_bits=config.model.code_bits,
        classification_head="attached" if attached else "detached",
        regression_dim=regression_dim,
        weight_decay=config.model.weight_decay,
        encoder_kwargs=encoder_kwargs,
        code_activation=config.model.code_activation,
        code_gain=config.model.code_gain,
    )


def write_preprocessing(data, output_dir):
    """Writes `preprocessing.json`: image_shape [H, W, C], mean [C], std [C]
    (uint8 pixel units; the model's input is (x - mean) / std). Atomic.

    Returns:
        the path written.
    """
    payload = {
        "image_shape": [int(v) for v in data.input_shape],
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
    }
    path = os.path.join(output_dir, contract.PREPROCESSING_FILE)
    write_json_atomically(path, payload)
    return path


def check_losses_fit_data(loss_config, data):
    """Raises ValueError when the loss set needs what the data lacks.

    CLASS needs labels; REG needs caption embeddings; SIM needs class
    distances or (semantics="captions") caption embeddings.
    """
    terms, name = loss_config.terms, loss_config.losses
    if "class" in terms and not data.labelled:
        raise ValueError(
            f"Loss set {name!r} includes CLASS, which needs class labels, "
            "but the training data is unlabelled (label -1, no class "
            "names). Use a caption loss set: SIM, SIM-KL, SIM-KL-REG or REG. "
            f"Received: losses={name!r}"
        )
    if "reg" in terms and data.embedding_dim is None:
        raise ValueError(
            f"Loss set {name!r} includes REG, which regresses caption "
            "embeddings, but the data has none (dataset='tfrecords' written "
            f"with captions). Received: losses={name!r}"
        )
    no_targets = data.caption_targets and data.embedding_dim is None
    if "sim" in terms and no_targets:
        raise ValueError(
            f"Loss set {name!r} includes SIM, which needs class distances or "
            f"caption embeddings; the data has neither. Received: "
            f"losses={name!r}"
        )


class CaptionRetrievalEvaluation(keras.callbacks.Callback):
    """Per-epoch caption-supervised retrieval metrics on a validation set.

    Adds `val_mahp_caption_float`, `val_mahp_caption_binary`,
    `val_kendall_tau_float`, `val_kendall_tau_binary`,
    `val_binary_entropy_bits`, `val_binary_entropy`, `val_near_binary`,
    `val_bit_balance_deviation` (and `val_map_binary`, `val_accuracy_head`
    with labels) to the epoch logs; see `evaluation.retrieval_metrics`.
    Put it before the loggers.

    Args:
        dataset: batched standardised images, in the order of `embeddings`.
        embeddings: float [N, E] caption embeddings.
        labels: int [N] classes, or None (unlabelled).
        every: evaluate after every `every` epochs (and the last one).
        k: retrieval cut-off.
        kendall_queries: queries of the Kendall tau.
    """

    KEYS = (
        "mahp_caption_float", "mahp_caption_binary", "kendall_tau_float",
        "kendall_tau_binary", "binary_entropy_bits", "binary_entropy",
        "near_binary", "bit_balance_deviation", "map_binary", "accuracy",
    )

    def __init__(self, dataset, embeddings, labels=None, every=1, k=250,
                 kendall_queries=VALIDATION_KENDALL_QUERIES):
        super().__init__()
        self.dataset = dataset
        self.embeddings = embeddings
        self.labels = labels
        self.every = int(every)
        self.k = int(k)
        self.kendall_queries = kendall_queries

    def on_epoch_end(self, epoch, logs=None):
        last = self.params and epoch + 1 == self.params.get("epochs")
        if self.every <= 0 or ((epoch + 1) % self.every and not last):
            return
        outputs = evaluation.predict_outputs(self.model, self.dataset)
        values = evaluation.retrieval_metrics(
            outputs[contract.CODE_OUTPUT], self.labels, None, k=self.k,
            logits=outputs.get(contract.LOGITS_OUTPUT),
            embeddings=self.embeddings,
            kendall_queries=self.kendall_queries,
        )
        values = {key: values[key] for key in self.KEYS if key in values}
        if logs is not None:
            for key, value in values.items():
                name = f"val_{key}"
                if key == "accuracy":
                    name = "val_accuracy_head"
                logs[name] = value
        log.info(
            "epoch %d caption retrieval: %s", epoch + 1,
            ", ".join(f"{k}={v:.4f}" for k, v in values.items()),
        )


def _validation_callback(config, data):
    """Per-epoch retrieval metrics on the first `validation_subset` test
    images: class metrics with class distances, caption metrics otherwise."""
    count = min(config.data.validation_subset, len(data.test_labels))
    dataset = data.eval_dataset(limit=count)
    if not data.caption_targets:
        return callbacks_lib.RetrievalEvaluation(
            dataset,
            data.test_labels[:count],
            semantics.class_similarity(data.class_distances),
            every=config.train.eval_every,
        )
    return CaptionRetrievalEvaluation(
        dataset,
        data.test_embeddings[:count],
        data.test_labels[:count] if data.labelled else None,
        every=config.train.eval_every,
    )


def save_model_atomically(model, path):
    """Saves a .keras file atomically (`shrewd_tf.io.atomic_path`)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)


def train(config, data=None, extra_callbacks=(), verbose="auto"):
    """Trains, saves and evaluates one configuration.

    The training stream is fed to the replicas by
    `strategy.distribute_datasets_from_function`: each input pipeline
    (one per worker) reads its own shard of the split, in batches of
    `train.per_replica_batch_size`; a step's global batch is that times
    the replicas in sync. Under MultiWorkerMirroredStrategy every worker
    trains and evaluates, but only the chief (`distribution.is_chief`)
    writes the run's files into the shared output_dir (any file system
    `tf.io.gfile` reaches, e.g. `gs://`).

    Args:
        config: `config.ExperimentConfig`.
        data: optional pre-loaded `inputs.ExperimentData` (to share one load
            between runs); default: `inputs.load_experiment_data`.
        extra_callbacks: more Keras callbacks (after ours).
        verbose: Keras fit verbosity; "auto" is a progress bar on a terminal
            and one line per epoch otherwise (logs, CI).

    Returns:
        TrainResult.

    Raises:
        ValueError: a loss set the data cannot train (CLASS on unlabelled
            records, REG without caption embeddings), or a global batch
            larger than the training set.
    """
    train_cfg = config.train
    precision = distribution.set_precision_policy(train_cfg.precision)
    strategy = distribution.make_strategy(train_cfg.strategy)
    chief = distribution.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = train_cfg.per_replica_batch_size * replicas
    if data is None:
        data = inputs.load_experiment_data(config.data)
    check_losses_fit_data(config.loss, data)
    steps = data.train_count // global_batch
    if train_cfg.steps_per_epoch:
        steps = min(steps, train_cfg.steps_per_epoch)
    if steps < 1:
        raise ValueError(
            f"The global batch ({global_batch}) is larger than the training "
            f"set ({data.train_count} images). Received: "
            f"per_replica_batch_size={train_cfg.per_replica_batch_size}"
        )
    out = train_cfg.output_dir
    if chief:
        io_lib.makedirs(out)
        config.save_json(os.path.join(out, contract.CONFIG_FILE))
    log.info(
        "training %s (%s) on %d images: %d replicas x %d = %d per step, "
        "%d steps/epoch, %d epochs, precision %s",
        config.name, config.loss.losses, data.train_count, replicas,
        train_cfg.per_replica_batch_size, global_batch, steps,
        train_cfg.epochs, precision,
    )

    keras.utils.set_random_seed(train_cfg.seed)
    with strategy.scope():
        model = build_model(
            config,
            data.num_classes if data.labelled else None,
            data.input_shape,
            embedding_dim=data.embedding_dim,
        )
        train_model = training.compile_shrewd_model(
            model, config, data.class_distances, replicas, steps,
            labelled=data.labelled,
        )
    output_names = list(train_model.output)
    if data.embedding_dim is None:
        split = training.targets_for(output_names)
    else:
        split = training.targets_for(
            output_names,
            training.target_sources(
                output_names, data.caption_targets, data.labelled
            ),
        )

    def dataset_fn(input_context):
        return data.train_dataset(
            global_batch, train_cfg.seed, config.data.augment,
            input_context=input_context,
        ).repeat().map(split)

    train_ds = strategy.distribute_datasets_from_function(dataset_fn)
    callbacks = [_validation_callback(config, data)]
    if chief:
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                os.path.join(out, contract.CHECKPOINTS_DIR,
                             contract.CHECKPOINT_FILE_PATTERN),
                save_weights_only=True,
            ),
            keras.callbacks.TensorBoard(os.path.join(out, contract.LOGS_DIR)),
            keras.callbacks.CSVLogger(
                os.path.join(out, contract.HISTORY_FILE), append=True
            ),
        ]
        io_lib.makedirs(os.path.join(out, contract.CHECKPOINTS_DIR))
    # The backup last: once an epoch's backup exists, its checkpoint and
    # history row do too, so a job killed and resumed there loses no row.
    callbacks.append(callbacks_lib.ChiefBackupAndRestore(
        os.path.join(out, contract.BACKUP_DIR), is_chief=chief))
    callbacks += list(extra_callbacks)
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
    if chief:
        save_model_atomically(model, os.path.join(out, contract.MODEL_FILE))
        write_preprocessing(data, out)

    test_outputs = evaluation.predict_outputs(model, data.eval_dataset())
    metrics = evaluation.experiment_metrics(data, test_outputs)
    metrics.update(
        wall_seconds=wall,
        precision=precision,
        replicas=replicas,
        images_per_second=steps * global_batch * train_cfg.epochs / wall,
    )
    if chief:
        evaluation.write_metrics({config.name: metrics}, out)
    return TrainResult(
        model=model,
        history={k: list(map(float, v)) for k, v in history.history.items()},
        metrics=metrics,
        output_dir=out,
        test_outputs=test_outputs,
    )

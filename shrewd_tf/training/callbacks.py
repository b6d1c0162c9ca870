"""Keras callbacks: retrieval evaluation during training, and backups that
only the chief of a multi-worker run writes."""

import logging
import time

import keras
import numpy as np

from shrewd_tf.contract import CODE_OUTPUT
from shrewd_tf.contract import LOGITS_OUTPUT
from shrewd_tf.evaluation import evaluate as evaluation

log = logging.getLogger(__name__)


class RetrievalEvaluation(keras.callbacks.Callback):
    """Reports retrieval metrics on a validation set every N epochs.

    Computes codes for `dataset` (query = database, query excluded) and adds
    `val_mahp_float`, `val_mahp_binary`, `val_map_binary`,
    `val_binary_entropy_bits` (bits, paper scale: log2 N for uniform
    codes), `val_binary_entropy` (Kozachenko-Leonenko, nats),
    `val_near_binary` (fraction of code values within 0.1 of 0 or 1),
    `val_bit_balance_deviation` (mean |P(bit) - 0.5|) and
    `val_accuracy_head` to the epoch logs (see
    `evaluation.retrieval_metrics`), so TensorBoard, CSVLogger and the
    History see them. Put it BEFORE those callbacks in the list.

    Args:
        dataset: batched tf.data.Dataset of standardised images (labels, if
            any, are ignored), in the order of `labels`.
        labels: int [N] classes of the validation images.
        class_similarity: float [C, C] >= 0, `semantics.class_similarity`
            of the class distances.
        every: evaluate after every `every` epochs (and the last one).
        k: retrieval cut-off (250 in the paper).
        code_output: the model output holding the codes.
    """

    def __init__(
        self, dataset, labels, class_similarity, every=1, k=250,
        code_output=CODE_OUTPUT,
    ):
        super().__init__()
        self.dataset = dataset
        self.labels = np.asarray(labels)
        self.class_similarity = np.asarray(class_similarity)
        self.every = int(every)
        self.k = int(k)
        self.code_output = code_output
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        last = self.params and epoch + 1 == self.params.get("epochs")
        if self.every <= 0 or ((epoch + 1) % self.every and not last):
            return
        start = time.perf_counter()
        outputs = evaluation.predict_outputs(self.model, self.dataset)
        values = evaluation.retrieval_metrics(
            outputs[self.code_output],
            self.labels,
            self.class_similarity,
            k=self.k,
            logits=outputs.get(LOGITS_OUTPUT),
        )
        values = {
            key: values[key]
            for key in (
                "mahp_float", "mahp_binary", "map_binary",
                "binary_entropy_bits", "binary_entropy", "near_binary",
                "bit_balance_deviation", "accuracy",
            )
            if key in values
        }
        self.history.append({"epoch": epoch + 1, **values})
        if logs is not None:
            for key, value in values.items():
                name = "val_accuracy_head" if key == "accuracy" else f"val_{key}"
                logs[name] = value
        log.info(
            "epoch %d retrieval (%d images, %.1f s): %s",
            epoch + 1,
            len(self.labels),
            time.perf_counter() - start,
            ", ".join(f"{k}={v:.4f}" for k, v in values.items()),
        )


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` for runs whose workers share one backup folder.

    Keras 3's callback has every worker write the same files. Here every
    worker restores from `backup_dir` (shared storage, e.g. `gs://`) at
    the start of `fit`, but only the chief (`is_chief`) saves and deletes
    it: the workers hold the same weights after each synchronous step, so
    the chief's copy is everyone's. A killed worker's job restarted with
    the same output_dir resumes all workers at the chief's last backup.

    Args:
        backup_dir: the shared folder.
        is_chief: whether this process writes.
        **kwargs: more `BackupAndRestore` arguments.
    """

    def __init__(self, backup_dir, is_chief=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.is_chief = bool(is_chief)

    def _save_model(self):
        if self.is_chief:
            super()._save_model()

    def on_train_end(self, logs=None):
        if self.is_chief:
            super().on_train_end(logs)

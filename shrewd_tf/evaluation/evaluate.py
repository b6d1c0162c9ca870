"""The paper's evaluation: retrieval metrics from codes, written as tables.

Protocol (Barz & Denzler, used for every table in README): the test images
are both the queries and the database; each query is left out of its own
database (`exclude_self=True`). mAHP@250 is reported on float codes
(Manhattan ranking) and on binarised codes (Hamming ranking, tie-aware);
mAP@250 on binarised codes (as in the paper's tables, plus float);
accuracy of the (detached or attached) classification head; the binary
entropy of the codes in bits on the paper's scale (uniform codes: log2 N;
`entropy.binary_entropy_bits`) and as the Kozachenko-Leonenko estimate in
nats; how binary, balanced and distinct the codes are
(`metrics.code_statistics`). Records with caption embeddings add the
caption metrics (`shrewd_tf.evaluation.captions`).

`evaluate_run` re-evaluates a finished run directory and writes
metrics.json / metrics.md (`write_metrics`, `markdown_table`).
"""

import dataclasses
import json
import os

import numpy as np

from shrewd_tf import config as config_lib
from shrewd_tf import contract
from shrewd_tf import io as io_lib
from shrewd_tf.evaluation import entropy
from shrewd_tf.evaluation import metrics
from shrewd_tf.evaluation.captions import KENDALL_QUERIES
from shrewd_tf.evaluation.captions import caption_retrieval_metrics
from shrewd_tf.evaluation.captions import caption_similarity_matrix
from shrewd_tf.io import write_text_atomically
from shrewd_tf.ops.bits import binarise
from shrewd_tf.semantics import distances as semantics

# Column order of the markdown table and its headers.
TABLE_COLUMNS = (
    ("mahp_float", "mAHP@250 float"),
    ("mahp_binary", "mAHP@250 bin"),
    ("map_binary", "mAP@250 bin"),
    ("map_float", "mAP@250 float"),
    ("accuracy", "accuracy"),
    ("mahp_caption_float", "caption mAHP@250 float"),
    ("mahp_caption_binary", "caption mAHP@250 bin"),
    ("kendall_tau_float", "Kendall tau float"),
    ("kendall_tau_binary", "Kendall tau bin"),
    ("binary_entropy_bits", "binary entropy (bits; uniform = log2 N)"),
    ("binary_entropy", "KL entropy (nats)"),
    ("near_binary", "near-binary"),
    ("bit_balance_deviation", "bit balance dev."),
    ("distinct_codes", "distinct codes"),
    ("wall_seconds", "train wall (s)"),
)


def predict_outputs(model, dataset):
    """Runs `model` over a batched dataset; returns {output: np.ndarray}."""
    outputs = model.predict(dataset, verbose=0)
    if not isinstance(outputs, dict):
        outputs = {contract.CODE_OUTPUT: outputs}
    return {name: np.asarray(value) for name, value in outputs.items()}


def retrieval_metrics(
    codes, labels, class_similarity, k=250, logits=None, ties="aware",
    embeddings=None, kendall_queries=KENDALL_QUERIES,
):
    """All code-quality metrics of one model on one query/database set.

    Args:
        codes: float [N, d] codes of the evaluation images.
        labels: int [N] their classes, or None (unlabelled: no class
            metrics).
        class_similarity: float [C, C] >= 0 (`semantics.class_similarity`
            of the class distances), or None (no class mAHP, e.g.
            semantics="captions").
        k: retrieval cut-off (capped at N - 1).
        logits: optional float [N, C] classification outputs (accuracy;
            needs labels).
        ties: tie handling for binary rankings (see `metrics`).
        embeddings: optional float [N, E] caption embeddings: adds the
            caption metrics (`caption_retrieval_metrics`).
        kendall_queries: queries of the Kendall tau (None: all).

    Returns:
        dict of floats: binary_entropy (Kozachenko-Leonenko, nats,
        `entropy.binary_entropy`), binary_entropy_bits (the paper's scale:
        log2 N for uniform codes, `entropy.binary_entropy_bits`), the
        `metrics.code_statistics` near_binary, bit_balance_deviation,
        distinct_codes and distinct_fraction, unique_codes (=
        distinct_codes), code_mean, bit_balance (mean bit); with labels
        map_float, map_binary (and accuracy with logits); with labels and
        class_similarity mahp_float, mahp_binary;
        with embeddings mahp_caption_float, mahp_caption_binary,
        kendall_tau_float, kendall_tau_binary.
    """
    codes = np.asarray(codes, np.float32)
    k = min(k, len(codes) - 1)
    common = dict(exclude_self=True, ties=ties)
    result = {}
    if labels is not None:
        labels = np.asarray(labels, np.int64)
        if class_similarity is not None:
            for name, binary in (("mahp_float", False), ("mahp_binary", True)):
                result[name] = metrics.mean_average_hierarchical_precision(
                    codes, labels, codes, labels, class_similarity, k=k,
                    binary=binary, **common
                )
        result["map_float"] = metrics.mean_average_precision(
            codes, labels, codes, labels, k=k, **common
        )
        result["map_binary"] = metrics.mean_average_precision(
            codes, labels, codes, labels, k=k, binary=True, **common
        )
    if embeddings is not None:
        result.update(
            caption_retrieval_metrics(
                codes, embeddings, k=k, ties=ties,
                kendall_queries=kendall_queries,
            )
        )
    result["binary_entropy"] = entropy.binary_entropy(codes)
    result["binary_entropy_bits"] = entropy.binary_entropy_bits(codes)
    result.update(metrics.code_statistics(codes))
    result["unique_codes"] = result["distinct_codes"]  # the older name
    result["code_mean"] = float(codes.mean())
    # The mean bit; 0.5 is best.
    result["bit_balance"] = float(binarise(codes).mean())
    if logits is not None and labels is not None:
        predicted = np.argmax(np.asarray(logits), axis=1)
        result["accuracy"] = float(np.mean(predicted == labels))
    return result


def experiment_metrics(data, outputs, k=250, kendall_queries=KENDALL_QUERIES):
    """`retrieval_metrics` of a model's test outputs with what `data` has.

    Args:
        data: `inputs.ExperimentData`; its test split is the query/database
            set: labels only when labelled, class similarity only with class
            distances, caption metrics when it has test embeddings.
        outputs: {output: array} on `data.test_images` (`predict_outputs`).
        k, kendall_queries: as in `retrieval_metrics`.
    """
    similarity = (
        None if data.class_distances is None
        else semantics.class_similarity(data.class_distances)
    )
    return retrieval_metrics(
        outputs[contract.CODE_OUTPUT],
        data.test_labels if data.labelled else None,
        similarity,
        k=k,
        logits=(
            outputs.get(contract.LOGITS_OUTPUT) if data.labelled else None
        ),
        embeddings=data.test_embeddings,
        kendall_queries=kendall_queries,
    )


ZERO_SHOT_DATABASES = ("unseen", "all")
ZERO_SHOT_KS = (1, 2, 5, 10, 20)  # the paper's Table 5


def zero_shot_flat_hits(codes, labels, unseen_classes, ks=ZERO_SHOT_KS,
                        database="unseen"):
    """Flat hit@K for test images of classes unseen in training.

    Each unseen-class test image is a query (itself left out of its own
    database); the labels of its ranked neighbours, in order of first
    appearance (`metrics.labels_ranked_by_retrieval`), are its label
    predictions, and hit@K is the fraction of queries whose label is among
    the first K.

    Protocols (`database`):

    * "unseen" (default, the paper's Table 5, following Shen et al. 2019,
      "retrieving from the full 14M ImageNet dataset with the ILSVRC2012
      labels removed"): the database holds the unseen-class test images
      only, so the predictions are unseen classes and hit@K measures how
      well the codes separate classes the network never saw.
    * "all": the database holds every test image, seen classes included; a
      seen-class neighbour pushes the true label down. Harder, and not
      comparable with the paper's numbers.

    Args:
        codes: float [N, d] test codes (ranked by L1 distance).
        labels: int [N] their classes.
        unseen_classes: class ids held out of training.
        ks: cut-offs (K > number of database classes uses them all).
        database: "unseen" or "all".

    Returns:
        dict {k: fraction of unseen-class queries whose label is in the
        first k predicted labels}.

    Raises:
        ValueError: no test image of an unseen class, or an unknown
            `database`.
    """
    if database not in ZERO_SHOT_DATABASES:
        raise ValueError(
            f"`database` must be one of {ZERO_SHOT_DATABASES}. Received: "
            f"database={database!r}"
        )
    codes = np.asarray(codes, np.float32)
    labels = np.asarray(labels, np.int64)
    query = np.flatnonzero(np.isin(labels, list(unseen_classes)))
    if query.size == 0:
        raise ValueError(
            f"No test images of the unseen classes. Received: "
            f"unseen_classes={tuple(unseen_classes)}"
        )
    if database == "unseen":
        ranked = metrics.labels_ranked_by_retrieval(
            codes[query], codes[query], labels[query], exclude_self=True
        )
    else:  # every test image against all others; keep the unseen rows
        ranked = metrics.labels_ranked_by_retrieval(
            codes, codes, labels, exclude_self=True
        )[query]
    return metrics.flat_hit_at_k(ranked, labels[query], ks=ks)


def write_metrics(rows, output_dir, title="Retrieval metrics"):
    """Writes rows {name: metrics dict} as metrics.json and metrics.md.

    Both files are written atomically. Returns the markdown text.
    """
    io_lib.makedirs(output_dir)
    write_text_atomically(
        os.path.join(output_dir, contract.METRICS_FILE),
        json.dumps(rows, indent=2, sort_keys=True),
    )
    markdown = markdown_table(rows, title)
    write_text_atomically(
        os.path.join(output_dir, contract.METRICS_TABLE_FILE), markdown
    )
    return markdown


def markdown_table(rows, title="Retrieval metrics"):
    """A markdown table with one row per model and the TABLE_COLUMNS."""
    present = [
        (key, header)
        for key, header in TABLE_COLUMNS
        if any(key in values for values in rows.values())
    ]
    lines = [f"### {title}", ""]
    lines.append("| model | " + " | ".join(h for _, h in present) + " |")
    lines.append("|---|" + "---|" * len(present))
    for name, values in rows.items():
        cells = []
        for key, _ in present:
            value = values.get(key)
            if value is None:
                cells.append("–")
            elif key == "accuracy":
                cells.append(f"{100 * value:.2f} %")
            elif key == "near_binary":
                cells.append(f"{100 * value:.1f} %")
            elif key in ("unique_codes", "distinct_codes", "wall_seconds"):
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class EvaluatedRun:
    """A finished run evaluated on its test split (for reports).

    Attributes:
        metrics: `experiment_metrics` of the test split.
        codes: float32 [N, d] test codes.
        labels: int64 [N] labels, or `arange(N)` for unlabelled caption data
            (every item its own "class").
        similarity: float [C, C] class similarity, or [N, N] caption
            similarity for unlabelled caption data.
        images: `images(indices) -> uint8 [K, H, W, C]`, the test images
            at those positions, decoded on demand (a report draws a few;
            the split is never held in memory).
        label_names: class names (None for unlabelled data).
        config: the run's ExperimentConfig.
    """

    metrics: dict
    codes: np.ndarray
    labels: np.ndarray
    similarity: np.ndarray
    images: object
    label_names: list | None
    config: object


def evaluate_run_outputs(run_dir, k=250):
    """Loads a finished run, predicts its test codes and computes metrics.

    Returns:
        `EvaluatedRun`.

    Raises:
        FileNotFoundError: `run_dir` lacks config.json or model.keras.
    """
    import keras

    from shrewd_tf.data import pipelines as inputs
    from shrewd_tf.models import shrewd_model as models  # noqa: F401  (registers the layers)

    config_path = os.path.join(run_dir, contract.CONFIG_FILE)
    model_path = os.path.join(run_dir, contract.MODEL_FILE)
    for path in (config_path, model_path):
        if not io_lib.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: is {run_dir!r} a finished `shrewd train` "
                "run directory?"
            )
    config = config_lib.ExperimentConfig.from_file(config_path)
    data = inputs.load_experiment_data(config.data)
    model = keras.models.load_model(model_path)
    outputs = predict_outputs(model, data.eval_dataset())
    result = experiment_metrics(data, outputs, k=k)
    if data.labelled and data.class_distances is not None:
        labels = data.test_labels
        similarity = semantics.class_similarity(data.class_distances)
        names = list(data.class_names)
    elif data.test_embeddings is not None:
        labels = np.arange(len(data.test_labels))
        similarity = caption_similarity_matrix(data.test_embeddings)
        names = None
    else:
        labels = data.test_labels
        similarity = np.eye(data.num_classes)
        names = list(data.class_names)
    return EvaluatedRun(
        metrics=result,
        codes=np.asarray(outputs[contract.CODE_OUTPUT], np.float32),
        labels=np.asarray(labels), similarity=similarity,
        images=data.test_images_at, label_names=names, config=config,
    )


def evaluate_run(run_dir, output_dir=None, k=250):
    """Re-evaluates a finished run on its test split.

    Loads `run_dir/config.json` and `run_dir/model.keras`, computes the
    retrieval metrics (`experiment_metrics`: class metrics when labelled,
    caption metrics for records with caption embeddings) and writes
    metrics.json / metrics.md to `output_dir` (default: `run_dir`).
    Returns the metrics dict (without the training-time entries such as
    wall_seconds).
    """
    evaluated = evaluate_run_outputs(run_dir, k=k)
    write_metrics({evaluated.config.name: evaluated.metrics}, output_dir or run_dir)
    return evaluated.metrics

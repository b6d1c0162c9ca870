"""The paper's evaluation: retrieval metrics from codes, written as tables.

Protocol (Barz & Denzler, used for every table in README): the test images
are both the queries and the database; each query is left out of its own
database (`exclude_self=True`). mAHP@250 is reported on float codes
(Manhattan ranking) and on binarised codes (Hamming ranking, tie-aware);
mAP@250 on binarised codes (as in the paper's tables, plus float);
accuracy of the (detached or attached) classification head; the binary
entropy of the codes (Kozachenko-Leonenko, nats).
"""

import json
import os

import numpy as np

from shrewd_tf import config as config_lib
from shrewd_tf import metrics

# Column order of the markdown table and its headers.
TABLE_COLUMNS = (
    ("mahp_float", "mAHP@250 float"),
    ("mahp_binary", "mAHP@250 bin"),
    ("map_binary", "mAP@250 bin"),
    ("map_float", "mAP@250 float"),
    ("accuracy", "accuracy"),
    ("binary_entropy", "binary entropy (nats)"),
    ("unique_codes", "unique codes"),
    ("wall_seconds", "train wall (s)"),
)


def predict_outputs(model, dataset):
    """Runs `model` over a batched dataset; returns {output: np.ndarray}."""
    outputs = model.predict(dataset, verbose=0)
    if not isinstance(outputs, dict):
        outputs = {"code": outputs}
    return {name: np.asarray(value) for name, value in outputs.items()}


def retrieval_metrics(
    codes, labels, class_similarity, k=250, logits=None, ties="aware"
):
    """All code-quality metrics of one model on one query/database set.

    Args:
        codes: float [N, d] codes of the evaluation images.
        labels: int [N] their classes.
        class_similarity: float [C, C], 1 - class distance.
        k: retrieval cut-off.
        logits: optional float [N, C] classification outputs (accuracy).
        ties: tie handling for binary rankings (see `metrics`).

    Returns:
        dict of floats: mahp_float, mahp_binary, map_float, map_binary,
        binary_entropy, unique_codes, code_mean, bit_balance and, with
        logits, accuracy.
    """
    codes = np.asarray(codes, np.float32)
    labels = np.asarray(labels, np.int64)
    k = min(k, len(labels) - 1)
    common = dict(exclude_self=True, ties=ties)
    result = {
        "mahp_float": metrics.mean_average_hierarchical_precision(
            codes, labels, codes, labels, class_similarity, k=k, **common
        ),
        "mahp_binary": metrics.mean_average_hierarchical_precision(
            codes, labels, codes, labels, class_similarity, k=k,
            binary=True, **common
        ),
        "map_float": metrics.mean_average_precision(
            codes, labels, codes, labels, k=k, **common
        ),
        "map_binary": metrics.mean_average_precision(
            codes, labels, codes, labels, k=k, binary=True, **common
        ),
        "binary_entropy": metrics.binary_entropy(codes),
    }
    bits = codes > 0.5
    result["unique_codes"] = float(len(np.unique(np.packbits(bits, axis=1), axis=0)))
    # How binary and how balanced the codes are (1.0 / 0.5 at best).
    result["code_mean"] = float(codes.mean())
    result["bit_balance"] = float(bits.mean())
    if logits is not None:
        predicted = np.argmax(np.asarray(logits), axis=1)
        result["accuracy"] = float(np.mean(predicted == labels))
    return result


def zero_shot_flat_hits(codes, labels, unseen_classes, ks=(1, 2, 5, 10)):
    """Flat hit@K for test images of classes unseen in training.

    Each unseen-class test image queries the whole test set (itself left
    out); the labels of its ranked neighbours, in order of first
    appearance, are its label predictions.

    Returns:
        dict {k: fraction of unseen-class queries whose label is in the
        first k predicted labels}.
    """
    codes = np.asarray(codes, np.float32)
    labels = np.asarray(labels, np.int64)
    query = np.flatnonzero(np.isin(labels, list(unseen_classes)))
    if query.size == 0:
        raise ValueError(
            f"No test images of the unseen classes. Received: "
            f"unseen_classes={tuple(unseen_classes)}"
        )
    # Every test image against all others (itself excluded); keep the
    # unseen-class rows.
    ranked = metrics.labels_ranked_by_retrieval(
        codes, codes, labels, exclude_self=True
    )[query]
    return metrics.flat_hit_at_k(ranked, labels[query], ks=ks)


def write_metrics(rows, output_dir, title="Retrieval metrics"):
    """Writes rows {name: metrics dict} as metrics.json and metrics.md.

    Both files are written atomically. Returns the markdown text.
    """
    os.makedirs(output_dir, exist_ok=True)
    config_lib.write_text_atomically(
        os.path.join(output_dir, "metrics.json"),
        json.dumps(rows, indent=2, sort_keys=True),
    )
    markdown = markdown_table(rows, title)
    config_lib.write_text_atomically(
        os.path.join(output_dir, "metrics.md"), markdown
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
            elif key in ("unique_codes", "wall_seconds"):
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_run(run_dir, output_dir=None, k=250):
    """Re-evaluates a finished run on its test split.

    Loads `run_dir/config.json` and `run_dir/model.keras`, computes the
    retrieval metrics and writes metrics.json / metrics.md to `output_dir`
    (default: `run_dir`). Returns the metrics dict.
    """
    import keras

    from shrewd_tf import inputs
    from shrewd_tf import models  # noqa: F401  (registers the layers)

    config_path = os.path.join(run_dir, "config.json")
    model_path = os.path.join(run_dir, "model.keras")
    for path in (config_path, model_path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: is {run_dir!r} a finished `shrewd train` "
                "run directory?"
            )
    config = config_lib.ExperimentConfig.from_file(config_path)
    data = inputs.load_experiment_data(config.data)
    model = keras.models.load_model(model_path)
    outputs = predict_outputs(model, data.eval_dataset(data.test_images))
    result = retrieval_metrics(
        outputs["code"], data.test_labels, 1.0 - data.class_distances, k=k,
        logits=outputs.get("logits"),
    )
    write_metrics({config.name: result}, output_dir or run_dir)
    return result

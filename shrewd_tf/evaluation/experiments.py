"""The paper's experiments: the loss ablation table and zero-shot hashing.

`run_ablation` trains each loss set of Table 2/3 with the same budget on the
same data (loaded once), adds the trivial one-hot baseline built from the
CLASS model, and writes one metrics table. `run_zero_shot` holds classes out
of training and reports flat hit@K of retrieving them (Table 5).
"""

import logging
import os

import numpy as np

from shrewd_tf import contract
from shrewd_tf.evaluation import evaluate as evaluation
from shrewd_tf.data import pipelines as inputs
from shrewd_tf.io import write_text_atomically
from shrewd_tf.semantics import distances as semantics
from shrewd_tf.training import trainer

log = logging.getLogger(__name__)

ABLATIONS = ("CLASS", "SIM", "KL-CLASS", "SIM-KL", "SIM-KL-CLASS")
ONE_HOT_BASELINE = "one-hot (CLASS argmax)"
RANDOM_REFERENCE = "random codes (reference)"
# `run_zero_shot`'s table in its output_dir (the CLI prints the markdown).
ZERO_SHOT_FILE = "zero_shot.json"
ZERO_SHOT_TABLE_FILE = "zero_shot.md"


def one_hot_codes(logits):
    """The trivial baseline's code: one_hot(argmax(logits)), [N, C] 0/1."""
    logits = np.asarray(logits)
    codes = np.zeros(logits.shape, np.float32)
    codes[np.arange(len(logits)), np.argmax(logits, axis=1)] = 1.0
    return codes


def random_reference(labels, similarity, code_bits, seed=0):
    """Metrics of uniform random codes: the floor of each metric."""
    rng = np.random.default_rng(seed)
    codes = rng.random((len(labels), code_bits)).astype(np.float32)
    return evaluation.retrieval_metrics(codes, labels, similarity)


def run_ablation(base_config, output_dir, loss_sets=ABLATIONS, data=None,
                 verbose="auto"):
    """Trains each loss set and writes `output_dir/metrics.{json,md}`.

    Args:
        base_config: the ExperimentConfig every run starts from.
        output_dir: each run goes to `output_dir/<loss set>/`.
        loss_sets: names from `config.LOSS_SETS`.
        data: optional pre-loaded `inputs.ExperimentData`.

    Returns:
        dict {row name: metrics}, including the one-hot baseline when CLASS
        is among the loss sets, and random codes as a reference.
    """
    data = data or inputs.load_experiment_data(base_config.data)
    if data.class_distances is None or not data.labelled:
        raise ValueError(
            "The ablation table (with its one-hot and random-code rows) needs "
            "labelled data with class distances; for caption data compare "
            "loss sets with `shrewd pipeline run` (pipeline.configurations). "
            f"Received: semantics={base_config.data.semantics!r}"
        )
    similarity = semantics.class_similarity(data.class_distances)
    rows = {}
    for losses in loss_sets:
        config = base_config.with_overrides(
            {
                "name": losses,
                "loss.losses": losses,
                "train.output_dir": os.path.join(output_dir, losses),
            }
        )
        result = trainer.train(config, data=data, verbose=verbose)
        rows[losses] = result.metrics
        if losses == "CLASS":
            logits = result.test_outputs[contract.LOGITS_OUTPUT]
            codes = one_hot_codes(logits)
            baseline = evaluation.retrieval_metrics(
                codes, data.test_labels, similarity, logits=logits,
            )
            rows[ONE_HOT_BASELINE] = baseline
        log.info("%s: %s", losses, evaluation.markdown_table({losses: rows[losses]}))
    rows[RANDOM_REFERENCE] = random_reference(
        data.test_labels, similarity, base_config.model.code_bits,
        base_config.train.seed,
    )
    evaluation.write_metrics(
        rows, output_dir, title=f"{base_config.name}: loss ablation"
    )
    return rows


def run_zero_shot(base_config, output_dir, holdout_classes,
                  loss_sets=("CLASS", "SIM-KL-CLASS"),
                  ks=evaluation.ZERO_SHOT_KS, verbose="auto",
                  database="unseen"):
    """Flat hit@K on classes held out of training (the paper's Table 5).

    Each loss set is trained without the `holdout_classes`; the unseen-class
    test images are then the queries of `evaluation.zero_shot_flat_hits`.

    Args:
        base_config: the ExperimentConfig every run starts from.
        output_dir: each run goes to `output_dir/<loss set>/`.
        holdout_classes: class ids left out of training.
        loss_sets: names from `config.LOSS_SETS`.
        ks: the K of hit@K (default the paper's 1, 2, 5, 10, 20).
        verbose: Keras verbosity.
        database: "unseen" (default, the paper: retrieve among the
            unseen-class test images only) or "all" (every test image).

    Returns:
        dict {loss set: {"hit@k": fraction, ...}}; also written to
        `output_dir/zero_shot.{json,md}`.
    """
    base = base_config.with_overrides(
        {"data.holdout_classes": list(holdout_classes)}
    )
    data = inputs.load_experiment_data(base.data)
    rows = {}
    for losses in loss_sets:
        config = base.with_overrides(
            {
                "name": f"{losses} (zero-shot)",
                "loss.losses": losses,
                "train.output_dir": os.path.join(output_dir, losses),
            }
        )
        result = trainer.train(config, data=data, verbose=verbose)
        hits = evaluation.zero_shot_flat_hits(
            result.test_outputs[contract.CODE_OUTPUT], data.test_labels,
            holdout_classes, ks, database=database,
        )
        rows[losses] = {f"hit@{k}": v for k, v in hits.items()}
    write_zero_shot(
        rows, output_dir, holdout_classes, data.class_names, database
    )
    return rows


def write_zero_shot(rows, output_dir, holdout_classes, class_names,
                    database="unseen"):
    """zero_shot.json and zero_shot.md (hit@K in percent); the markdown
    names the unseen classes and the database protocol."""
    import json

    names = ", ".join(class_names[c] for c in holdout_classes)
    keys = list(next(iter(rows.values())))
    searched = (
        "unseen-class test images only" if database == "unseen"
        else "all test images"
    )
    lines = [
        f"### Zero-shot flat hit@K (unseen: {names})",
        "",
        f"Queries: unseen-class test images; database: {searched} "
        "(each query left out).",
        "",
        "| model | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, values in rows.items():
        cells = " | ".join(f"{100 * values[k]:.1f}" for k in keys)
        lines.append(f"| {name} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomically(
        os.path.join(output_dir, ZERO_SHOT_FILE), json.dumps(rows, indent=2)
    )
    write_text_atomically(
        os.path.join(output_dir, ZERO_SHOT_TABLE_FILE), markdown
    )
    return markdown

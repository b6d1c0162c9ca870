"""Does the empirical KL term (eq. 4) make 64-bit codes binary? A study.

Two parts, each one command:

    # Free codes: no network, minimise L_KL alone over a [B, d] variable
    # (seconds per setting).
    python benchmarks/study_kl_binarisation.py free --seeds 3

    # Real training on Fashion-MNIST at a fixed budget (minutes per run).
    python benchmarks/study_kl_binarisation.py train --seeds 3

Each setting changes one factor from a base (or a few, where the
combination matters). Every run reports the near-binary fraction (code
values within 0.1 of {0, 1}), the mean |bit balance - 0.5|, the fraction
of distinct binarised codes, and (training) float and binary mAHP@250,
their drop and accuracy, as mean +- std over seeds. Tables are printed as
markdown and written with `--output`; `--json FILE` appends every run's raw
result, and `table FILE --title ...` rebuilds a table from such a file.
docs/kl_binarisation.md holds the tables we measured and what we concluded.

Both parts call the library: `losses.EmpiricalKLLoss` for the free codes
(the code head's activation applied to free pre-activations) and
`trainer.train` for training, so they measure the code that ships.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# === Free codes ===

# name -> EmpiricalKLLoss kwargs and free-code options. "head" is the code
# head's range: the free variable is the head's pre-activation.
FREE_BASE = dict(head="linear", k=1, alpha=0.1, target_multiple=1,
                 block_bits=None, scale="paper", batch=256, replicas=1)
FREE_SETTINGS = {
    "paper (linear head, joint, Beta(0.1), m=B, k=1)": {},
    "default (BN + sigmoid x8, joint, Beta(0.02))": dict(
        head="batchnorm_sigmoid", gain=8.0, alpha=0.02
    ),
    "head: sigmoid": dict(head="sigmoid"),
    "head: rescaled tanh": dict(head="tanh"),
    "head: batchnorm + sigmoid": dict(head="batchnorm_sigmoid"),
    "head: batchnorm + sigmoid x5": dict(head="batchnorm_sigmoid", gain=5.0),
    "linear, m=4B": dict(target_multiple=4),
    "linear, m=16B": dict(target_multiple=16),
    "linear, k=5": dict(k=5),
    "linear, alpha=0.05": dict(alpha=0.05),
    "linear, bank of targets kept across steps": dict(bank=True),
    "linear, per bit (blocks of 1)": dict(block_bits=1),
    "linear, blocks of 8": dict(block_bits=8),
    "sigmoid, m=16B": dict(head="sigmoid", target_multiple=16),
    "sigmoid, k=5": dict(head="sigmoid", k=5),
    "sigmoid, alpha=0.05": dict(head="sigmoid", alpha=0.05),
    "sigmoid, bank of targets kept across steps": dict(
        head="sigmoid", bank=True
    ),
    "sigmoid, 2 replicas, neighbours per replica": dict(
        head="sigmoid", replicas=2
    ),
    "sigmoid, B=64": dict(head="sigmoid", batch=64),
    "sigmoid, per bit (blocks of 1)": dict(head="sigmoid", block_bits=1),
    "sigmoid, per bit, k=10": dict(head="sigmoid", block_bits=1, k=10),
    "sigmoid, blocks of 4": dict(head="sigmoid", block_bits=4),
    "sigmoid, blocks of 8": dict(head="sigmoid", block_bits=8),
    "sigmoid, blocks of 16": dict(head="sigmoid", block_bits=16),
    "sigmoid, blocks of 8, m=4B": dict(
        head="sigmoid", block_bits=8, target_multiple=4
    ),
    "sigmoid, blocks of 8, alpha=0.05": dict(
        head="sigmoid", block_bits=8, alpha=0.05
    ),
    "sigmoid, blocks of 8, 2 replicas": dict(
        head="sigmoid", block_bits=8, replicas=2
    ),
    "linear, blocks of 8, m=4B, alpha=0.05": dict(
        block_bits=8, target_multiple=4, alpha=0.05
    ),
    "batchnorm + sigmoid x5, blocks of 8": dict(
        head="batchnorm_sigmoid", gain=5.0, block_bits=8
    ),
    "batchnorm + sigmoid x5, blocks of 8, m=4B, alpha=0.05": dict(
        head="batchnorm_sigmoid", gain=5.0, block_bits=8, target_multiple=4,
        alpha=0.05,
    ),
}


def _head(name, gain=1.0):
    import tensorflow as tf

    if name == "linear":
        return lambda h: h
    if name == "sigmoid":
        return lambda h: tf.sigmoid(gain * h)
    if name == "tanh":
        return lambda h: 0.5 * (1.0 + tf.tanh(gain * h))
    if name == "batchnorm_sigmoid":
        def batchnorm_sigmoid(h):
            mean, var = tf.nn.moments(h, axes=[0])
            return tf.sigmoid(gain * (h - mean) * tf.math.rsqrt(var + 1e-3))
        return batchnorm_sigmoid
    raise ValueError(f"Unknown head. Received: head={name!r}")


def run_free(setting, seed, steps=800, bits=64, learning_rate=1e-2):
    """Minimises L_KL alone over free codes; returns final statistics."""
    import tensorflow as tf

    from shrewd_tf import losses
    from shrewd_tf.evaluation import metrics

    s = {**FREE_BASE, **setting}
    batch, replicas = s["batch"], s["replicas"]
    rng = np.random.default_rng(seed)
    # The paper's head starts at ~N(0.5, 1); bounded heads at h ~ N(0, 1).
    centre = 0.5 if s["head"] == "linear" else 0.0
    variable = tf.Variable(rng.normal(centre, 1.0, (batch, bits)), dtype=tf.float32)
    head = _head(s["head"], s.get("gain", 1.0))
    loss = losses.EmpiricalKLLoss(
        k=s["k"], alpha=s["alpha"], target_multiple=s["target_multiple"],
        block_bits=s["block_bits"], scale=s["scale"], seed=seed,
    )
    bank = None
    if s.get("bank"):
        bank = loss.sample_target((s["target_multiple"] * batch, bits))
    optimizer = tf.keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            codes = head(variable)
            if bank is None:
                # One "replica" per slice of the batch, as under
                # tf.distribute without cross_replica.
                parts = tf.split(codes, replicas)
                value = tf.add_n(
                    [loss(tf.zeros_like(part), part) for part in parts]
                ) / replicas
            else:
                value = losses.empirical_kl_loss(
                    codes, bank, s["k"], block_bits=s["block_bits"],
                    scale=s["scale"],
                )
        gradient = tape.gradient(value, variable)
        optimizer.apply_gradients([(gradient, variable)])
        return value

    start = metrics.code_statistics(head(variable).numpy())["near_binary"]
    for _ in range(steps):
        value = step()
    codes = head(variable).numpy()
    stats = metrics.code_statistics(codes)
    return {
        "loss": float(value),
        "near_binary_start": start,
        "near_binary": stats["near_binary"],
        "bit_balance_deviation": stats["bit_balance_deviation"],
        "distinct_fraction": stats["distinct_fraction"],
        "code_std": float(codes.std()),
    }


# === Training ===

# name -> config overrides on top of the paper-literal setting
# (`config.PRESETS["paper"]`); None: the config file as shipped (the
# defaults chosen on this study's evidence).
TRAIN_SETTINGS = {
    "default (configs/fashion_mnist.yaml)": None,
    "paper (linear, joint, lambda1=0.01)": {},
    "sigmoid": {"model.code_activation": "sigmoid"},
    "rescaled tanh": {"model.code_activation": "tanh"},
    "batchnorm + sigmoid": {"model.code_activation": "batchnorm_sigmoid"},
    "linear, lambda1=1": {"loss.kl_weight": 1.0},
    "linear, WKV scale (x d)": {"loss.kl_scale": "wkv"},
    "linear, m=4B": {"loss.kl_target_multiple": 4},
    "linear, blocks of 8": {"loss.kl_block_bits": 8},
    "linear, blocks of 8, WKV scale": {
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
    },
    "linear, blocks of 8, m=4B, WKV scale": {
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
        "loss.kl_target_multiple": 4,
    },
    "sigmoid, blocks of 8, WKV scale": {
        "model.code_activation": "sigmoid",
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
    },
    "batchnorm + sigmoid, blocks of 8, WKV scale": {
        "model.code_activation": "batchnorm_sigmoid",
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
    },
    "tanh, blocks of 8, WKV scale": {
        "model.code_activation": "tanh",
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
    },
    "linear, blocks of 8, WKV scale, lambda1=0.1": {
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
        "loss.kl_weight": 0.1,
    },
    "batchnorm + sigmoid x5, blocks of 8": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_block_bits": 8,
    },
    "batchnorm + sigmoid x5, blocks of 8, WKV scale": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_block_bits": 8, "loss.kl_scale": "wkv",
    },
    "batchnorm + sigmoid x5, blocks of 8, lambda1=0.03": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_block_bits": 8, "loss.kl_weight": 0.03,
    },
    "batchnorm + sigmoid x5, blocks of 8, lambda1=0.1": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_block_bits": 8, "loss.kl_weight": 0.1,
    },
    "batchnorm + sigmoid x5, blocks of 8, lambda1=0.3": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_block_bits": 8, "loss.kl_weight": 0.3,
    },
    "batchnorm + sigmoid x5, joint (paper estimator)": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
    },
    "batchnorm + sigmoid x5, joint, lambda1=0.03": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_weight": 0.03,
    },
    "batchnorm + sigmoid x5, joint, lambda1=0.1": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_weight": 0.1,
    },
    "batchnorm + sigmoid x5, joint, lambda1=0.3": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_weight": 0.3,
    },
    "batchnorm + sigmoid x5, joint, alpha=0.02": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_alpha": 0.02,
    },
    "batchnorm + sigmoid x5, joint, alpha=0.02, lambda1=0.1": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.kl_alpha": 0.02, "loss.kl_weight": 0.1,
    },
    "batchnorm + sigmoid x8, joint, alpha=0.02": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 8.0,
        "loss.kl_alpha": 0.02,
    },
    "batchnorm + sigmoid x8, joint, alpha=0.02, lambda1=0.03": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 8.0,
        "loss.kl_alpha": 0.02, "loss.kl_weight": 0.03,
    },
    "batchnorm + sigmoid x8, joint, alpha=0.02, lambda1=0.02": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 8.0,
        "loss.kl_alpha": 0.02, "loss.kl_weight": 0.02,
    },
    "batchnorm + sigmoid x8, joint, alpha=0.02, warm-up 0.5 epoch": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 8.0,
        "loss.kl_alpha": 0.02, "loss.kl_warmup_epochs": 0.5,
    },
    "batchnorm + sigmoid x8, joint, alpha=0.02, lambda1=0.03, warm-up 0.5 epoch": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 8.0,
        "loss.kl_alpha": 0.02, "loss.kl_weight": 0.03,
        "loss.kl_warmup_epochs": 0.5,
    },
    "batchnorm + sigmoid x16, joint, alpha=0.02": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 16.0,
        "loss.kl_alpha": 0.02,
    },
    "batchnorm + sigmoid x5, no KL (SIM)": {
        "model.code_activation": "batchnorm_sigmoid", "model.code_gain": 5.0,
        "loss.losses": "SIM",
    },
    "linear, no KL (SIM)": {"loss.losses": "SIM"},
}


def load_fashion_mnist(train_subset):
    from shrewd_tf import config as config_lib
    from shrewd_tf.data import pipelines as inputs

    data_config = config_lib.DataConfig(
        dataset="fashion_mnist", semantics="wup", train_subset=train_subset,
        validation_subset=2000,
    )
    return inputs.load_experiment_data(data_config)


def run_train(overrides, seed, data, output_dir, epochs, config_file,
              losses="SIM-KL"):
    """Trains one setting; returns the metrics of its test codes."""
    from shrewd_tf import config as config_lib
    from shrewd_tf.evaluation import metrics
    from shrewd_tf.training import trainer

    config = config_lib.ExperimentConfig.from_file(config_file)
    if overrides is not None:
        config = config.with_preset("paper").with_overrides(overrides)
    config = config.with_overrides(
        {
            "loss.losses": losses,
            **(overrides or {}),
            "train.seed": seed,
            "train.epochs": epochs,
            "train.eval_every": 0,
            "train.output_dir": output_dir,
        }
    )
    result = trainer.train(config, data=data, verbose=0)
    stats = metrics.code_statistics(result.test_outputs["code"])
    m = result.metrics
    return {
        "near_binary": stats["near_binary"],
        "bit_balance_deviation": stats["bit_balance_deviation"],
        "distinct_fraction": stats["distinct_fraction"],
        "mahp_float": m["mahp_float"],
        "mahp_binary": m["mahp_binary"],
        "mahp_drop": m["mahp_float"] - m["mahp_binary"],
        "accuracy": m.get("accuracy", float("nan")),
        "wall_seconds": m["wall_seconds"],
    }


# === Tables ===


def summarise(results):
    """{name: [per-seed dicts]} -> {name: {key: (mean, std)}}."""
    out = {}
    for name, runs in results.items():
        keys = runs[0].keys()
        out[name] = {
            key: (float(np.mean([r[key] for r in runs])),
                  float(np.std([r[key] for r in runs])))
            for key in keys
        }
    return out


COLUMNS = (
    ("near_binary_start", "near-binary at start", 3),
    ("near_binary", "near-binary", 3),
    ("bit_balance_deviation", "bit balance dev.", 3),
    ("distinct_fraction", "distinct codes", 3),
    ("mahp_float", "mAHP@250 float", 4),
    ("mahp_binary", "mAHP@250 bin", 4),
    ("mahp_drop", "float - bin", 4),
    ("accuracy", "accuracy", 3),
    ("code_std", "code std", 2),
    ("loss", "final L_KL", 3),
)


def markdown(summary, title):
    present = [c for c in COLUMNS if c[0] in next(iter(summary.values()))]
    lines = [
        f"### {title}",
        "",
        "| setting | " + " | ".join(c[1] for c in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for name, values in summary.items():
        cells = [
            f"{values[key][0]:.{digits}f} ± {values[key][1]:.{digits}f}"
            for key, _, digits in present
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_from_json(path, title, only=None):
    """A markdown table of the per-seed rows in a --json file, in order."""
    results = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            name = row.pop("setting")
            if only and not any(name.startswith(p) for p in only):
                continue
            for key in ("part", "seed", "overrides"):
                row.pop(key, None)
            results.setdefault(name, []).append(row)
    seeds = {len(runs) for runs in results.values()}
    return markdown(summarise(results), f"{title}, {max(seeds)} seeds")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    free = sub.add_parser("free", help="free codes, L_KL alone")
    free.add_argument("--steps", type=int, default=800)
    train = sub.add_parser("train", help="Fashion-MNIST training")
    train.add_argument("--train-subset", type=int, default=30000)
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--config", default="configs/fashion_mnist.yaml")
    train.add_argument("--runs-dir", default="runs/kl_study")
    train.add_argument(
        "--losses", default="SIM-KL",
        help="comma-separated loss sets, each run per setting "
        "(default: %(default)s)",
    )
    for p in (free, train):
        p.add_argument("--seeds", type=int, default=3)
        p.add_argument(
            "--only", nargs="*", default=None,
            help="run the settings whose names start with one of these; "
            "default: all",
        )
        p.add_argument("--output", default=None, help="write the table here")
        p.add_argument(
            "--json", default=None, help="append raw per-seed results here"
        )
    table = sub.add_parser("table", help="a table from --json results")
    table.add_argument("results", help="JSON-lines file written by --json")
    table.add_argument("--title", default="Results")
    table.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.part == "table":
        print(table_from_json(args.results, args.title, args.only))
        return 0

    settings = FREE_SETTINGS if args.part == "free" else TRAIN_SETTINGS
    if args.only:
        settings = {
            name: value for name, value in settings.items()
            if any(name.startswith(prefix) for prefix in args.only)
        }
    data = None
    if args.part == "train":
        data = load_fashion_mnist(args.train_subset)
    results = {}
    loss_sets = args.losses.split(",") if args.part == "train" else [None]
    for name, setting in settings.items():
        for losses in loss_sets:
            row = name if len(loss_sets) == 1 else f"{name}: {losses}"
            runs = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                if args.part == "free":
                    run = run_free(setting, seed, steps=args.steps)
                else:
                    slug = "".join(c if c.isalnum() else "_" for c in row)
                    run = run_train(
                        setting, seed, data,
                        os.path.join(args.runs_dir, f"{slug}-seed{seed}"),
                        args.epochs, args.config, losses,
                    )
                runs.append(run)
                print(
                    f"{row} seed {seed}: "
                    + ", ".join(f"{k}={v:.4f}" for k, v in run.items())
                    + f" ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(
                            {"part": args.part, "setting": row, "seed": seed,
                             "overrides": setting, **run}) + "\n")
            results[row] = runs
    if args.part == "free":
        title = f"Free codes: L_KL alone, B x 64, Adam 1e-2, {args.steps} steps"
    else:
        title = (
            f"Fashion-MNIST, {args.epochs} epoch(s) on the first "
            f"{args.train_subset} images"
        )
    table = markdown(summarise(results), f"{title}, {args.seeds} seeds")
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`shrewd demo` (= `make demo`): the Fashion-MNIST pipeline end to end.

Fashion-MNIST ships with Debian (`dataset-fashion-mnist`), so the demo needs
no download. It runs `shrewd pipeline run --config configs/fashion_mnist.yaml`
(`pipeline.runner`): TFRecords (Beam), 1 - WUP class distances (Beam),
the configurations of the config's `pipeline:` section trained with
model.fit, the evaluation report with plots, a TF-Serving export and the
binary + ScaNN indexes of the 10k test images, then prints where the report
is and the command that serves the index. Stages already done are reused.
`--quick` runs the same stages on a small subset with a tiny encoder (CI).
"""

import time

from pipeline import runner

DEMO_CONFIG = runner.DEFAULT_CONFIG

QUICK_OVERRIDES = {
    "name": "fashion_mnist_quick",
    "pipeline.limit": 1024,
    "data.validation_subset": 256,
    "model.encoder": "cifar_resnet:8:8",
    "train.epochs": 1,
    "train.per_replica_batch_size": 128,
    "pipeline.k": 100,
    # In-process Beam: worker start-up would dominate 2k records (the full
    # demo and tests/pipeline exercise the multi-process runner).
    "pipeline.beam_options": ["--runner=FnApiRunner"],
}


def run(runs_dir="runs", quick=False, config_path=DEMO_CONFIG):
    """Runs the demo pipeline; returns 0."""
    overrides = dict(QUICK_OVERRIDES) if quick else {}
    overrides["pipeline.runs_dir"] = runs_dir
    start = time.perf_counter()
    runner.run(config_path, overrides)
    print(f"== demo done in {time.perf_counter() - start:.0f} s")
    return 0

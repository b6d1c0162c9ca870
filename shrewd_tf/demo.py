"""`shrewd demo`: SIM-KL-CLASS on the embedded Fashion-MNIST, then a table.

Fashion-MNIST ships with Debian (`dataset-fashion-mnist`), so the demo needs
no download. It trains a depth-14 CIFAR ResNet (the budget of the README
table: ~300 images/s on 2 cores) with the full SHREWD loss on the 60k
training images, evaluates 64-bit codes on the 10k test images (query =
database, query excluded) and prints the metrics table; artefacts go to
`runs/demo/` (see `trainer`). `--quick` trains on a small subset (CI).
"""

import logging
import os
import time

from shrewd_tf import config as config_lib

DEMO_CONFIG = config_lib.ExperimentConfig(
    name="fashion_mnist SIM-KL-CLASS",
    data=config_lib.DataConfig(dataset="fashion_mnist", semantics="wup"),
    model=config_lib.ModelConfig(encoder="cifar_resnet:14", code_bits=64),
    loss=config_lib.LossConfig(losses="SIM-KL-CLASS"),
    train=config_lib.TrainConfig(
        epochs=2, per_replica_batch_size=256, eval_every=1, precision="auto"
    ),
)

QUICK_OVERRIDES = {
    "data.train_subset": 2048,
    "data.test_subset": 1000,
    "data.validation_subset": 500,
    "model.encoder": "cifar_resnet:8:8",
    "train.epochs": 1,
    "train.per_replica_batch_size": 128,
}


def run(output_dir="runs/demo", quick=False):
    """Trains and evaluates the demo model; prints the table. Returns 0."""
    from shrewd_tf import evaluation
    from shrewd_tf import trainer

    logging.getLogger().setLevel(logging.INFO)
    overrides = dict(QUICK_OVERRIDES) if quick else {}
    overrides["train.output_dir"] = output_dir
    config = DEMO_CONFIG.with_overrides(overrides)
    print(f"== shrewd demo: {config.name} -> {output_dir}", flush=True)
    start = time.perf_counter()
    result = trainer.train(config)
    print()
    print(evaluation.markdown_table({config.name: result.metrics}))
    print(
        f"== done in {time.perf_counter() - start:.0f} s; metrics in "
        f"{os.path.join(output_dir, 'metrics.md')}; model in "
        f"{os.path.join(output_dir, 'model.keras')}"
    )
    return 0

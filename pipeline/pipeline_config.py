"""The pipeline's configuration: an experiment plus a `pipeline:` section.

A pipeline config file is an `ExperimentConfig` file (name, data, model,
loss, train: what `shrewd train --config` reads) with one more section,
`pipeline:`, read into `PipelineConfig`. The `data` section describes the
source (`dataset`, `data_dir`, subsets, semantics); the pipeline turns it
into TFRecords first, and the trainer then reads those.

Example (configs/fashion_mnist.yaml):

    name: fashion_mnist
    data: {dataset: fashion_mnist, semantics: wup}
    model: {encoder: "cifar_resnet:14", code_bits: 64}
    loss: {losses: SIM-KL-CLASS}
    train: {epochs: 2}
    pipeline:
      configurations: [SIM-KL-CLASS, CLASS]
      index_kinds: [binary, scann]
"""

import dataclasses

import yaml

from shrewd_tf import config as config_lib
from shrewd_tf import contract

PIPELINE_SECTION = "pipeline"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Settings of the stages beyond the experiment's.

    Attributes:
        runs_dir: stages write under `<runs_dir>/<experiment name>/`.
        source: what ExampleGen reads: "fashion_mnist" (Debian IDX files),
            "tfds:<name>" (a prepared tfds data_dir) or
            "captions:<file>" (image folder + captions file).
        image_size: (H, W) images are resized to (None: native size).
        records_per_shard: TFRecord shard size.
        limit: ExampleGen keeps only the first N records of each split
            (fashion_mnist; None: all), for quick runs and CI.
        configurations: loss sets trained and compared in the report; the
            first is exported and indexed.
        text_encoder: sentence encoder for "bert" semantics and caption
            embeddings (None: the packaged all-MiniLM-L6-v2).
        k: retrieval cut-off of the evaluator.
        model_name: the exported model's name (TF Serving `model_name`).
        index_kinds: indexes built over the database: "binary", "scann".
        binary_method: BinaryHammingIndex method: "auto" (flat up to 1M
            codes, else ivf when its recall@10 measured at build reaches
            0.99), "flat", "mih", "ivf" or "hnsw".
        database_split: the split encoded into the index.
        beam_options: pipeline options of every Beam stage, e.g.
            ["--runner=DataflowRunner", "--project=...", ...].
    """

    runs_dir: str = "runs"
    source: str = "fashion_mnist"
    image_size: tuple[int, int] | None = None
    records_per_shard: int = 10_000
    limit: int | None = None
    configurations: tuple[str, ...] = ("SIM-KL-CLASS",)
    text_encoder: str | None = None
    k: int = 250
    model_name: str = "shrewd"
    index_kinds: tuple[str, ...] = contract.INDEX_KINDS
    binary_method: str = "auto"
    database_split: str = "test"
    beam_options: tuple[str, ...] = (
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )

    def __post_init__(self):
        unknown = [c for c in self.configurations if c not in config_lib.LOSS_SETS]
        if not self.configurations or unknown:
            raise ValueError(
                f"pipeline.configurations must be loss sets of "
                f"{sorted(config_lib.LOSS_SETS)}. Received: "
                f"configurations={self.configurations}"
            )
        bad = [k for k in self.index_kinds if k not in contract.INDEX_KINDS]
        if bad:
            raise ValueError(
                "pipeline.index_kinds must be "
                f"{' and/or '.join(map(repr, contract.INDEX_KINDS))}. "
                f"Received: index_kinds={self.index_kinds}"
            )


def load(path, overrides=None):
    """Reads (ExperimentConfig, PipelineConfig) from a YAML/JSON file.

    Args:
        path: the config file.
        overrides: dotted keys, e.g. {"train.epochs": 1,
            "pipeline.configurations": ["CLASS"]}.
    """
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    return from_dict(values, overrides)


def from_dict(values, overrides=None):
    """(ExperimentConfig, PipelineConfig) from nested dicts + overrides."""
    values = dict(values)
    section = dict(values.pop(PIPELINE_SECTION, None) or {})
    experiment_overrides = {}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head == PIPELINE_SECTION:
            section[rest] = value
        else:
            experiment_overrides[key] = value
    experiment = config_lib.ExperimentConfig.from_dict(values)
    if experiment_overrides:
        experiment = experiment.with_overrides(experiment_overrides)
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(
            f"Unknown key in config section 'pipeline'; expected one of "
            f"{sorted(known)}. Received: {unknown}"
        )
    section = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    return experiment, PipelineConfig(**section)

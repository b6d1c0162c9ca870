"""Experiment configuration as frozen dataclasses.

A run is described by one `ExperimentConfig` (data, model, losses, training).
Load it from JSON/YAML with `ExperimentConfig.from_file`, apply command-line
overrides with `with_overrides`, and write it as `config.json` next to every
checkpoint and export with `save_json`.

Example:
    config = ExperimentConfig.from_file("configs/fashion_mnist.yaml")
    config = config.with_overrides({"train.epochs": 3, "loss.losses": "SIM"})
"""

import dataclasses
import json
from dataclasses import dataclass
from dataclasses import field

from shrewd_tf.io import write_json_atomically

# The paper's ablations (Tables 2 and 3): which terms of eq. 1 are on.
LOSS_SETS = {
    "CLASS": ("class",),
    "SIM": ("sim",),
    "KL-CLASS": ("kl", "class"),
    "SIM-KL": ("sim", "kl"),
    "SIM-CLASS": ("sim", "class"),
    "SIM-KL-CLASS": ("sim", "kl", "class"),
    # Caption supervision: regression to target embeddings instead of CE.
    "SIM-KL-REG": ("sim", "kl", "reg"),
    "REG": ("reg",),
}


# Named bundles of overrides (`shrewd train --preset NAME`,
# `ExperimentConfig.with_preset`). "paper" is eq. 4 as the paper states it:
# a linear code head, the joint kNN estimate in all code_bits dimensions on a
# Beta(0.1, 0.1) sample of B codes, lambda1 = 0.01 on eq. 4 as written. The
# defaults differ from it; docs/kl_binarisation.md says how and why.
PRESETS = {
    "paper": {
        "model.code_activation": "linear",
        "model.code_gain": 1.0,
        "loss.kl_block_bits": None,
        "loss.kl_scale": "paper",
        "loss.kl_target_multiple": 1,
        "loss.kl_warmup_epochs": 0.0,
        "loss.kl_k": 1,
        "loss.kl_target": "beta",
        "loss.kl_alpha": 0.1,
        "loss.kl_weight": 0.01,
        "loss.class_weight": 0.01,
    },
}


# Sections of a config file that belong to other readers: the pipeline's
# `pipeline:` section (pipeline.pipeline_config) rides along in the same file.
IGNORED_SECTIONS = ("pipeline",)


@dataclass(frozen=True)
class DataConfig:
    """Where images and targets come from.

    Attributes:
        dataset: "fashion_mnist" (Debian IDX files), "cifar100",
            "imagenet2012" (tfds, prepared under `data_dir`) or "tfrecords"
            (a directory written by `python -m pipeline.make_tfrecords`).
        data_dir: tfds data_dir, IDX directory, or the TFRecord directory
            (with `dataset_info.json`); None uses the default.
        tfrecord_pattern: not read (kept for old configs; setting it is an
            error): dataset="tfrecords" reads the shards that
            `dataset_info.json` in `data_dir` describes.
        image_size: resize images to (H, W); None keeps the native size.
        train_subset: use only the first N training images (None: all).
        test_subset: use only the first N test images (None: all).
        validation_subset: images of the test split the retrieval callback
            evaluates on (also the query/database set, query excluded).
        augment: random flips and +-15 % shifts (the CIFAR augmentation).
        holdout_classes: class ids removed from training, for zero-shot.
        semantics: target distances: "wup" (1 - Wu-Palmer on WordNet),
            "lcs" (LCS height on `hierarchy_file`), "bert" (cosine distance
            of sentence embeddings of WordNet definitions), "captions"
            (1 - cosine between the records' caption embeddings; no class
            distances, dataset="tfrecords" only).
        hierarchy_file: Barz & Denzler `parent child` edge list for "lcs".
        class_names_file: `id name` lines mapping tree nodes to class ids.
        class_distances_file: a precomputed C x C class-distance matrix
            (.npy, label order, e.g. from `python -m pipeline.label_distances`)
            used instead of computing `semantics` (not for "captions").
        class_synsets_file: WordNet synset names ("dog.n.01"), one per line
            in label order, for "wup"/"bert" on classes that are neither a
            known dataset nor named by synsets.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    tfrecord_pattern: str | None = None
    image_size: tuple[int, int] | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    validation_subset: int = 2000
    augment: bool = False
    holdout_classes: tuple[int, ...] = ()
    semantics: str = "wup"
    hierarchy_file: str | None = None
    class_names_file: str | None = None
    class_synsets_file: str | None = None
    class_distances_file: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and its heads.

    Attributes:
        encoder: "resnet20", "resnet110w", "resnet50" or "cifar_resnet:<depth>".
        code_bits: code length d (the code head's width).
        weight_decay: Keras L2 factor on conv and dense kernels (the loss
            gets weight_decay * sum(w**2)). PyTorch's coupled
            `weight_decay=1e-4` (the paper's setting) is L2 factor 5e-5.
        regression_dim: width of the REG head; must equal the caption
            embedding size E (None: E of the data when the loss set has
            REG, no head otherwise).
        code_activation: the code head's range (`models.code_head_activation`):
            "batchnorm_sigmoid" (default: sigmoid(gain BatchNorm(h))),
            "sigmoid", "tanh" ((1 + tanh) / 2) or "linear" (the paper's
            unbounded head; `PRESETS["paper"]`). docs/kl_binarisation.md
            shows why the default is bounded.
        code_gain: fixed gain inside the bounded heads, z = sigmoid(gain h)
            (default 8: docs/kl_binarisation.md).
    """

    encoder: str = "resnet20"
    code_bits: int = 64
    weight_decay: float = 2e-4
    regression_dim: int | None = None
    code_activation: str = "batchnorm_sigmoid"
    code_gain: float = 8.0


@dataclass(frozen=True)
class LossConfig:
    """Eq. 1: L = L_sim + lambda1 L_KL + lambda2 L_cls.

    Attributes:
        losses: one of LOSS_SETS ("SIM-KL-CLASS", "CLASS", ...).
        kl_weight: lambda1.
        class_weight: lambda2 (also the REG weight).
        gamma, rho: the similarity weight w = gamma^rho / (gamma + d)^rho.
        kl_k: the k of the kNN KL estimate.
        kl_target: target distribution of the KL term ("beta", ...).
        kl_alpha: Beta(alpha, alpha) per bit; small is near-binary
            (default 0.02: 96 % of its mass within 0.1 of {0, 1}; the
            paper's 0.1 has 81 %).
        kl_block_bits: estimate the KL per block of this many bits (a
            divisor of code_bits; `shrewd_tf.ops.empirical_kl`), or None for
            the paper's joint estimate in code_bits dimensions.
        kl_scale: "paper" (eq. 4 as written) or "wkv" (times d plus the
            Wang-Kulkarni-Verdu constant: nats).
        kl_target_multiple: target sample size m as a multiple of B.
        kl_warmup_epochs: ramp lambda1 linearly from 0 over this many
            epochs (0: none, the paper; docs/kl_binarisation.md).
        cross_replica: gather codes across replicas before forming pairs
            and neighbours (True) or use each replica's pairs only.
    """

    losses: str = "SIM-KL-CLASS"
    kl_weight: float = 0.01
    class_weight: float = 0.01
    gamma: float = 0.1
    rho: float = 2.0
    kl_k: int = 1
    kl_target: str = "beta"
    kl_alpha: float = 0.02
    kl_block_bits: int | None = None
    kl_scale: str = "paper"
    kl_target_multiple: int = 1
    kl_warmup_epochs: float = 0.0
    cross_replica: bool = False

    @property
    def terms(self):
        """The active loss terms, e.g. ("sim", "kl", "class")."""
        try:
            return LOSS_SETS[self.losses]
        except KeyError:
            raise ValueError(
                f"Unknown loss set; expected one of {sorted(LOSS_SETS)}. "
                f"Received: losses={self.losses!r}"
            ) from None


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, distribution and bookkeeping.

    Attributes:
        epochs: passes over the training set.
        per_replica_batch_size: examples per replica per step; the global
            batch is this times `strategy.num_replicas_in_sync`.
        optimizer: "adam" (CIFAR setting: 5e-4, weight decay 1e-4) or
            "sgd" (ImageNet setting: Nesterov, 0.05 x replicas, step decay).
        learning_rate: base rate; SGD scales it by the replica count.
        weight_decay: decoupled (AdamW-style) weight decay of the optimizer,
            on top of the model's L2 (0: none, the default).
        momentum: SGD momentum (Nesterov).
        lr_decay_epochs: multiply the rate by `lr_decay_factor` every this
            many epochs (0: constant rate).
        lr_decay_factor: the step-decay factor.
        strategy: "auto", "default", "mirrored", "multi_worker" or
            "virtual_cpus:<n>" (n logical CPUs, for tests).
        precision: "auto" (mixed_float16 on GPU, float32 on CPU), "float32",
            "mixed_float16" or "mixed_bfloat16".
        jit_compile: XLA-compile the train step ("auto": Keras decides).
        seed: seeds data order, initialisation and the KL target sampler.
        output_dir: checkpoints, logs, config.json and metrics go here.
        eval_every: run the retrieval callback every N epochs (0: never).
        steps_per_epoch: cap on steps per epoch (None: the whole set).
    """

    epochs: int = 10
    per_replica_batch_size: int = 256
    optimizer: str = "adam"
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_decay_epochs: int = 0
    lr_decay_factor: float = 0.1
    strategy: str = "auto"
    precision: str = "auto"
    jit_compile: str = "auto"
    seed: int = 0
    output_dir: str = "runs/default"
    eval_every: int = 1
    steps_per_epoch: int | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run.

    Attributes:
        name: a label for logs and tables.
        data, model, loss, train: the sections above.
    """

    name: str = "fashion_mnist"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # === Serialisation ===

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Builds a config from nested dicts; unknown keys raise ValueError."""
        values = dict(values or {})
        sections = {
            "data": DataConfig,
            "model": ModelConfig,
            "loss": LossConfig,
            "train": TrainConfig,
        }
        kwargs = {}
        for key, value in values.items():
            if key in sections:
                kwargs[key] = _build_section(sections[key], value, key)
            elif key == "name":
                kwargs[key] = str(value)
            elif key in IGNORED_SECTIONS:
                continue  # read by other tools (`shrewd pipeline run`)
            else:
                raise ValueError(
                    f"Unknown config section; expected name, "
                    f"{', '.join(sections)}. Received: {key!r}"
                )
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path):
        """Reads a JSON (.json) or YAML (.yaml/.yml) config file (any file
        system, `shrewd_tf.io.read_text`)."""
        from shrewd_tf.io import read_text

        text = read_text(path)
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
        return cls.from_dict(values)

    def with_overrides(self, overrides):
        """Returns a copy with dotted-key overrides, e.g. {"train.epochs": 2}."""
        values = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if not key:
                values[section] = value
                continue
            if section not in values or not isinstance(values[section], dict):
                raise ValueError(f"Unknown config key. Received: {dotted!r}")
            values[section][key] = value
        return type(self).from_dict(values)

    def with_preset(self, name):
        """Returns a copy with the overrides of `PRESETS[name]` applied."""
        try:
            overrides = PRESETS[name]
        except KeyError:
            raise ValueError(
                f"Unknown preset; expected one of {sorted(PRESETS)}. "
                f"Received: preset={name!r}"
            ) from None
        return self.with_overrides(overrides)

    def save_json(self, path):
        """Writes the config as JSON, atomically (`shrewd_tf.io`)."""
        write_json_atomically(path, self.to_dict())


def _build_section(section_cls, values, section_name):
    known = {f.name: f for f in dataclasses.fields(section_cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in known:
            raise ValueError(
                f"Unknown key in config section {section_name!r}; expected "
                f"one of {sorted(known)}. Received: {key!r}"
            )
        # JSON and YAML give lists where the dataclass holds tuples.
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return section_cls(**kwargs)

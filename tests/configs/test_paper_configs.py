"""The paper's three training configs state the paper's settings and
start training on synthetic data of their shape (issue 12).

Each config is loaded with `ExperimentConfig.from_file`. The fast tests
check the settings the paper states (sections 4.1-4.3), the optimiser the
trainer builds from them (`objective.make_optimizer`, which
`compile_shrewd_model` calls) and that precision "auto" resolves to
float32 on CPU. The `large` tests train each config for 2 steps with only
what must shrink overridden (epochs, steps, batch, subsets, the data
location; the encoder, optimiser, schedule, loss and precision are the
config's) and check finite losses, float32 on CPU and model.keras written.
Each takes 3-4 minutes on 2 busy CPU cores (ResNet-110w / ResNet-50 at
224², built, traced, saved and evaluated), hence `large`.
"""

import math
import os

import keras
import numpy as np
import pytest

from shrewd_tf import config as config_lib
from shrewd_tf.training import distribution
from shrewd_tf.training import objective
from shrewd_tf.training import trainer
from tests.paths import REPO_ROOT
from tests.support import sources

SHRINK = {
    "train.epochs": 1,
    "train.steps_per_epoch": 2,
    "train.per_replica_batch_size": 2,
    "data.validation_subset": 4,
    "data.test_subset": 4,
}


def load(name):
    return config_lib.ExperimentConfig.from_file(
        os.path.join(REPO_ROOT, "configs", f"{name}.yaml")
    )


def shrunk(name, tmp_path, **overrides):
    return load(name).with_overrides({
        **SHRINK, "train.output_dir": str(tmp_path / "run"), **overrides,
    })


def rate_at(optimizer, step):
    rate = optimizer._learning_rate  # pylint: disable=protected-access
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(rate(step))
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


# === The settings the paper states ===


def test_cifar100_config_states_section_4_1():
    # ResNet-110w, 64 bits, Adam 5e-4, 1e-4 weight decay (PyTorch's
    # coupled decay = Keras L2 5e-5), batch 512, 500 epochs, 1 - WUP.
    config = load("cifar100")
    assert config.data.dataset == "cifar100"
    assert config.data.semantics == "wup"
    assert config.model.encoder == "resnet110w"
    assert config.model.code_bits == 64
    assert config.model.weight_decay == 5e-5
    assert config.train.weight_decay == 0.0
    assert config.loss.losses == "SIM-KL-CLASS"
    assert (config.loss.kl_weight, config.loss.class_weight) == (0.01, 0.01)
    assert config.train.per_replica_batch_size == 512
    assert config.train.epochs == 500
    optimizer = objective.make_optimizer(config.train, 1, steps_per_epoch=98)
    assert type(optimizer) is keras.optimizers.Adam
    assert np.isclose(rate_at(optimizer, 0), 5e-4)
    assert np.isclose(rate_at(optimizer, 98 * 499), 5e-4)  # no decay


@pytest.mark.parametrize("replicas", [1, 32])
def test_imagenet2012_config_states_section_4_2(replicas):
    # ResNet-50 at 224², SGD + Nesterov at 0.05 x GPUs, x0.1 every 100
    # epochs, 320 epochs, 1e-4 weight decay, batch 256, 1 - WUP.
    config = load("imagenet2012")
    assert config.data.dataset == "imagenet2012"
    assert tuple(config.data.image_size) == (224, 224)
    assert config.model.encoder == "resnet50"
    assert config.model.weight_decay == 5e-5
    assert config.train.weight_decay == 0.0
    assert config.loss.losses == "SIM-KL-CLASS"
    assert config.train.per_replica_batch_size == 256
    assert config.train.epochs == 320
    steps = 10
    optimizer = objective.make_optimizer(config.train, replicas, steps)
    assert type(optimizer) is keras.optimizers.SGD
    assert optimizer.nesterov
    assert np.isclose(float(optimizer.momentum), 0.9)
    rate = 0.05 * replicas
    assert np.isclose(rate_at(optimizer, 0), rate)
    assert np.isclose(rate_at(optimizer, 100 * steps - 1), rate)
    assert np.isclose(rate_at(optimizer, 100 * steps), rate * 0.1)
    assert np.isclose(rate_at(optimizer, 200 * steps), rate * 0.01)
    assert np.isclose(rate_at(optimizer, 300 * steps), rate * 0.001)


def test_captions_config_states_section_4_3():
    # The ImageNet model and settings, but Adam 3e-4 for 120 epochs;
    # SIM-KL-REG on caption-embedding distances.
    config = load("captions")
    assert config.data.dataset == "tfrecords"
    assert config.data.semantics == "captions"
    assert tuple(config.data.image_size) == (224, 224)
    assert config.model.encoder == "resnet50"
    assert config.model.code_bits == 64
    assert config.model.weight_decay == 5e-5
    assert config.loss.losses == "SIM-KL-REG"
    assert config.train.per_replica_batch_size == 256
    assert config.train.epochs == 120
    optimizer = objective.make_optimizer(config.train, 4, steps_per_epoch=10)
    assert type(optimizer) is keras.optimizers.Adam
    assert np.isclose(rate_at(optimizer, 0), 3e-4)  # not scaled
    assert np.isclose(rate_at(optimizer, 1000), 3e-4)


@pytest.mark.parametrize("name", ["cifar100", "imagenet2012", "captions"])
def test_mixed_precision_only_on_gpu(name, restore_policy):
    del restore_policy
    config = load(name)
    assert config.train.precision == "auto"
    assert config.train.jit_compile == "auto"
    import tensorflow as tf

    expected = ("mixed_float16" if tf.config.list_physical_devices("GPU")
                else "float32")
    assert distribution.set_precision_policy(config.train.precision) == expected
    assert keras.mixed_precision.global_policy().name == expected


# === A few training steps on data of each config's shape ===


def check_run(result):
    losses = {k: v for k, v in result.history.items() if k.endswith("loss")}
    assert "loss" in losses, result.history
    for key, values in losses.items():
        assert len(values) == 1 and math.isfinite(values[0]), (key, values)
    assert os.path.exists(os.path.join(result.output_dir, "model.keras"))
    # "auto" is mixed_float16 only on a GPU; these tests run on CPU.
    assert result.metrics["precision"] == "float32"


@pytest.mark.large
@pytest.mark.parametrize("name,shape,classes", [
    ("cifar100", (32, 32, 3), 100),
    # The mock's JPEGs have random sizes; the config resizes them to 224².
    ("imagenet2012", (224, 224, 3), 1000),
])
def test_tfds_config_trains_on_data_of_its_shape(tmp_path, restore_policy,
                                                  name, shape, classes):
    import tensorflow_datasets as tfds

    (tmp_path / "tfds").mkdir()
    config = shrunk(name, tmp_path,
                    **{"data.data_dir": str(tmp_path / "tfds")})
    with tfds.testing.mock_data(num_examples=8):
        result = trainer.train(config, verbose=0)
    check_run(result)
    assert result.model.input_shape[1:] == shape
    assert result.model.output["logits"].shape[-1] == classes
    assert result.model.output["code"].shape[-1] == 64


@pytest.mark.large
def test_captions_config_trains_on_unlabelled_caption_records(
        tmp_path, restore_policy):
    directory = tmp_path / "records"
    sources.write_tfrecord_dir(
        directory, train=8, test=4, size=32, channels=3, labelled=False,
        embedding_dim=16, shards=1,
    )
    config = shrunk("captions", tmp_path,
                    **{"data.data_dir": str(directory)})
    result = trainer.train(config, verbose=0)
    check_run(result)
    assert result.model.input_shape[1:] == (224, 224, 3)
    assert sorted(result.model.output) == ["code", "embedding"]

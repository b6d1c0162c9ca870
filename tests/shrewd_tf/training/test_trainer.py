import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from shrewd_tf import config as config_lib
from shrewd_tf.training import trainer
from tests.support import sources as helpers


def tiny_config(tmp_path, **overrides):
    values = {
        "model.encoder": "cifar_resnet:8:4",
        "model.code_bits": 16,
        "train.epochs": 2,
        "train.per_replica_batch_size": 32,
        "train.output_dir": str(tmp_path / "run"),
        "data.validation_subset": 64,
        "train.eval_every": 1,
    }
    values.update(overrides)
    return config_lib.ExperimentConfig(name="tiny").with_overrides(values)


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_train_writes_artefacts_and_reloads(tmp_path):
    data = helpers.make_data()
    result = trainer.train(tiny_config(tmp_path), data=data, verbose=0)
    out = result.output_dir
    for name in ("config.json", "model.keras", "metrics.json", "metrics.md",
                 "history.csv", "preprocessing.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        "epoch-001.weights.h5", "epoch-002.weights.h5"
    ]
    # BackupAndRestore cleans up after a completed run.
    assert not os.path.exists(os.path.join(out, "backup"))
    saved = config_lib.ExperimentConfig.from_file(os.path.join(out, "config.json"))
    assert saved.model.code_bits == 16
    # Each loss term and the retrieval metrics are logged per epoch.
    for key in ("code_loss", "code_kl_loss", "logits_loss", "val_mahp_binary",
                "val_binary_entropy"):
        assert len(result.history[key]) == 2, key
        assert np.all(np.isfinite(result.history[key])), key
    metrics = json.load(open(os.path.join(out, "metrics.json")))["tiny"]
    assert 0.0 <= metrics["mahp_binary"] <= 1.0
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # The saved model reproduces the codes.
    reloaded = keras.models.load_model(os.path.join(out, "model.keras"))
    images = next(iter(data.eval_dataset(limit=8)))[0]
    np.testing.assert_allclose(
        reloaded(images)["code"], result.model(images)["code"], atol=1e-5
    )
    assert result.test_outputs["code"].shape == (len(data.test_labels), 16)
    # preprocessing.json: the model's input is (x - mean) / std of uint8 x.
    payload = json.load(open(os.path.join(out, "preprocessing.json")))
    assert payload["image_shape"] == [12, 12, 1]
    pixels = data.train.images.reshape(-1, 1).astype(np.float64)
    np.testing.assert_allclose(payload["mean"], pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(payload["std"], pixels.std(0), rtol=1e-5)
    expected = (data.test.images[:8] - np.array(payload["mean"])) / np.array(
        payload["std"]
    )
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)


class _KillAt(keras.callbacks.Callback):
    """Simulates a killed run: raises in the middle of an epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("killed")


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_killed_run_resumes_at_the_last_finished_epoch(tmp_path):
    data = helpers.make_data()
    cfg = tiny_config(tmp_path, **{"train.epochs": 3, "train.eval_every": 0})
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, data=data, extra_callbacks=[_KillAt(1, 2)], verbose=0)
    backup = os.path.join(cfg.train.output_dir, "backup")
    assert os.path.isdir(backup)
    recorder = _EpochRecorder()
    result = trainer.train(cfg, data=data, extra_callbacks=[recorder], verbose=0)
    # Epoch 0 finished before the kill; the rerun starts at epoch 1.
    assert recorder.epochs == [1, 2]
    assert len(result.history["loss"]) == 2
    assert not os.path.isdir(backup)


@pytest.mark.parametrize(
    "policy",
    # bfloat16 is a TPU policy; the GPU one (float16) runs by default.
    ["mixed_float16", pytest.param("mixed_bfloat16", marks=pytest.mark.large)],
)
def test_mixed_precision_trains_with_float32_losses(tmp_path, policy, float32_policy):
    data = helpers.make_data(train=128, test=64)
    cfg = tiny_config(
        tmp_path,
        **{"train.precision": policy, "train.epochs": 1,
           "train.steps_per_epoch": 2, "train.eval_every": 0},
    )
    result = trainer.train(cfg, data=data, verbose=0)
    assert result.metrics["precision"] == policy
    for key in ("code_loss", "code_kl_loss", "logits_loss"):
        assert np.isfinite(result.history[key][0]), key
    compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    conv = next(l for l in result.model.encoder.layers if "conv" in l.name)
    assert conv.compute_dtype == compute
    assert result.test_outputs["code"].dtype == np.float32


def test_batch_larger_than_data_is_refused(tmp_path):
    data = helpers.make_data(train=16, test=32)
    with pytest.raises(ValueError, match="per_replica_batch_size=32"):
        trainer.train(tiny_config(tmp_path), data=data, verbose=0)


def test_parse_encoder():
    assert trainer.parse_encoder("resnet20") == ("resnet20", {})
    assert trainer.parse_encoder("cifar_resnet:8:4") == (
        "cifar_resnet", {"depth": 8, "base_filters": 4}
    )


@pytest.mark.parametrize("cross_replica", [False, True])
def test_train_under_mirrored_strategy(tmp_path, cross_replica):
    data = helpers.make_data(train=128, test=64)
    cfg = tiny_config(
        tmp_path,
        **{"train.strategy": "virtual_cpus:2", "loss.cross_replica": cross_replica,
           "train.per_replica_batch_size": 16, "train.epochs": 1,
           "train.steps_per_epoch": 3, "train.eval_every": 0},
    )
    result = trainer.train(cfg, data=data, verbose=0)
    assert result.metrics["replicas"] == 2
    for key in ("code_loss", "code_kl_loss", "logits_loss"):
        assert np.isfinite(result.history[key][0]), key


# === From TFRecord directories ===


def tfrecord_run_config(tmp_path, directory, **overrides):
    values = {
        "data.dataset": "tfrecords",
        "data.data_dir": str(directory),
        "train.epochs": 1,
        "train.steps_per_epoch": 3,
        "model.code_bits": 16,
        # XLA compiling the step costs more than the 3 steps on CPU.
        "train.jit_compile": "false",
    }
    values.update(overrides)
    return tiny_config(tmp_path, **values)


CAPTION_METRICS = (
    "mahp_caption_float", "mahp_caption_binary", "kendall_tau_float",
    "kendall_tau_binary",
)


def test_sim_kl_reg_trains_on_unlabelled_captions(tmp_path):
    """The paper's Conceptual Captions setting end to end: no labels, SIM on
    caption-embedding distances, KL, REG regressing the embeddings."""
    from shrewd_tf.evaluation import evaluate as evaluation

    directory = tmp_path / "records"
    helpers.write_tfrecord_dir(directory, labelled=False, train=128, test=64)
    cfg = tfrecord_run_config(
        tmp_path, directory,
        **{"data.semantics": "captions", "loss.losses": "SIM-KL-REG"},
    )
    result = trainer.train(cfg, verbose=0)
    assert sorted(result.model.output) == ["code", "embedding"]
    assert result.model.output["embedding"].shape[-1] == 16  # = E
    for key in ("code_loss", "code_kl_loss", "embedding_loss",
                "val_mahp_caption_binary", "val_kendall_tau_float"):
        assert np.isfinite(result.history[key][0]), key
    saved = json.load(open(os.path.join(result.output_dir, "metrics.json")))
    metrics = saved["tiny"]
    for key in CAPTION_METRICS + ("binary_entropy",):
        assert np.isfinite(metrics[key]), key
    assert 0.0 <= metrics["mahp_caption_binary"] <= 1.0
    assert -1.0 <= metrics["kendall_tau_float"] <= 1.0
    for key in ("accuracy", "map_binary", "mahp_float"):
        assert key not in metrics
    assert "caption mAHP@250 float" in open(
        os.path.join(result.output_dir, "metrics.md")
    ).read()
    preprocessing = json.load(
        open(os.path.join(result.output_dir, "preprocessing.json"))
    )
    assert preprocessing["image_shape"] == [8, 8, 1]
    # Re-evaluating the saved run gives the same caption metrics.
    again = evaluation.evaluate_run(
        result.output_dir, output_dir=str(tmp_path / "eval")
    )
    for key in CAPTION_METRICS:
        assert again[key] == pytest.approx(metrics[key], abs=1e-4), key


def test_class_losses_on_unlabelled_records_are_refused(tmp_path):
    directory = tmp_path / "records"
    helpers.write_tfrecord_dir(
        directory, labelled=False, train=32, test=16, size=4
    )
    cfg = tfrecord_run_config(
        tmp_path, directory,
        **{"data.semantics": "captions", "loss.losses": "SIM-KL-CLASS"},
    )
    with pytest.raises(ValueError, match="'SIM-KL-CLASS' includes CLASS"):
        trainer.train(cfg, verbose=0)
    assert not os.path.exists(cfg.train.output_dir)


def write_tree(tmp_path):
    """A 2-level tree over the 4 helper classes: {a, b} and {c, d}."""
    hierarchy = tmp_path / "tree.txt"
    hierarchy.write_text("r ab\nr cd\nab a\nab b\ncd c\ncd d\n")
    names = tmp_path / "names.txt"
    names.write_text("a a\nb b\nc c\nd d\n")
    return {"data.semantics": "lcs", "data.hierarchy_file": str(hierarchy),
            "data.class_names_file": str(names)}


def test_labelled_tfrecords_train_with_class_losses(tmp_path):
    directory = tmp_path / "records"
    helpers.write_tfrecord_dir(directory, train=128, test=64)
    cfg = tfrecord_run_config(
        tmp_path, directory,
        **{"loss.losses": "SIM-KL-CLASS", **write_tree(tmp_path)},
    )
    result = trainer.train(cfg, verbose=0)
    assert "logits" in result.model.output
    # SIM on the LCS class distances of the labels, CLASS attached.
    for key in ("code_loss", "code_kl_loss", "logits_loss", "val_mahp_binary"):
        assert np.isfinite(result.history[key][0]), key
    metrics = json.load(
        open(os.path.join(result.output_dir, "metrics.json"))
    )["tiny"]
    for key in ("mahp_float", "mahp_binary", "map_binary", "accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # The records carry captions, so the caption metrics come too.
    for key in CAPTION_METRICS:
        assert np.isfinite(metrics[key]), key


def test_validation_callback_with_bert_distances_above_one(tmp_path):
    """semantics="bert": cosine distances up to 2. The trainer's validation
    callback must give finite mAHP with s = max(0, cos) and log the code
    statistics of the codes it computed."""
    from shrewd_tf.evaluation import metrics
    from shrewd_tf.semantics import distances as semantics

    # cos: (0,1) = -1, (0,2) = .6, (0,3) = 0, (1,2) = -.6, (1,3) = 0,
    # (2,3) = .8; s = max(0, cos) written out by hand.
    embeddings = np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    similarity = np.array(
        [[1, 0, 0.6, 0], [0, 1, 0, 0], [0.6, 0, 1, 0.8], [0, 0, 0.8, 1]]
    )
    data = dataclasses.replace(
        helpers.make_data(train=8, test=40),
        class_distances=semantics.embedding_distance_matrix(embeddings),
    )
    assert data.class_distances.max() == pytest.approx(2.0)
    config = tiny_config(tmp_path).with_overrides({"train.eval_every": 1})
    callback = trainer._validation_callback(config, data)
    model = keras.Sequential([
        keras.Input(data.input_shape), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="sigmoid"),
    ])
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    codes = np.asarray(model.predict(data.eval_dataset(),
                                     verbose=0))
    labels = data.test_labels
    expected = metrics.mean_average_hierarchical_precision(
        codes, labels, codes, labels, similarity, k=39, exclude_self=True
    )
    assert logs["val_mahp_float"] == pytest.approx(expected, rel=1e-6)
    near = np.minimum(np.abs(codes), np.abs(codes - 1)) <= 0.1
    assert logs["val_near_binary"] == pytest.approx(near.mean())
    balance = np.abs((codes > 0.5).mean(axis=0) - 0.5).mean()
    assert logs["val_bit_balance_deviation"] == pytest.approx(balance)
    assert np.isfinite(logs["val_binary_entropy_bits"])

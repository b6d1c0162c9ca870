import dataclasses
import json

import numpy as np
import pytest

from shrewd_tf import config as config_lib
from shrewd_tf.evaluation import evaluate as evaluation
from shrewd_tf.evaluation import experiments
from shrewd_tf.data import pipelines as inputs
from tests.support import sources as helpers


def base_config(tmp_path):
    return config_lib.ExperimentConfig(name="tiny").with_overrides(
        {
            "model.encoder": "cifar_resnet:8:4",
            "model.code_bits": 16,
            "train.epochs": 1,
            "train.per_replica_batch_size": 32,
            "train.eval_every": 0,
        }
    )


def test_one_hot_codes_are_the_argmax():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        experiments.one_hot_codes(logits), [[0, 1, 0], [1, 0, 0]]
    )


def test_ablation_rows_and_table(tmp_path):
    data = helpers.make_data(train=128, test=64)
    rows = experiments.run_ablation(
        base_config(tmp_path), str(tmp_path), loss_sets=("CLASS", "SIM-KL"),
        data=data, verbose=0,
    )
    assert list(rows) == [
        "CLASS", experiments.ONE_HOT_BASELINE, "SIM-KL",
        experiments.RANDOM_REFERENCE,
    ]
    # The one-hot "code" has as many unique codes as predicted classes and
    # the CLASS model's accuracy.
    baseline = rows[experiments.ONE_HOT_BASELINE]
    assert baseline["unique_codes"] <= data.num_classes
    assert baseline["accuracy"] == rows["CLASS"]["accuracy"]
    for name in ("CLASS", "SIM-KL"):
        assert (tmp_path / name / "model.keras").exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == set(rows)
    assert "| SIM-KL |" in (tmp_path / "metrics.md").read_text()


def test_zero_shot_trains_without_the_held_out_classes(tmp_path, monkeypatch):
    data = helpers.make_data(train=160, test=64)
    seen = {}

    def fake_load(data_config):
        seen["holdout"] = data_config.holdout_classes
        keep = ~np.isin(data.train.labels, data_config.holdout_classes)
        return dataclasses.replace(
            data, holdout_classes=tuple(data_config.holdout_classes),
            train_count=int(keep.sum()))

    monkeypatch.setattr(inputs, "load_experiment_data", fake_load)
    flat_hits = evaluation.zero_shot_flat_hits

    def spy(*args, **kwargs):
        seen["database"] = kwargs["database"]
        return flat_hits(*args, **kwargs)

    monkeypatch.setattr(evaluation, "zero_shot_flat_hits", spy)
    rows = experiments.run_zero_shot(
        base_config(tmp_path), str(tmp_path), [3], loss_sets=("CLASS",),
        ks=(1, 2), verbose=0,
    )
    assert seen["holdout"] == (3,)
    assert seen["database"] == "unseen"  # the paper's protocol by default
    assert set(rows["CLASS"]) == {"hit@1", "hit@2"}
    # One unseen class in an unseen-only database: every label predicted
    # first is class 3 (each class-3 test image has class-3 neighbours).
    assert rows["CLASS"]["hit@1"] == 1.0
    markdown = (tmp_path / "zero_shot.md").read_text()
    assert "unseen: d" in markdown and "| CLASS |" in markdown
    assert "database: unseen-class test images only" in markdown


def test_ablation_refuses_caption_data_without_class_distances(tmp_path):
    data = dataclasses.replace(helpers.make_data(), class_distances=None)
    with pytest.raises(ValueError, match="needs labelled data with class"):
        experiments.run_ablation(
            config_lib.ExperimentConfig(), str(tmp_path), ["SIM"], data=data)

import json

import pytest

from shrewd_tf import config as config_lib


def test_defaults_follow_the_paper():
    cfg = config_lib.ExperimentConfig()
    assert cfg.loss.kl_weight == 0.01 and cfg.loss.class_weight == 0.01
    assert (cfg.loss.gamma, cfg.loss.rho) == (0.1, 2.0)
    assert cfg.model.code_bits == 64
    assert cfg.loss.terms == ("sim", "kl", "class")


def test_json_round_trip_and_atomic_write(tmp_path):
    cfg = config_lib.ExperimentConfig(name="x").with_overrides(
        {"train.epochs": 3, "data.holdout_classes": [1, 2]}
    )
    path = tmp_path / "sub" / "config.json"
    cfg.save_json(path)
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]
    loaded = config_lib.ExperimentConfig.from_file(path)
    assert loaded == cfg
    assert loaded.data.holdout_classes == (1, 2)
    assert json.loads(path.read_text())["train"]["epochs"] == 3


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nloss:\n  losses: SIM-KL\ntrain:\n  epochs: 2\n")
    cfg = config_lib.ExperimentConfig.from_file(path)
    assert (cfg.name, cfg.loss.terms, cfg.train.epochs) == ("y", ("sim", "kl"), 2)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"bogus": {}}, "bogus"),
        ({"train": {"epochz": 1}}, "epochz"),
    ],
)
def test_unknown_keys_are_named(values, match):
    with pytest.raises(ValueError, match=match):
        config_lib.ExperimentConfig.from_dict(values)


def test_unknown_loss_set_is_named():
    cfg = config_lib.ExperimentConfig().with_overrides({"loss.losses": "FOO"})
    with pytest.raises(ValueError, match="FOO"):
        cfg.loss.terms


def test_configs_are_frozen():
    cfg = config_lib.ExperimentConfig()
    with pytest.raises(Exception):
        cfg.train.epochs = 5


def test_paper_preset_is_eq4_as_written():
    paper = config_lib.ExperimentConfig().with_preset("paper")
    assert paper.model.code_activation == "linear"
    assert paper.model.code_gain == 1.0
    assert paper.loss.kl_block_bits is None
    assert paper.loss.kl_scale == "paper"
    assert paper.loss.kl_target_multiple == 1
    assert (paper.loss.kl_target, paper.loss.kl_alpha) == ("beta", 0.1)
    assert (paper.loss.kl_weight, paper.loss.class_weight) == (0.01, 0.01)
    # Everything the preset does not name is kept.
    base = config_lib.ExperimentConfig().with_overrides({"train.epochs": 3})
    assert base.with_preset("paper").train.epochs == 3
    with pytest.raises(ValueError, match="preset.*'nope'"):
        base.with_preset("nope")


def test_cli_preset_applies_before_set():
    from shrewd_tf import cli

    args = cli.build_parser().parse_args(
        ["train", "--preset", "paper", "--set", "loss.kl_weight=0.5"]
    )
    config = cli._load_config(args)
    assert config.model.code_activation == "linear"
    assert config.loss.kl_weight == 0.5

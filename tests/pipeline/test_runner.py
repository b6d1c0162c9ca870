"""End to end: the whole pipeline on a tiny fake Fashion-MNIST."""

import ast
import inspect
import json
import os
import textwrap

import matplotlib.image
import numpy as np
import pytest

from pipeline import pipeline_config
from pipeline import runner
from pipeline import stages as stages_lib
from shrewd_tf.retrieval import registry as index_lib
from tests.support.image_sources import write_fake_fashion_mnist
from tests.paths import REPO_ROOT

STAGES = ("example_gen", "semantics", "trainer", "evaluator", "exporter",
          "index_builder")


def tiny_overrides(tmp_path, idx_dir):
    return {
        "data.data_dir": idx_dir,
        "data.validation_subset": 4,
        "model.encoder": "cifar_resnet:8:4",
        "model.code_bits": 16,
        "train.epochs": 1,
        "train.per_replica_batch_size": 4,
        "train.eval_every": 0,
        "pipeline.runs_dir": str(tmp_path / "runs"),
        "pipeline.configurations": ["SIM-KL-CLASS", "CLASS"],
        "pipeline.beam_options": ["--runner=FnApiRunner"],
        "pipeline.k": 5,
    }


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    idx_dir = str(tmp_path / "idx")
    write_fake_fashion_mnist(idx_dir)
    config = os.path.join(REPO_ROOT, "configs", "fashion_mnist.yaml")
    overrides = tiny_overrides(tmp_path, idx_dir)
    results = runner.run(config, overrides)
    return tmp_path, config, overrides, results


def test_every_stage_runs_and_writes_a_manifest(pipeline_run):
    tmp_path, _, _, results = pipeline_run
    run_dir = tmp_path / "runs" / "fashion_mnist"
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "complete", stage
        assert results[stage][1]["fingerprint"] == manifest["fingerprint"]
    assert results["example_gen"][0].metrics["records"] == {"train": 10, "test": 4}
    distances = np.load(results["semantics"][0].outputs["class_distances"])
    assert distances.shape == (10, 10)
    assert set(results["trainer"][0].outputs["runs"]) == {"SIM-KL-CLASS", "CLASS"}


def test_report_and_plots_are_written(pipeline_run):
    _, _, _, results = pipeline_run
    report = results["evaluator"][0].outputs["report"]
    text = open(report).read()
    assert "| SIM-KL-CLASS |" in text and "| CLASS |" in text
    folder = os.path.dirname(report)
    for name in ("hp_curves.png", "code_histogram.png"):
        image = matplotlib.image.imread(os.path.join(folder, name))
        assert image.shape[0] > 50 and image.std() > 0.01


def test_index_holds_the_database_with_images(pipeline_run):
    _, _, _, results = pipeline_run
    outputs = results["index_builder"][0].outputs
    index = index_lib.load_index(outputs["binary"])
    assert len(index) == 4
    row = index.metadata(index.ids[:1])[0]
    assert os.path.isfile(os.path.join(outputs["image_root"], row["image_uri"]))
    assert os.path.isdir(results["exporter"][0].outputs["saved_model"])


def test_second_run_reuses_every_stage_and_a_change_reruns_downstream(
    pipeline_run, capsys
):
    _, config, overrides, _ = pipeline_run
    capsys.readouterr()
    runner.run(config, overrides)
    out = capsys.readouterr().out
    assert out.count(": cached (") == len(STAGES), out
    changed = dict(overrides, **{"pipeline.model_name": "other"})
    runner.run(config, changed)
    out = capsys.readouterr().out
    assert "exporter: running" in out and "index_builder: running" in out
    assert "trainer: cached" in out and "evaluator: cached" in out


def test_config_file_also_reads_as_an_experiment_config():
    from shrewd_tf import config as config_lib

    path = os.path.join(REPO_ROOT, "configs", "fashion_mnist.yaml")
    experiment = config_lib.ExperimentConfig.from_file(path)
    _, pipeline = pipeline_config.load(path)
    assert experiment.name == "fashion_mnist"
    assert pipeline.configurations == ("SIM-KL-CLASS", "CLASS")


def test_pipeline_config_refuses_unknown_keys_and_loss_sets():
    with pytest.raises(ValueError, match="Unknown key in config section 'pipeline'"):
        pipeline_config.from_dict({"pipeline": {"nope": 1}})
    with pytest.raises(ValueError, match="loss sets"):
        pipeline_config.from_dict({"pipeline": {"configurations": ["XYZ"]}})


@pytest.mark.parametrize(
    "name", ["fashion_mnist", "cifar100", "imagenet2012", "captions"])
def test_shipped_configs_load_and_make_six_stages(name):
    path = os.path.join(REPO_ROOT, "configs", f"{name}.yaml")
    experiment, pipeline = pipeline_config.load(path)
    stages = runner.make_stages(experiment, pipeline)
    assert [s.name for s in stages] == list(STAGES)
    assert experiment.loss.losses in pipeline.configurations


def _imported_modules(fn):
    """First-party modules `fn`'s body imports (`from a import b`: a.b)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] in stages_lib.FIRST_PARTY}


def test_each_stage_fingerprints_the_code_it_imports():
    path = os.path.join(REPO_ROOT, "configs", "fashion_mnist.yaml")
    stages = runner.make_stages(*pipeline_config.load(path))
    for stage in stages:
        imported = _imported_modules(stage.fn)
        assert imported, stage.name
        _, covered = stages_lib.source_digest(tuple(sorted(stage.code)))
        assert imported <= set(covered), (stage.name, imported - set(covered))

"""Tests for the `shrewd` command line."""

import json
import os
import subprocess
import sys

import pytest

from shrewd_tf import cli
from shrewd_tf.semantics import wordnet_corpus
from tests.paths import REPO_ROOT
from tests.support.sources import make_fake_source


def test_setup_wordnet_builds_corpus(tmp_path, capsys):
    source = make_fake_source(tmp_path / "debian")
    target = tmp_path / "nltk_data"
    argv = ["setup-wordnet", "--target", str(target), "--source", str(source)]
    assert cli.main(argv) == 0
    corpus_dir = target / "corpora" / "wordnet"
    assert capsys.readouterr().out.strip() == str(corpus_dir)
    assert wordnet_corpus.is_complete_corpus(corpus_dir)

    (source / "data.noun").write_text("new\n")
    assert cli.main(argv) == 0
    assert (corpus_dir / "data.noun").read_text() == "fake data.noun\n"
    assert cli.main(argv + ["--force"]) == 0
    assert (corpus_dir / "data.noun").read_text() == "new\n"


def test_setup_wordnet_missing_files_fails_with_fix(tmp_path, capsys):
    source = make_fake_source(tmp_path / "debian", skip=("data.verb",))
    argv = ["setup-wordnet", "--target", str(tmp_path / "t"), "--source"]
    assert cli.main(argv + [str(source)]) == 1
    error = capsys.readouterr().err
    assert "data.verb" in error
    assert "apt-get install wordnet-base wordnet-sense-index" in error


def test_subcommand_is_required():
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_help_is_fast_and_imports_no_tensorflow():
    code = (
        "import sys\n"
        "from shrewd_tf import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "heavy = ('tensorflow', 'keras', 'nltk', 'apache_beam')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "setup-wordnet" in result.stdout
    assert "HEAVY []" in result.stdout


# === Training subcommands (real Fashion-MNIST subset, tiny model) ===

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST),
    reason="Debian dataset-fashion-mnist is not installed (make install)",
)


def _tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "data: {train_subset: 256, test_subset: 120, validation_subset: 60}\n"
        "model: {encoder: 'cifar_resnet:8:4', code_bits: 16}\n"
        "train: {epochs: 1, per_replica_batch_size: 64, eval_every: 0}\n"
    )
    return path


@needs_fashion_mnist
def test_train_then_evaluate_reproduces_the_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(_tiny_config(tmp_path)),
            "--set", "loss.losses=SIM-KL", "--output-dir", str(run_dir)]
    assert cli.main(argv) == 0
    assert "| model | mAHP@250 float" in capsys.readouterr().out
    trained = json.loads((run_dir / "metrics.json").read_text())["tiny"]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["loss"]["losses"] == "SIM-KL"
    assert cli.main(["evaluate", str(run_dir), "--output", str(tmp_path / "ev")]) == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())["tiny"]
    for key in ("mahp_float", "mahp_binary", "map_binary", "accuracy"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


# What a quiet command must not print: TensorFlow's C++ log, Beam's workers,
# absl and ScaNN's native log, Python tracebacks and warnings.
INTERNALS = (
    "tensorflow/core", "cpu_feature_guard", "oneDNN", "cuInit", "cuda",
    "apache_beam", "sdk_worker", "statecache", "data_plane", "absl",
    "I0000", "W0000", "E0000", "Traceback", "Warning:", "WARNING",
)
QUIET_DEMO_LINES = 200


@needs_fashion_mnist
def test_demo_quick_runs_every_pipeline_stage_quietly(tmp_path):
    """CI's run of `make demo`: the real Fashion-MNIST files, first 1024
    images of each split, every stage of the pipeline, run as a new user
    would (a subprocess, a clean environment), printing banners, progress
    and results only."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "shrewd_tf.cli", "demo", "--quick",
         "--runs-dir", str(tmp_path)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    lines = out.splitlines()
    assert len(lines) < QUIET_DEMO_LINES, out
    noisy = [line for line in lines
             if any(mark in line for mark in INTERNALS)]
    assert not noisy, "\n".join(noisy)
    run_dir = tmp_path / "fashion_mnist_quick"
    for stage in ("example_gen", "semantics", "trainer", "evaluator",
                  "exporter", "index_builder"):
        assert f"{stage}: done" in out, out
        assert (run_dir / stage / "manifest.json").exists()
    report = (run_dir / "evaluator" / "report.md").read_text()
    assert "| SIM-KL-CLASS |" in report and "mAHP@250 bin" in report
    assert "shrewd serve --export-root" in out
    metrics = json.loads((run_dir / "evaluator" / "metrics.json").read_text())
    # 1024 training images, one epoch: well above the random-code level
    # (about 0.74 mAHP on Fashion-MNIST's WUP distances).
    assert metrics["SIM-KL-CLASS"]["mahp_float"] > 0.8


def test_index_build_runs_the_beam_job(tmp_path, capsys):
    from tests.support import encoders as encoder_fixtures

    model = encoder_fixtures.save_fake_encoder(str(tmp_path / "model" / "1"))
    tfrecord_dir = encoder_fixtures.write_records_dir(
        str(tmp_path / "tfrecords"),
        {"test": encoder_fixtures.make_records(16, seed=3)},
    )
    argv = ["index", "build", "--tfrecord-dir", tfrecord_dir,
            "--saved-model", model, "--output-dir", str(tmp_path / "index"),
            "--index", "binary", "--beam-option=--direct_num_workers=1"]
    assert cli.main(argv) == 0
    binary = tmp_path / "index" / "binary"
    assert capsys.readouterr().out.strip() == f"binary: {binary}"
    assert (binary / "manifest.json").exists()
    assert cli.main(argv + ["--split", "nope"]) == 1
    assert "shrewd index build: error:" in capsys.readouterr().err


def test_set_needs_key_value(tmp_path):
    with pytest.raises(SystemExit, match="key=value"):
        cli.main(["train", "--set", "train.epochs"])


def test_evaluate_names_a_missing_run(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("shrewd evaluate: error:")
    assert "config.json is missing" in error and "\n" not in error
    with pytest.raises(FileNotFoundError, match="config.json"):
        cli.main(["-v", "evaluate", str(tmp_path)])


# === export ===


def test_export_prints_the_version_dir_and_serves_grayscale(tmp_path, capsys):
    import numpy as np
    import tensorflow as tf

    from tests.support.exports import keras_codes
    from tests.support.exports import make_run_dir

    run_dir = tmp_path / "run"
    model, mean, std = make_run_dir(
        run_dir, image_shape=(12, 12, 1), code_bits=8, mean=[80.0],
        std=[40.0],
    )
    root = tmp_path / "exports"
    argv = ["export", "--run-dir", str(run_dir), "--export-root", str(root),
            "--model-name", "gray"]
    assert cli.main(argv) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(root / "gray" / "1")

    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 1))
    images = images.astype(np.uint8)
    served = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant([tf.io.encode_png(im).numpy() for im in images])
    )
    expected = keras_codes(model, images, mean, std)
    np.testing.assert_allclose(served["code"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(
        served["bits"].numpy(), np.packbits(served["code"].numpy() > 0.5, 1)
    )

    assert cli.main(argv + ["--version", "1"]) == 1
    assert "version=1" in capsys.readouterr().err
    assert sorted(os.listdir(root / "gray")) == ["1"]


def test_export_names_missing_run_files(tmp_path, capsys):
    argv = ["export", "--run-dir", str(tmp_path), "--export-root",
            str(tmp_path / "e"), "--model-name", "m"]
    assert cli.main(argv) == 1
    assert "model.keras" in capsys.readouterr().err


# === zero-shot ===


@pytest.mark.parametrize(
    "extra, database", [([], "unseen"), (["--database", "all"], "all")]
)
def test_zero_shot_database_flag(tmp_path, monkeypatch, capsys, extra,
                                 database):
    from shrewd_tf.evaluation import experiments

    seen = {}

    def fake_run(config, output_dir, holdout, loss_sets, database):
        seen.update(holdout=holdout, loss_sets=loss_sets, database=database)
        (tmp_path / "zero_shot.md").write_text("| table |\n")

    monkeypatch.setattr(experiments, "run_zero_shot", fake_run)
    argv = ["zero-shot", "--holdout", "2,9", "--output-dir", str(tmp_path)]
    assert cli.main(argv + extra) == 0
    assert seen == {"holdout": [2, 9], "loss_sets": ["CLASS", "SIM-KL-CLASS"],
                    "database": database}
    assert "| table |" in capsys.readouterr().out

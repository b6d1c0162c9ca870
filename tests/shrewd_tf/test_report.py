"""Tests for the evaluation report (shrewd_tf.report)."""

import os

import matplotlib.image
import numpy as np
import pytest

from shrewd_tf import report


def make_run(seed, n=60, classes=3, bits=16, noise=0.1):
    """Codes that cluster by class, with images that show the class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.random((classes, bits)) > 0.5
    codes = np.clip(centres[labels] + rng.normal(0, noise, (n, bits)), 0, 1)
    images = np.zeros((n, 8, 8, 1), np.uint8)
    images[:, :, :, 0] = (labels[:, None, None] * 80 + 40).astype(np.uint8)
    similarity = np.full((classes, classes), 0.3)
    np.fill_diagonal(similarity, 1.0)
    return report.RunOutputs(
        codes=codes.astype(np.float32), labels=labels, similarity=similarity,
        metrics={"mahp_float": 0.9, "mahp_binary": 0.8}, images=images,
        label_names=["shirt", "sneaker", "bag"],
    )


def read_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image.std() > 0.01, f"{path} is blank"
    return image


def test_write_report_writes_markdown_and_readable_plots(tmp_path):
    runs = {"SIM-KL-CLASS": make_run(0), "CLASS": make_run(1, noise=0.3)}
    path = report.write_report(str(tmp_path), runs, notes=["Protocol: test."])
    text = open(path).read()
    assert "| SIM-KL-CLASS |" in text and "| CLASS |" in text
    assert "Protocol: test." in text
    for name in ("hp_curves.png", "code_histogram.png",
                 "retrieval_SIM_KL_CLASS.png", "retrieval_CLASS.png"):
        assert f"({name})" in text
        read_png(os.path.join(tmp_path, name))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_hamming_neighbours_match_a_slow_loop():
    rng = np.random.default_rng(3)
    codes = rng.random((20, 12))
    rows, distances = report.hamming_neighbours(codes, [0, 5], 4)
    bits = codes > 0.5
    for row, query in enumerate([0, 5]):
        expected = sorted(
            (int(sum(bits[i] != bits[query])), i) for i in range(20) if i != query
        )[:4]
        assert [d for d, _ in expected] == list(distances[row])
        assert [i for _, i in expected] == list(rows[row])


def test_retrieval_grid_needs_images(tmp_path):
    run = make_run(0)
    run.images = None
    with pytest.raises(ValueError, match="needs run.images"):
        report.plot_retrieval_grid(run, str(tmp_path / "x.png"))


def test_write_report_refuses_no_runs(tmp_path):
    with pytest.raises(ValueError, match="at least one run"):
        report.write_report(str(tmp_path), {})

"""Tests for the evaluation report (shrewd_tf.evaluation.report)."""

import os

import matplotlib.image
import numpy as np
import pytest

from shrewd_tf.evaluation import report


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
    # Code statistics per model, from the codes (numpy reference).
    assert "| model | near-binary | bit balance dev. | distinct codes |" in text
    for name, run in runs.items():
        near = np.mean(np.minimum(run.codes, 1 - run.codes) <= 0.1)
        assert f"| {name} | {100 * near:.1f} % |" in text
    for name in ("hp_curves.png", "code_histogram.png",
                 "retrieval_SIM_KL_CLASS.png", "retrieval_CLASS.png"):
        assert f"({name})" in text
        read_png(os.path.join(tmp_path, name))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_code_histograms_and_table_show_how_binary_the_codes_are(tmp_path):
    # 2 codes x 4 bits: values 0.05, 0.95, 0.0 and 1.0 are near-binary
    # (within 0.1), 0.6, 0.3, 0.5, 0.85 are not -> 4 of 8. Bits on (> 0.5):
    # (0, 1, 1, 0) and
    # (0, 1, 0, 1): P = 0, 1, .5, .5, deviation (.5 + .5 + 0 + 0) / 4.
    codes = np.array([[0.05, 0.95, 0.6, 0.3], [0.0, 1.0, 0.5, 0.85]])
    run = report.RunOutputs(codes=codes, labels=np.array([0, 1]),
                            similarity=np.eye(2), metrics={})
    statistics = report.plot_code_histograms(
        {"toy": run}, str(tmp_path / "h.png")
    )
    assert statistics["toy"]["near_binary"] == pytest.approx(4 / 8)
    assert statistics["toy"]["bit_balance_deviation"] == pytest.approx(0.25)
    assert statistics["toy"]["distinct_codes"] == 2
    read_png(tmp_path / "h.png")
    table = report.code_statistics_table(statistics).splitlines()
    assert table[0] == (
        "| model | near-binary | bit balance dev. | distinct codes |"
    )
    assert table[2] == "| toy | 50.0 % | 0.2500 | 2 (100.0 %) |"


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

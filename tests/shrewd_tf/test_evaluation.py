import json

import numpy as np
import pytest

from shrewd_tf import evaluation


def one_hot_codes(labels, bits=8):
    codes = np.zeros((len(labels), bits), np.float32)
    codes[np.arange(len(labels)), labels] = 1.0
    return codes


def test_perfect_class_codes():
    """Each class its own code: every ranking puts the class first.

    With 3 classes of 5 images, k = 4 and the query excluded, the top 4 are
    the 4 other images of its class: HP@i = 1 for i <= 4, so AHP@4 =
    (4 - 1) / 4 and AP = 1, float and binary alike; accuracy of perfect
    logits is 1, and there are 3 unique codes.
    """
    labels = np.repeat(np.arange(3), 5)
    codes = one_hot_codes(labels)
    similarity = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    result = evaluation.retrieval_metrics(
        codes, labels, similarity, k=4, logits=codes[:, :3]
    )
    assert result["mahp_float"] == pytest.approx(0.75)
    assert result["mahp_binary"] == pytest.approx(0.75)
    assert result["map_binary"] == pytest.approx(1.0)
    assert result["map_float"] == pytest.approx(1.0)
    assert result["accuracy"] == 1.0
    assert result["unique_codes"] == 3
    assert result["bit_balance"] == pytest.approx(1 / 8)


def test_k_is_capped_by_the_database():
    labels = np.repeat(np.arange(2), 3)
    codes = one_hot_codes(labels)
    result = evaluation.retrieval_metrics(codes, labels, np.eye(2), k=250)
    # k becomes N - 1 = 5: 2 same-class items then 3 others of sim 0.
    # HP@1..5 = 1, 1, 2/2, 2/2, 2/2 (the ideal also has only 2 with s=1).
    assert result["mahp_float"] == pytest.approx(4 / 5)


def test_zero_shot_flat_hits_hand_case():
    # Class 2 is unseen; distances are L1.
    codes = np.array(
        [[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [0.0, 0.3], [5.0, 5.2], [5.0, 5.5]],
        np.float32,
    )
    labels = np.array([0, 0, 1, 2, 2, 1])
    hits = evaluation.zero_shot_flat_hits(codes, labels, [2], ks=(1, 2, 3))
    # Query 3 [0, .3]: item 1 (class 0) at .2, item 0 (0) at .3, item 2 (1)
    #   at 9.7, item 4 (2) at 9.9 -> labels [0, 1, 2]: hit only at 3.
    # Query 4 [5, 5.2]: item 2 (1) at .2, item 5 (1) at .3, item 3 (2) at
    #   9.9 -> labels [1, 2, 0]: hit at 2.
    assert hits == {1: 0.0, 2: 0.5, 3: 1.0}
    with pytest.raises(ValueError, match="unseen_classes=\\(7,\\)"):
        evaluation.zero_shot_flat_hits(codes, labels, [7])


def test_write_metrics_json_and_markdown(tmp_path):
    rows = {
        "SIM-KL": {"mahp_float": 0.5, "mahp_binary": 0.25, "accuracy": 0.5},
        "CLASS": {"mahp_float": 0.75, "wall_seconds": 12.3},
    }
    markdown = evaluation.write_metrics(rows, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == rows
    assert (tmp_path / "metrics.md").read_text() == markdown
    lines = markdown.splitlines()
    assert lines[2] == (
        "| model | mAHP@250 float | mAHP@250 bin | accuracy | train wall (s) |"
    )
    assert lines[4] == "| SIM-KL | 0.5000 | 0.2500 | 50.00 % | – |"
    assert lines[5] == "| CLASS | 0.7500 | – | – | 12 |"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.json", "metrics.md"
    ]

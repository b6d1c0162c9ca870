import dataclasses
import json

import numpy as np
import pytest

from shrewd_tf.evaluation import evaluate as evaluation
from shrewd_tf.evaluation import entropy
from shrewd_tf.semantics import distances as semantics


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
    # Code statistics: every value is exactly 0 or 1; bits 0-2 are on for
    # 5 of 15 codes (|1/3 - 1/2| = 1/6), bits 3-7 never (1/2): mean 3/8.
    assert result["near_binary"] == 1.0
    assert result["bit_balance_deviation"] == pytest.approx(3 / 8)
    assert result["distinct_codes"] == 3
    assert result["distinct_fraction"] == pytest.approx(3 / 15)
    # Each code has 4 duplicates: every rho is 0 -> 1/2 (log2 = -1).
    assert result["binary_entropy_bits"] == pytest.approx(
        np.log2(15) - 1 - entropy.uniform_mean_log2_hamming(15, 8)
    )


def test_k_is_capped_by_the_database():
    labels = np.repeat(np.arange(2), 3)
    codes = one_hot_codes(labels)
    result = evaluation.retrieval_metrics(codes, labels, np.eye(2), k=250)
    # k becomes N - 1 = 5: 2 same-class items then 3 others of sim 0.
    # HP@1..5 = 1, 1, 2/2, 2/2, 2/2 (the ideal also has only 2 with s=1).
    assert result["mahp_float"] == pytest.approx(4 / 5)


def test_markdown_table_shows_entropies_and_code_statistics():
    row = {"binary_entropy_bits": 19.93, "binary_entropy": -51.3,
           "near_binary": 0.9731, "bit_balance_deviation": 0.0123,
           "distinct_codes": 4866.0, "unique_codes": 4866.0}
    lines = evaluation.markdown_table({"SIM-KL": row}).splitlines()
    assert lines[2] == (
        "| model | binary entropy (bits; uniform = log2 N) | "
        "KL entropy (nats) | near-binary | bit balance dev. | "
        "distinct codes |"
    )
    assert lines[4] == (
        "| SIM-KL | 19.9300 | -51.3000 | 97.3 % | 0.0123 | 4866 |"
    )


def test_bert_class_distances_above_one_give_zero_similarity():
    """BERT cosine distances reach 2; mAHP counts those pairs as unrelated.

    Classes 0, 1, 2 with cos(0, 1) = -1, cos(0, 2) = 0.6, cos(1, 2) = -0.6,
    so s = max(0, cos) = [[1, 0, .6], [0, 1, 0], [.6, 0, 1]]. One image
    per class, float codes at 0, 3 and 1 on a line (L1 distances 3, 1, 2),
    k = 2. Query 0: item 2 (s .6) then item 1 (s 0); the ideal is the same
    (.6, 0), HP@1 = HP@2 = 1, AHP@2 = (2 - 1) / 2 = 1/2. Query 1: both
    neighbours have s = 0 and so has the ideal, AHP = 0. Query 2: item 0
    (s .6) then item 1 (s 0): AHP = 1/2. mAHP = 1/3.
    """
    from tests.support import sources as helpers

    embeddings = np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    distances = semantics.embedding_distance_matrix(embeddings, "cosine")
    assert distances.max() > 1
    data = dataclasses.replace(
        helpers.make_data(train=4, test=3), test_labels=np.arange(3),
        class_names=["x", "y", "z"], class_distances=distances,
    )
    codes = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]], np.float32)
    result = evaluation.experiment_metrics(data, {"code": codes}, k=2)
    assert result["mahp_float"] == pytest.approx(1 / 3)
    assert np.isfinite(result["mahp_binary"])


def test_zero_shot_flat_hits_hand_case():
    # Class 2 is unseen; distances are L1.
    codes = np.array(
        [[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [0.0, 0.3], [5.0, 5.2], [5.0, 5.5]],
        np.float32,
    )
    labels = np.array([0, 0, 1, 2, 2, 1])
    hits = evaluation.zero_shot_flat_hits(
        codes, labels, [2], ks=(1, 2, 3), database="all"
    )
    # Query 3 [0, .3]: item 1 (class 0) at .2, item 0 (0) at .3, item 2 (1)
    #   at 9.7, item 4 (2) at 9.9 -> labels [0, 1, 2]: hit only at 3.
    # Query 4 [5, 5.2]: item 2 (1) at .2, item 5 (1) at .3, item 3 (2) at
    #   9.9 -> labels [1, 2, 0]: hit at 2.
    assert hits == {1: 0.0, 2: 0.5, 3: 1.0}
    # The paper's protocol: the database is items 3 and 4 only, each the
    # other's one neighbour, of the query's class.
    assert evaluation.zero_shot_flat_hits(
        codes, labels, [2], ks=(1, 2, 3)
    ) == {1: 1.0, 2: 1.0, 3: 1.0}
    with pytest.raises(ValueError, match="unseen_classes=\\(7,\\)"):
        evaluation.zero_shot_flat_hits(codes, labels, [7])
    with pytest.raises(ValueError, match="database='seen'"):
        evaluation.zero_shot_flat_hits(codes, labels, [2], database="seen")


def test_zero_shot_flat_hits_both_protocols_two_unseen_classes():
    """Classes 1 and 2 unseen; codes on a line (L1 = |x - x'|).

    item:  0    1    2    3    4    5    6
    class: 0    1    2    1    2    0    1
    code:  0.0  1.0  1.2  5.0  5.5  1.1  5.2

    database="unseen" (items 1, 2, 3, 4, 6):
      q1 (1.0): 2 (c2, .2), 3 (c1, 4) -> [2, 1]: rank 2
      q2 (1.2): 1 (c1, .2), 3, 6, 4 (c2, 4.3) -> [1, 2]: rank 2
      q3 (5.0): 6 (c1, .2) -> rank 1
      q4 (5.5): 6 (c1, .3), 3 (c1, .5), 2 (c2, 4.3) -> [1, 2]: rank 2
      q6 (5.2): 3 (c1, .2) -> rank 1
      hit@1 = 2/5, hit@2 = 1.
    database="all" (the seen items 0 and 5 too):
      q1: 5 (c0, .1), 2 (c2, .2), 0 (c0, 1.0), 3 (c1, 4) -> [0, 2, 1]: 3
      q2: 5 (c0, .1), 1 (c1, .2), 0 (c0, 1.2), ..., 4 (c2) -> [0, 1, 2]: 3
      q3: rank 1; q4: 6, 3 (c1), 2 (c2, 4.3), 5 (c0, 4.4) -> rank 2;
      q6: rank 1. hit@1 = 2/5, hit@2 = 3/5, hit@3 = 1.
    """
    line = np.array([0.0, 1.0, 1.2, 5.0, 5.5, 1.1, 5.2], np.float32)
    codes = np.stack([line, np.zeros_like(line)], axis=1)
    labels = np.array([0, 1, 2, 1, 2, 0, 1])
    unseen = evaluation.zero_shot_flat_hits(codes, labels, [1, 2], ks=(1, 2, 3))
    assert unseen == pytest.approx({1: 2 / 5, 2: 1.0, 3: 1.0})
    every = evaluation.zero_shot_flat_hits(
        codes, labels, [1, 2], ks=(1, 2, 3), database="all"
    )
    assert every == pytest.approx({1: 2 / 5, 2: 3 / 5, 3: 1.0})
    # The paper's K by default.
    assert tuple(evaluation.zero_shot_flat_hits(codes, labels, [1, 2])) == (
        1, 2, 5, 10, 20
    )


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


def test_retrieval_metrics_with_what_the_data_has():
    labels = np.repeat(np.arange(3), 4)
    codes = one_hot_codes(labels)
    embeddings = np.eye(3)[labels] + 0.1 * np.random.default_rng(0).normal(
        size=(12, 3)
    )
    both = evaluation.retrieval_metrics(
        codes, labels, np.eye(3), k=3, logits=codes[:, :3],
        embeddings=embeddings,
    )
    for key in ("mahp_float", "map_binary", "accuracy", "mahp_caption_float",
                "kendall_tau_binary", "binary_entropy"):
        assert key in both, key
    unlabelled = evaluation.retrieval_metrics(
        codes, None, None, k=3, logits=codes[:, :3], embeddings=embeddings
    )
    assert "map_binary" not in unlabelled and "accuracy" not in unlabelled
    assert unlabelled["mahp_caption_float"] == both["mahp_caption_float"]
    no_similarity = evaluation.retrieval_metrics(codes, labels, None, k=3)
    assert "mahp_float" not in no_similarity
    assert no_similarity["map_float"] == pytest.approx(1.0)
    # Class codes put same-caption-cluster items first: caption mAHP near 1.
    assert both["mahp_caption_float"] > 0.5
    markdown = evaluation.markdown_table({"m": both})
    assert "caption mAHP@250 float" in markdown and "Kendall tau bin" in markdown

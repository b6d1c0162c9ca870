"""Tests for shrewd_tf.captions.captions: per-query Kendall tau-b and
caption mAHP against slow loops, an ideal (thermometer) case, the caption
similarity matrix."""

import numpy as np
import pytest

from shrewd_tf.evaluation import captions


def slow_tau_b(x, y):
    """Kendall tau-b from its definition: pairs counted one by one."""
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for a in range(n):
        for b in range(a + 1, n):
            dx, dy = x[a] - x[b], y[a] - y[b]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) / 2
    return (concordant - discordant) / np.sqrt(
        (pairs - ties_x) * (pairs - ties_y)
    )


def slow_per_query_tau(codes, embeddings, binary):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    taus = []
    for i in range(len(codes)):
        others = [j for j in range(len(codes)) if j != i]
        if binary:
            bits = codes > 0.5
            x = [int(np.sum(bits[i] != bits[j])) for j in others]
        else:
            x = [float(np.sum(np.abs(codes[i] - codes[j]))) for j in others]
        y = [1.0 - float(unit[i] @ unit[j]) for j in others]
        taus.append(slow_tau_b(x, y))
    return np.asarray(taus)


@pytest.mark.parametrize("binary", [False, True])
def test_kendall_tau_per_query_matches_a_slow_loop(binary):
    rng = np.random.default_rng(5)
    codes = rng.random((9, 6)).astype(np.float32)
    embeddings = rng.normal(size=(9, 4))
    taus = captions.kendall_tau_per_query(codes, embeddings, binary=binary)
    np.testing.assert_allclose(
        taus, slow_per_query_tau(codes, embeddings, binary), atol=1e-12
    )
    # Hamming distances of 6 bits tie a lot: tau-b's tie correction matters.
    assert captions.mean_kendall_tau(
        codes, embeddings, binary
    ) == pytest.approx(np.mean(taus))


def thermometer_case(levels=(0, 1, 3, 4, 6, 7, 9), width=10):
    """Codes whose distances are the caption distances' ranking.

    Item i has level t_i: its caption embedding is the unit vector at angle
    0.15 t_i (all within 90 degrees, so 1 - cos grows with |t_i - t_j|) and
    its code is t_i ones then zeros, whose L1 = Hamming distance is
    |t_i - t_j|.
    """
    levels = np.asarray(levels)
    angles = 0.15 * levels
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    codes = (np.arange(width)[None, :] < levels[:, None]).astype(np.float32)
    return codes, embeddings


def test_codes_ranked_like_the_captions_give_tau_one_and_ideal_mahp():
    codes, embeddings = thermometer_case()
    for binary in (False, True):
        taus = captions.kendall_tau_per_query(codes, embeddings, binary)
        np.testing.assert_allclose(taus, 1.0)
    k = 4
    result = captions.caption_retrieval_metrics(codes, embeddings, k=k)
    # Every ranking is an ideal one: AHP@k = (k - 1) / k.
    assert result["mahp_caption_float"] == pytest.approx((k - 1) / k)
    assert result["mahp_caption_binary"] == pytest.approx((k - 1) / k)
    assert result["kendall_tau_float"] == pytest.approx(1.0)
    assert result["kendall_tau_binary"] == pytest.approx(1.0)
    # Codes of shuffled items no longer rank like the captions.
    shuffled = codes[[3, 0, 6, 1, 5, 2, 4]]
    assert captions.mean_kendall_tau(shuffled, embeddings) < 0.5


def slow_caption_mahp(codes, embeddings, k):
    """mAHP@k by its definition with s_ij = max(cos(e_i, e_j), 0)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(codes)):
        others = [j for j in range(len(codes)) if j != i]
        distance = {j: np.sum(np.abs(codes[i] - codes[j])) for j in others}
        ranked = sorted(others, key=lambda j: distance[j])
        sims = {j: max(float(unit[i] @ unit[j]), 0.0) for j in others}
        ideal = sorted(sims.values(), reverse=True)
        hp = [
            sum(sims[j] for j in ranked[:r]) / sum(ideal[:r])
            for r in range(1, k + 1)
        ]
        total += (sum(hp) - (hp[0] + hp[-1]) / 2) / k
    return total / len(codes)


def test_caption_mahp_matches_a_slow_loop():
    rng = np.random.default_rng(11)
    codes = rng.random((12, 5)).astype(np.float32)  # distinct distances
    embeddings = rng.normal(size=(12, 3))  # some cosines < 0: clipped
    result = captions.caption_retrieval_metrics(codes, embeddings, k=5)
    assert result["mahp_caption_float"] == pytest.approx(
        slow_caption_mahp(codes.astype(np.float64), embeddings, 5), rel=1e-6
    )  # float32 cosines


def test_caption_similarity_matrix():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(7, 3))
    similarity = captions.caption_similarity_matrix(embeddings, chunk_rows=3)
    for i in range(7):
        for j in range(7):
            a, b = embeddings[i], embeddings[j]
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            expected = 1.0 if i == j else min(max(cos, 0.0), 1.0)
            assert similarity[i, j] == pytest.approx(expected, abs=1e-6)


def test_kendall_tau_subsamples_queries_and_skips_undefined():
    rng = np.random.default_rng(4)
    codes = rng.random((10, 4)).astype(np.float32)
    embeddings = rng.normal(size=(10, 3))
    taus = captions.kendall_tau_per_query(codes, embeddings)
    # 4 evenly spaced queries: 0, 3, 6, 9.
    assert captions.mean_kendall_tau(
        codes, embeddings, max_queries=4
    ) == pytest.approx(taus[[0, 3, 6, 9]].mean())
    # Identical codes: every code distance ties, tau-b is undefined.
    same = np.ones((10, 4), np.float32)
    assert np.isnan(captions.mean_kendall_tau(same, embeddings))
    with pytest.raises(ValueError, match="embeddings.shape=\\(9, 3\\)"):
        captions.kendall_tau_per_query(codes, embeddings[:9])

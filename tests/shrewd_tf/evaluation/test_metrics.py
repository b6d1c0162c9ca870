"""Tests for shrewd_tf.evaluation.metrics against slow pure-Python references."""

import itertools
import math

import numpy as np
import pytest

from shrewd_tf.evaluation import metrics
from shrewd_tf.evaluation import ranking

MAHP = metrics.mean_average_hierarchical_precision
MAP = metrics.mean_average_precision
HP_CURVE = metrics.hierarchical_precision_curve

# === Slow references ===


def ref_distances(query, db, binary):
    """Python-loop L1 (float64) or Hamming distances, list of lists."""
    if binary:
        query, db = (query > 0.5).astype(int), (db > 0.5).astype(int)
    return [
        [sum(abs(float(a) - float(b)) for a, b in zip(q, x)) for x in db]
        for q in query
    ]


def ref_tie_groups(distances, excluded=None):
    """Db indices grouped by equal distance, nearest group first."""
    groups = {}
    for j, value in enumerate(distances):
        if j != excluded:
            groups.setdefault(value, []).append(j)
    return [groups[value] for value in sorted(groups)]


def ref_hp(order, query_label, db_labels, sim, k, excluded=None):
    """HP@1..k of one ranked list of db indices (Deng et al. 2011)."""
    pool = [
        sim[query_label][label]
        for j, label in enumerate(db_labels)
        if j != excluded
    ]
    best = sorted(pool, reverse=True)
    out, got, ideal = [], 0.0, 0.0
    for i in range(k):
        got += sim[query_label][db_labels[order[i]]]
        ideal += best[i]
        out.append(got / ideal if ideal > 0 else 0.0)
    return out


def ref_ahp(hp):
    k = len(hp)
    return sum((hp[i] + hp[i + 1]) / 2 for i in range(k - 1)) / k


def ref_ap(order, query_label, db_labels, k):
    hits, total = 0, 0.0
    for i in range(k):
        if db_labels[order[i]] == query_label:
            hits += 1
            total += hits / (i + 1)
    return total / hits if hits else 0.0


def ref_orders(groups, k, limit=50000):
    """Every ranking (truncated to k) from permuting each tie group."""
    needed, covered = [], 0
    for group in groups:
        if covered >= k:
            break
        needed.append(group)
        covered += len(group)
    assert math.prod(math.factorial(len(g)) for g in needed) <= limit
    permutations = [itertools.permutations(g) for g in needed]
    for parts in itertools.product(*permutations):
        yield [j for part in parts for j in part][:k]


def ref_expected(query, query_labels, db, db_labels, sim, k, binary,
                 exclude_self=False):
    """(mAHP, mAP, mean HP curve) averaged over all tie orders."""
    ahps, aps, curves = [], [], []
    for i, row in enumerate(ref_distances(query, db, binary)):
        excluded = i if exclude_self else None
        label = query_labels[i]
        hps, aps_i = [], []
        for order in ref_orders(ref_tie_groups(row, excluded), k):
            hps.append(ref_hp(order, label, db_labels, sim, k, excluded))
            aps_i.append(ref_ap(order, label, db_labels, k))
        ahps.append(np.mean([ref_ahp(hp) for hp in hps]))
        aps.append(np.mean(aps_i))
        curves.append(np.mean(hps, axis=0))
    return np.mean(ahps), np.mean(aps), np.mean(curves, axis=0)


def ref_index_order(query, query_labels, db, db_labels, sim, k, binary):
    """(mAHP, mAP) with ties kept in database order."""
    ahps, aps = [], []
    for i, row in enumerate(ref_distances(query, db, binary)):
        order = sorted(range(len(row)), key=lambda j: (row[j], j))
        hp = ref_hp(order, query_labels[i], db_labels, sim, k)
        ahps.append(ref_ahp(hp))
        aps.append(ref_ap(order, query_labels[i], db_labels, k))
    return np.mean(ahps), np.mean(aps)


# === Fixtures ===


def make_similarity(rng, num_classes):
    sim = rng.integers(0, 5, (num_classes, num_classes)) / 8  # exact
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    return sim


def make_case(seed, num_queries, num_db, dim, levels, num_classes):
    """Coarse codes (multiples of 1/levels): exact distances, many ties."""
    rng = np.random.default_rng(seed)
    query = rng.integers(0, levels + 1, (num_queries, dim)) / levels
    db = rng.integers(0, levels + 1, (num_db, dim)) / levels
    return (
        query,
        rng.integers(0, num_classes, num_queries),
        db,
        rng.integers(0, num_classes, num_db),
        make_similarity(rng, num_classes),
    )


# === mAHP / mAP without ties ===


@pytest.mark.parametrize("ties", ranking.TIE_MODES)
def test_no_ties_match_python_loop(ties):
    rng = np.random.default_rng(1)
    # Multiples of 2^-20: L1 sums are exact in float32 and float64.
    query = rng.integers(0, 2**20, (12, 5)) / 2**20
    db = rng.integers(0, 2**20, (90, 5)) / 2**20
    query_labels, db_labels = rng.integers(0, 4, 12), rng.integers(0, 4, 90)
    sim = make_similarity(rng, 4)
    distances = ref_distances(query, db, binary=False)
    assert all(len(set(row)) == len(row) for row in distances)  # no ties
    args = (query, query_labels, db, db_labels)
    expected_ahp, expected_ap = ref_index_order(*args, sim, 30, False)
    ahp = MAHP(*args, sim, k=30, ties=ties)
    assert ahp == pytest.approx(expected_ahp, abs=1e-12)
    assert MAP(*args, k=30, ties=ties) == pytest.approx(expected_ap, abs=1e-12)


def test_hand_computed_no_ties():
    # 1-D codes; query at 0; db at distances 3, 1, 4, 2.
    query, db = np.array([[0.0]]), np.array([[3.0], [1.0], [4.0], [2.0]])
    db_labels = np.array([0, 0, 1, 1])  # ranked labels: 0, 1, 0, 1
    sim = np.array([[1.0, 0.5], [0.5, 1.0]])
    # cum sims 1, 1.5, 2.5, 3; ideal 1, 2, 2.5, 3 -> HP 1, .75, 1, 1.
    hp = HP_CURVE(query, [0], db, db_labels, sim, k=4)
    np.testing.assert_allclose(hp, [1.0, 0.75, 1.0, 1.0], atol=1e-15)
    ahp = MAHP(query, [0], db, db_labels, sim, k=4)
    assert ahp == pytest.approx((0.5 + 0.75 + 1 + 0.5) / 4, abs=1e-15)
    # Relevant at ranks 1 and 3: AP@4 = (1/1 + 2/3) / 2.
    ap = MAP(query, [0], db, db_labels, k=4)
    assert ap == pytest.approx(5 / 6, abs=1e-15)
    assert MAP(query, [1], db, db_labels, k=1) == 0.0
    # Label ids need not be small or contiguous for mAP.
    big = np.array([7, 10**12])
    ap = MAP(query, big[[0]], db, big[db_labels], k=4)
    assert ap == pytest.approx(5 / 6, abs=1e-15)


def test_hand_computed_two_way_tie():
    # Two db items tie at distance 1: labels 0 (s=1) and 1 (s=0.5).
    query, db = np.array([[0.0]]), np.array([[1.0], [-1.0], [5.0]])
    db_labels, sim = np.array([0, 1, 1]), np.array([[1.0, 0.5], [0.5, 1.0]])
    hp1 = HP_CURVE(query, [0], db, db_labels, sim, k=1)
    assert hp1[0] == pytest.approx(0.75)  # E[s(r_1)] / best = 0.75 / 1
    # AP@1: relevant first with probability 1/2 (AP 1), else R_1 = 0.
    assert MAP(query, [0], db, db_labels, k=1) == pytest.approx(0.5)
    # AP@2: orders (rel, non) -> 1 and (non, rel) -> 1/2.
    assert MAP(query, [0], db, db_labels, k=2) == pytest.approx(0.75)
    assert MAP(query, [0], db, db_labels, k=1, ties="index") == 1.0


@pytest.mark.parametrize("binary", [False, True])
def test_perfect_ranking_gives_k_minus_one_over_k(binary):
    # Class c sits at 1-D position c and s = 1 - |a - b| / 4, so the
    # distance ranking is the similarity ranking beyond each query's class.
    positions = np.arange(5.0)
    sim = 1 - np.abs(positions[:, None] - positions[None, :]) / 4
    labels = np.repeat(np.arange(5), 6)
    codes = positions[labels][:, None]
    if binary:  # unary codes: Hamming distance = |a - b|
        codes = (np.arange(4)[None, :] < codes).astype(float)
    for k in (1, 5, 20):
        ahp = MAHP(codes, labels, codes, labels, sim, k=k, binary=binary)
        assert ahp == pytest.approx((k - 1) / k, abs=1e-12)
    ap = MAP(codes, labels, codes, labels, k=6, binary=binary)
    assert ap == pytest.approx(1.0, abs=1e-12)


# === Tie handling ===


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aware_ties_equal_mean_over_all_tie_orders(binary, seed):
    dim, levels = (3, 1) if binary else (2, 2)
    *args, sim = make_case(seed, 6, 9, dim, levels, 3)
    for k in (1, 3, 5, 9):
        expected_ahp, expected_ap, expected_curve = ref_expected(
            *args, sim, k, binary
        )
        ahp = MAHP(*args, sim, k=k, binary=binary)
        curve = HP_CURVE(*args, sim, k=k, binary=binary)
        ap = MAP(*args, k=k, binary=binary)
        assert ahp == pytest.approx(expected_ahp, abs=1e-12)
        assert ap == pytest.approx(expected_ap, abs=1e-12)
        np.testing.assert_allclose(curve, expected_curve, atol=1e-12)


def test_fixture_has_straddling_mixed_tie_groups():
    # Guards the enumeration test against fixtures without hard ties.
    query, query_labels, db, db_labels, _ = make_case(0, 6, 9, 3, 1, 3)
    straddling = 0
    for i, row in enumerate(ref_distances(query, db, binary=True)):
        covered = 0
        for group in ref_tie_groups(row):
            relevant = sum(db_labels[j] == query_labels[i] for j in group)
            mixed = 0 < relevant < len(group)
            straddling += mixed and covered < 3 < covered + len(group)
            covered += len(group)
    assert straddling >= 2


@pytest.mark.parametrize("binary", [False, True])
def test_index_ties_match_stable_python_sort(binary):
    *args, sim = make_case(5, 15, 60, 4, 1 if binary else 2, 4)
    for k in (1, 7, 25):
        expected_ahp, expected_ap = ref_index_order(*args, sim, k, binary)
        ahp = MAHP(*args, sim, k=k, binary=binary, ties="index")
        ap = MAP(*args, k=k, binary=binary, ties="index")
        assert ahp == pytest.approx(expected_ahp, abs=1e-12)
        assert ap == pytest.approx(expected_ap, abs=1e-12)


def test_random_ties_average_to_aware():
    # Larger tie groups than enumeration allows: average many random orders.
    *args, sim = make_case(7, 10, 80, 4, 1, 4)
    k, seeds = 12, range(300)
    ahps = [
        MAHP(*args, sim, k=k, binary=True, ties="random", seed=s)
        for s in seeds
    ]
    aps = [MAP(*args, k=k, binary=True, ties="random", seed=s) for s in seeds]
    ahp = MAHP(*args, sim, k=k, binary=True)
    ap = MAP(*args, k=k, binary=True)
    assert np.std(aps) > 0.01  # tie order matters in this fixture
    for samples, exact in ((ahps, ahp), (aps, ap)):
        error = np.std(samples) / np.sqrt(len(samples))
        assert abs(np.mean(samples) - exact) < 4 * error
    assert MAP(*args, k=k, binary=True, ties="random", seed=3) == aps[3]


# === Paths, exclude_self, chunking ===


@pytest.mark.parametrize("dim", [6, 70, 300])  # 1 word, 2 words, uint16
@pytest.mark.parametrize("ties", ranking.TIE_MODES)
def test_binary_path_equals_l1_on_binarised_codes(ties, dim):
    rng = np.random.default_rng(3)
    query, db = rng.random((20, dim)), rng.random((70, dim))
    db[:5] = 0.5  # exactly 0.5 binarises to 0
    db[5:10] = 1 - query[:5]  # Hamming distance = dim (> 255 for dim=300)
    query_labels, db_labels = rng.integers(0, 3, 20), rng.integers(0, 3, 70)
    sim = make_similarity(rng, 3)
    bits_q, bits_db = (query > 0.5).astype(float), (db > 0.5).astype(float)
    for fn, extra in ((MAHP, (sim,)), (MAP, ())):
        binary = fn(
            query, query_labels, db, db_labels, *extra, k=15, binary=True,
            ties=ties,
        )
        l1 = fn(bits_q, query_labels, bits_db, db_labels, *extra, k=15,
                ties=ties)
        assert binary == pytest.approx(l1, abs=1e-12)


@pytest.mark.parametrize("ties", ["aware", "index"])
@pytest.mark.parametrize("binary", [False, True])
def test_exclude_self_matches_explicit_removal(binary, ties):
    _, _, codes, labels, sim = make_case(11, 1, 14, 3, 1 if binary else 2, 3)
    k = 5
    args = (codes, labels, codes, labels)
    options = dict(k=k, binary=binary, ties=ties)
    ahp = MAHP(*args, sim, exclude_self=True, **options)
    ap = MAP(*args, exclude_self=True, **options)
    # Per query: the module without exclude_self on the database minus i
    # (deleting row i keeps the index order of the others).
    ahps, aps = [], []
    for i in range(len(codes)):
        one = (codes[i : i + 1], labels[i : i + 1])
        rest = (np.delete(codes, i, axis=0), np.delete(labels, i))
        ahps.append(MAHP(*one, *rest, sim, **options))
        aps.append(MAP(*one, *rest, **options))
    assert ahp == pytest.approx(np.mean(ahps), abs=1e-12)
    assert ap == pytest.approx(np.mean(aps), abs=1e-12)
    if ties == "aware":  # and against enumeration without item i
        expected_ahp, expected_ap, _ = ref_expected(
            *args, sim, k, binary, exclude_self=True
        )
        assert ahp == pytest.approx(expected_ahp, abs=1e-12)
        assert ap == pytest.approx(expected_ap, abs=1e-12)


def test_chunking_does_not_change_results(monkeypatch):
    *args, sim = make_case(13, 40, 50, 4, 1, 4)
    query, _, db, db_labels = args

    def run():
        return (
            MAHP(*args, sim, k=20, binary=True),
            MAP(*args, k=20, ties="index"),
            metrics.labels_ranked_by_retrieval(query, db, db_labels),
        )

    whole = run()
    monkeypatch.setattr(ranking, "_CHUNK_ENTRIES", 3 * 50)  # 3 per chunk
    chunked = run()
    assert chunked[0] == pytest.approx(whole[0], abs=1e-12)
    assert chunked[1] == pytest.approx(whole[1], abs=1e-12)
    np.testing.assert_array_equal(chunked[2], whole[2])


def test_curve_ks_selects_ranks():
    *args, sim = make_case(17, 8, 30, 3, 2, 3)
    full = HP_CURVE(*args, sim, k=12)
    picked = HP_CURVE(*args, sim, ks=[12, 1, 5])
    np.testing.assert_allclose(picked, full[[11, 0, 4]], atol=1e-12)


def test_invalid_arguments_raise():
    *args, sim = make_case(0, 3, 5, 2, 2, 3)
    query, query_labels, db, db_labels = args
    with pytest.raises(ValueError, match="k=6"):
        MAP(*args, k=6)
    with pytest.raises(ValueError, match="k=5"):
        MAP(db, db_labels, db, db_labels, k=5, exclude_self=True)
    with pytest.raises(ValueError, match="ties='bogus'"):
        MAHP(*args, sim, ties="bogus")
    with pytest.raises(ValueError, match="exclude_self"):
        MAP(*args, k=2, exclude_self=True)
    with pytest.raises(ValueError, match="query_labels"):
        MAHP(query, [0, 1, 3], db, db_labels, sim, k=2)
    with pytest.raises(ValueError, match="dimension"):
        MAP(query[:, :1], query_labels, db, db_labels, k=2)
    with pytest.raises(ValueError, match="class_similarity"):
        MAHP(*args, sim[:2], k=2)
    with pytest.raises(ValueError, match="finite"):
        MAP(np.full_like(query, np.nan), query_labels, db, db_labels, k=2)


# === Other metrics ===


def ref_kendall_tau_b(x, y):
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            ties_x += dx == 0
            ties_y += dy == 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    pairs = len(x) * (len(x) - 1) / 2
    scale = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / scale


def test_kendall_tau_matches_pair_loop_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = rng.integers(0, 6, 80).astype(float)
        y = x + rng.integers(-3, 4, 80)
        expected = ref_kendall_tau_b(x, y)
        assert metrics.kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)
    assert metrics.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(metrics.kendall_tau([1, 2, 3], [2, 2, 2]))
    with pytest.raises(ValueError, match="same length"):
        metrics.kendall_tau([1, 2, 3], [1, 2])


def ref_ranked_labels(query, db, db_labels, binary, excluded=None):
    distances = ref_distances(query[None], db, binary)[0]
    items = [
        (d, label)
        for j, (d, label) in enumerate(zip(distances, db_labels))
        if j != excluded
    ]
    nearest = {}
    for d, label in items:
        nearest[label] = min(nearest.get(label, math.inf), d)
    at = {lbl: 0 for lbl in nearest}
    for d, label in items:
        at[label] += d == nearest[label]
    return sorted(nearest, key=lambda lbl: (nearest[lbl], -at[lbl], lbl))


@pytest.mark.parametrize("binary", [False, True])
def test_labels_ranked_by_retrieval_matches_loop(binary):
    query, _, db, db_labels, _ = make_case(21, 10, 40, 3, 1 + (not binary), 6)
    ranked = metrics.labels_ranked_by_retrieval(
        query, db, db_labels, binary=binary
    )
    for i in range(len(query)):
        expected = ref_ranked_labels(query[i], db, db_labels, binary)
        assert ranked[i].tolist() == expected
    top3 = metrics.labels_ranked_by_retrieval(
        query, db, db_labels, binary=binary, max_labels=3
    )
    np.testing.assert_array_equal(top3, ranked[:, :3])


def test_labels_ranked_tie_rules_and_exclude_self():
    codes = np.array([[0.0], [1.0], [1.0], [-1.0], [2.0], [-2.0]])
    labels = np.array([9, 7, 7, 3, 5, 4])
    # Query 0: labels 7 (two items) and 3 (one item) tie at distance 1 ->
    # 7 first; 5 and 4 tie at distance 2 with one item each -> 4 first.
    ranked = metrics.labels_ranked_by_retrieval(
        codes, codes, labels, exclude_self=True
    )
    assert ranked[0].tolist() == [7, 3, 4, 5, -1]  # 9: only the query
    for i in range(len(codes)):
        expected = ref_ranked_labels(codes[i], codes, labels, False, i)
        assert ranked[i].tolist() == expected + [-1] * (5 - len(expected))


def test_flat_hit_at_k_hand_case():
    ranked = np.array([[3, 1, 2], [2, 3, 1], [1, 2, -1]])
    hits = metrics.flat_hit_at_k(ranked, [3, 1, 0], ks=(1, 2, 5))
    assert hits == {
        1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3),
        5: pytest.approx(2 / 3),
    }
    ragged = metrics.flat_hit_at_k([[3], [2, 1]], [3, 1], ks=(1, 2))
    assert ragged == {1: 0.5, 2: 1.0}


def test_code_statistics_matches_a_loop():
    rng = np.random.default_rng(3)
    codes = rng.normal(0.5, 0.6, (50, 16))
    codes[:5] = codes[5:10]  # 5 duplicated codes
    stats = metrics.code_statistics(codes, tolerance=0.1)
    near = sum(
        1 for row in codes for v in row if abs(v) <= 0.1 or abs(v - 1) <= 0.1
    )
    assert stats["near_binary"] == pytest.approx(near / codes.size)
    balance = [
        abs(sum(1 for row in codes if row[j] > 0.5) / 50 - 0.5)
        for j in range(16)
    ]
    assert stats["bit_balance_deviation"] == pytest.approx(np.mean(balance))
    distinct = {tuple(row > 0.5) for row in codes}
    assert stats["distinct_codes"] == len(distinct) <= 45
    assert stats["distinct_fraction"] == pytest.approx(len(distinct) / 50)


def test_code_statistics_of_perfect_codes():
    bits = np.array([[0, 1], [1, 0], [0, 0], [1, 1]], np.float32)
    stats = metrics.code_statistics(bits)
    assert stats == {
        "near_binary": 1.0,
        "bit_balance_deviation": 0.0,
        "distinct_codes": 4.0,
        "distinct_fraction": 1.0,
    }
    with pytest.raises(ValueError, match="tolerance"):
        metrics.code_statistics(bits, tolerance=-1)

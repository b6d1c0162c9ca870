"""Tests for WUP, tree LCS-height and embedding distance matrices."""

import functools
import itertools

import numpy as np
import pytest

from shrewd_tf.semantics import class_synsets
from tests.paths import SHARED_REFERENCE
from shrewd_tf.semantics import distances as semantics

CIFAR_HIERARCHY = SHARED_REFERENCE / "cifar100-hierarchy"


# === WordNet loading ===


def test_load_wordnet_missing_corpus_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        semantics.load_wordnet(tmp_path)
    assert "shrewd setup-wordnet" in str(error.value)
    assert "make install" in str(error.value)


def test_load_wordnet_is_cached(wordnet, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "shrewd_nltk_data"
    assert semantics.load_wordnet(root) is wordnet
    assert semantics.load_wordnet(str(root) + "/") is wordnet


def test_synset_definitions_are_wordnet_glosses(wordnet):
    glosses = semantics.synset_definitions(
        ["dog.n.01", "seal.n.09"], wordnet=wordnet
    )
    assert glosses[0].startswith("a member of the genus Canis")
    assert glosses[1].startswith("any of numerous marine mammals")
    with pytest.raises(ValueError, match="no_such_thing.n.01"):
        semantics.synset_definitions(["no_such_thing.n.01"], wordnet=wordnet)


# === WUP ===

# Synsets where NLTK's WUP is not symmetric or not 1 with itself, plus
# ordinary classes (found by scanning this corpus).
WUP_CASES = [
    "tiger.n.01",  # two hypernym paths: WUP with itself is 0.75
    "toy_poodle.n.01",
    "apple.n.01",
    "alcazar.n.01",  # with house.n.01: 0.762 one way, 0.857 the other
    "house.n.01",
    "professional_football.n.01",
    "football.n.01",
    "feather.n.01",
    "substance.n.01",
    "tiger.n.02",
    "dog.n.01",
    "seal.n.09",
] + list(class_synsets.FASHION_MNIST_SYNSETS)


def nltk_wup_distance_oracle(wordnet, names):
    """Slow loop over NLTK's wup_similarity with the documented rule."""
    size = len(names)
    distances = np.zeros((size, size))
    for i, j in itertools.product(range(size), repeat=2):
        if names[i] == names[j]:
            continue
        a, b = wordnet.synset(names[i]), wordnet.synset(names[j])
        similarity = max(a.wup_similarity(b), b.wup_similarity(a))
        distances[i, j] = 1.0 - similarity
    return distances


def test_nltk_wup_quirks_exist_on_this_corpus(wordnet):
    # The reasons for the symmetrisation rule, checked on the corpus itself.
    tiger = wordnet.synset("tiger.n.01")
    assert tiger.wup_similarity(tiger) == pytest.approx(0.75)
    a, b = wordnet.synset("alcazar.n.01"), wordnet.synset("house.n.01")
    assert a.wup_similarity(b) != pytest.approx(b.wup_similarity(a))


def test_wup_distance_matrix_matches_nltk_loop(wordnet):
    distances = semantics.wup_distance_matrix(WUP_CASES, wordnet=wordnet)
    expected = nltk_wup_distance_oracle(wordnet, WUP_CASES)
    assert distances.dtype == np.float64
    assert distances.shape == (len(WUP_CASES), len(WUP_CASES))
    np.testing.assert_allclose(distances, expected, rtol=0, atol=1e-12)


def test_wup_distance_matrix_properties_on_cifar100(wordnet):
    names = list(class_synsets.CIFAR100_SYNSETS)
    distances = semantics.wup_distance_matrix(names, wordnet=wordnet)
    np.testing.assert_array_equal(distances, distances.T)
    np.testing.assert_array_equal(np.diag(distances), 0.0)
    off_diagonal = distances[~np.eye(len(names), dtype=bool)]
    assert np.all((off_diagonal > 0) & (off_diagonal < 1))
    i, j = names.index("tiger.n.02"), names.index("leopard.n.02")
    k = names.index("table.n.02")
    assert distances[i, j] < distances[i, k]


def test_wup_distance_matrix_duplicates_and_order(wordnet):
    names = ["tiger.n.01", "dog.n.01", "tiger.n.01"]
    distances = semantics.wup_distance_matrix(names, wordnet=wordnet)
    assert distances[0, 2] == 0.0
    np.testing.assert_array_equal(distances[0], distances[2])
    swapped = semantics.wup_distance_matrix(names[::-1], wordnet=wordnet)
    np.testing.assert_array_equal(swapped, distances[::-1, ::-1])


def test_wup_distance_matrix_rejects_bad_synsets(wordnet):
    with pytest.raises(ValueError, match="run.v.01"):
        semantics.wup_distance_matrix(["dog.n.01", "run.v.01"], wordnet)
    with pytest.raises(ValueError, match="dgo.n.01"):
        semantics.wup_distance_matrix(["dgo.n.01"], wordnet)


# === LCS height (Barz & Denzler) ===

#        r            heights: r 3, a 2, d 1, leaves 0
#       / \
#      a   b
#     / \
#    c   d
#       / \
#      e   f
SMALL_TREE = [("r", "a"), ("r", "b"), ("a", "c"), ("a", "d"), ("d", "e"),
              ("d", "f")]  # fmt: skip


def test_lcs_height_small_tree_by_hand():
    distances = semantics.lcs_height_distance_matrix(
        SMALL_TREE, ["c", "e", "f", "b"]
    )
    expected = np.array(
        [
            [0, 2 / 3, 2 / 3, 1],
            [2 / 3, 0, 1 / 3, 1],
            [2 / 3, 1 / 3, 0, 1],
            [1, 1, 1, 0],
        ]
    )
    np.testing.assert_allclose(distances, expected, rtol=0, atol=1e-15)
    assert distances.dtype == np.float64


def test_lcs_height_inner_node_class():
    distances = semantics.lcs_height_distance_matrix(SMALL_TREE, ["a", "e"])
    np.testing.assert_allclose(distances, [[0, 2 / 3], [2 / 3, 0]])


def test_lcs_height_rejects_non_trees():
    with pytest.raises(ValueError, match="two parents"):
        semantics.lcs_height_distance_matrix(
            SMALL_TREE + [("b", "e")], ["c", "e"]
        )
    with pytest.raises(ValueError, match="one root"):
        semantics.lcs_height_distance_matrix(
            SMALL_TREE + [("s", "t")], ["c", "t"]
        )
    with pytest.raises(ValueError, match="cycle"):
        semantics.lcs_height_distance_matrix(
            SMALL_TREE + [("x", "y"), ("y", "x")], ["c"]
        )
    with pytest.raises(ValueError, match="'zz'"):
        semantics.lcs_height_distance_matrix(SMALL_TREE, ["c", "zz"])


def test_read_parent_child_edges(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("# comment\nr a\n\nr   b\na\tc\n")
    assert semantics.read_parent_child_edges(path) == [
        ("r", "a"),
        ("r", "b"),
        ("a", "c"),
    ]
    path.write_text("r a b\n")
    with pytest.raises(ValueError, match="line 1"):
        semantics.read_parent_child_edges(path)


def slow_lcs_height_distance(edges, class_ids):
    """Oracle: walk up parents, find the LCA, height by recursion."""
    parent = {child: p for p, child in edges}
    children = {}
    for p, child in edges:
        children.setdefault(p, []).append(child)

    @functools.lru_cache(maxsize=None)
    def height(node):
        return max((1 + height(c) for c in children.get(node, [])), default=0)

    def ancestors(node):
        chain = [node]
        while chain[-1] in parent:
            chain.append(parent[chain[-1]])
        return chain

    root = ancestors(edges[0][0])[-1]
    top = height(root)
    size = len(class_ids)
    distances = np.zeros((size, size))
    for i, j in itertools.product(range(size), repeat=2):
        if i != j:
            up_j = set(ancestors(class_ids[j]))
            lca = next(a for a in ancestors(class_ids[i]) if a in up_j)
            distances[i, j] = height(lca) / top
    return distances


@pytest.mark.skipif(
    not (CIFAR_HIERARCHY / "cifar.parent-child.txt").is_file(),
    reason="CIFAR-100 hierarchy reference not available",
)
def test_lcs_height_cifar100_reference_hierarchy():
    edges = semantics.read_parent_child_edges(
        CIFAR_HIERARCHY / "cifar.parent-child.txt"
    )
    class_ids = [str(i) for i in range(100)]
    distances = semantics.lcs_height_distance_matrix(edges, class_ids)

    np.testing.assert_array_equal(np.diag(distances), 0.0)
    np.testing.assert_array_equal(distances, distances.T)
    assert distances.min() >= 0.0 and distances.max() == 1.0
    # Ultrametric: d(a, c) <= max(d(a, b), d(b, c)) for all triples.
    bound = np.maximum(distances[:, :, None], distances[None, :, :])
    assert np.all(distances[:, None, :] <= bound + 1e-12)
    np.testing.assert_allclose(
        distances, slow_lcs_height_distance(edges, class_ids), atol=1e-12
    )


# === Embeddings ===


def test_embedding_distance_matrix_matches_loops():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 5))
    cosine = semantics.embedding_distance_matrix(embeddings, "cosine")
    euclidean = semantics.embedding_distance_matrix(embeddings, "euclidean")
    for i, j in itertools.product(range(6), repeat=2):
        u, v = embeddings[i], embeddings[j]
        cos = u @ v / np.sqrt((u @ u) * (v @ v))
        expected_cosine = 0.0 if i == j else 1.0 - cos
        assert cosine[i, j] == pytest.approx(expected_cosine, abs=1e-12)
        expected_l2 = np.sqrt(np.sum((u - v) ** 2))
        assert euclidean[i, j] == pytest.approx(expected_l2, abs=1e-12)
    for distances in (cosine, euclidean):
        assert distances.dtype == np.float64
        np.testing.assert_array_equal(distances, distances.T)
        np.testing.assert_array_equal(np.diag(distances), 0.0)


def test_cosine_distance_is_scale_invariant_and_bounded():
    embeddings = np.array([[1.0, 0.0], [-3.0, 0.0], [0.0, 0.5]])
    distances = semantics.embedding_distance_matrix(embeddings)
    np.testing.assert_allclose(
        distances, [[0, 2, 1], [2, 0, 1], [1, 1, 0]], atol=1e-15
    )


def test_embedding_distance_matrix_validation():
    with pytest.raises(ValueError, match="metric='manhattan'"):
        semantics.embedding_distance_matrix(np.ones((2, 2)), "manhattan")
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        semantics.embedding_distance_matrix(np.ones(3))
    with pytest.raises(ValueError, match="zero"):
        semantics.embedding_distance_matrix(np.array([[1.0, 0], [0, 0]]))


def test_class_similarity():
    distances = np.array([[0.0, 0.25], [0.25, 0.0]])
    np.testing.assert_array_equal(
        semantics.class_similarity(distances), [[1.0, 0.75], [0.75, 1.0]]
    )


def test_class_similarity_of_opposite_bert_embeddings_is_zero():
    # cos(e0, e1) = -1, cos(e0, e2) = 0.6, cos(e1, e2) = -0.6: cosine
    # distances 2, 0.4 and 1.6; similarities max(0, cos) = 0, 0.6 and 0.
    embeddings = np.array([[1.0, 0.0], [-2.0, 0.0], [0.6, 0.8]])
    distances = semantics.embedding_distance_matrix(embeddings, "cosine")
    np.testing.assert_allclose(
        distances, [[0, 2, 0.4], [2, 0, 1.6], [0.4, 1.6, 0]], atol=1e-12
    )
    np.testing.assert_allclose(
        semantics.class_similarity(distances),
        [[1, 0, 0.6], [0, 1, 0], [0.6, 0, 1]], atol=1e-12,
    )

"""Target distances between classes: WordNet WUP, tree LCS height, embeddings.

Every function returns a `[C, C]` float64 matrix `d` with `d[i, i] == 0`
and `d == d.T`; `class_similarity(d) = max(0, 1 - d)` turns one into
similarities.

* `wup_distance_matrix`: `1 - WUP` over WordNet noun synsets, as NLTK's
  `wup_similarity` (the measure of the paper, Sec. 4), symmetrised.
* `lcs_height_distance_matrix`: Barz & Denzler's tree distance
  `height(lcs(a, b)) / max height`, in [0, 1], an ultrametric.
* `embedding_distance_matrix`: cosine or Euclidean distances between
  embeddings, e.g. sentence embeddings of `synset_definitions` (the paper's
  "BERT" variant).

Synsets are keyed by name (`"dog.n.01"`), never by byte offset: the Debian
WordNet files share Princeton's noun offsets only.
"""

import functools
import itertools
import logging
from pathlib import Path

import numpy as np
from scipy.spatial import distance as scipy_distance

from shrewd_tf.semantics import wordnet_corpus

_LOG = logging.getLogger(__name__)

EMBEDDING_METRICS = ("cosine", "euclidean")


# === WordNet corpus ===


def load_wordnet(root=None):
    """Returns an NLTK WordNet reader over `<root>/corpora/wordnet`.

    NLTK (>= 3.10) opens corpora only under its data roots, so `root` is
    appended to `nltk.data.path` when it is not there already. Readers are
    cached per root: loading takes a few seconds.

    Args:
        root: an nltk_data root holding `corpora/wordnet` (as built by
            `wordnet_corpus.build_nltk_wordnet`). Default
            `<sys.prefix>/nltk_data`.

    Returns:
        A `nltk.corpus.reader.wordnet.WordNetCorpusReader`.

    Raises:
        FileNotFoundError: no complete corpus under `root`.
    """
    if root is None:
        root = wordnet_corpus.default_nltk_data_root()
    return _load_wordnet_cached(str(Path(root).expanduser().resolve()))


@functools.lru_cache(maxsize=None)
def _load_wordnet_cached(root):
    import nltk
    from nltk.corpus.reader import CorpusReader
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    corpus_dir = wordnet_corpus.wordnet_corpus_dir(root)
    if not wordnet_corpus.is_complete_corpus(corpus_dir):
        raise FileNotFoundError(
            f"No complete WordNet corpus in {corpus_dir}. Build it with "
            f"`make install` or `shrewd setup-wordnet --target {root}` "
            f"(it needs `{wordnet_corpus.INSTALL_HINT}`). Received: "
            f"root={root}"
        )
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    # Same wiring as `nltk.corpus.wordnet`: multilingual data is found
    # lazily, only if a caller asks for another language.
    omw_reader = LazyCorpusLoader(
        "omw-2.0", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8"
    )
    _LOG.info("Loading WordNet from %s", corpus_dir)
    return WordNetCorpusReader(str(corpus_dir), omw_reader)


def synset_definitions(synset_names, wordnet=None):
    """Returns the WordNet gloss of each synset, e.g. for sentence encoders.

    Args:
        synset_names: `C` synset names such as `"dog.n.01"`.
        wordnet: a WordNet reader; default `load_wordnet()`.

    Returns:
        A list of `C` strings.

    Raises:
        ValueError: an unknown synset name.
    """
    wordnet = load_wordnet() if wordnet is None else wordnet
    return [_synset(wordnet, name).definition() for name in synset_names]


def _synset(wordnet, name):
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        return wordnet.synset(name)
    except (WordNetError, ValueError) as error:
        raise ValueError(
            f"Unknown WordNet synset. Received: name={name!r} ({error})"
        ) from None


# === Wu-Palmer (WUP) ===


def wup_distance_matrix(synset_names, wordnet=None):
    """Returns `1 - WUP` between WordNet noun synsets, symmetrised.

    WUP(a, b) is computed exactly as NLTK's `Synset.wup_similarity(b)` with
    its defaults (the paper's measure): the lowest common subsumer is chosen
    by minimum depth, ties broken by name, with `a` itself preferred when it
    is one of them. That value is neither symmetric nor 1 on the diagonal
    in general (`tiger.n.01` has two hypernym paths and WUP 0.75 with
    itself), so the rule here is:

    * `d[i, j] = 1 - max(WUP(a, b), WUP(b, a))` (the closer of the two
      directions) for different synsets `a != b`;
    * `d[i, j] = 0` when both classes map to the same synset, which makes
      the diagonal zero.

    The result is computed with per-synset caches instead of calling NLTK
    per pair (tens of times faster; `benchmarks/bench_semantics.py`).

    Args:
        synset_names: `C` noun synset names, e.g. `["dog.n.01", ...]`.
        wordnet: a WordNet reader; default `load_wordnet()`.

    Returns:
        A float64 array `[C, C]`, values in [0, 1).

    Raises:
        ValueError: an unknown synset name or a synset that is not a noun
            (WUP across verb trees needs NLTK's simulated root).
    """
    wordnet = load_wordnet() if wordnet is None else wordnet
    names = list(synset_names)
    wup = _WUPCalculator(wordnet)
    for name in set(names):
        synset = _synset(wordnet, name)
        if synset.pos() != "n":
            raise ValueError(
                f"WUP distances need noun synsets. Received: name={name!r}"
            )
    unique = sorted(set(names))
    index = {name: i for i, name in enumerate(unique)}
    similarity = np.ones((len(unique), len(unique)))
    for i, j in itertools.combinations(range(len(unique)), 2):
        a, b = unique[i], unique[j]
        similarity[i, j] = similarity[j, i] = max(wup(a, b), wup(b, a))
    rows = np.array([index[name] for name in names], dtype=np.int64)
    return 1.0 - similarity[np.ix_(rows, rows)]


class _WUPCalculator:
    """NLTK's noun WUP similarity, with hypernym distances cached by name."""

    def __init__(self, wordnet):
        self._wordnet = wordnet
        self._distances = {}  # name -> {ancestor name: shortest hops}
        self._min_depth = {}
        self._max_depth = {}
        self._path_length = {}

    def __call__(self, name_a, name_b):
        ancestors_a = self._hypernym_distances(name_a)
        ancestors_b = self._hypernym_distances(name_b)
        common = ancestors_a.keys() & ancestors_b.keys()
        deepest = max(self._min_depth[c] for c in common)
        lowest = sorted(c for c in common if self._min_depth[c] == deepest)
        subsumer = name_a if name_a in lowest else lowest[0]
        depth = self._max_depth[subsumer] + 1
        length_a = self._shortest_path(name_a, subsumer) + depth
        length_b = self._shortest_path(name_b, subsumer) + depth
        return 2.0 * depth / (length_a + length_b)

    def _hypernym_distances(self, name):
        """Breadth-first hops from `name` to every (instance) hypernym."""
        if name not in self._distances:
            distances = {}
            queue = [(self._wordnet.synset(name), 0)]
            for synset, hops in queue:  # grows while iterating: a BFS
                if synset.name() in distances:
                    continue
                distances[synset.name()] = hops
                self._min_depth.setdefault(synset.name(), synset.min_depth())
                self._max_depth.setdefault(synset.name(), synset.max_depth())
                parents = synset.hypernyms() + synset.instance_hypernyms()
                queue.extend((parent, hops + 1) for parent in parents)
            self._distances[name] = distances
        return self._distances[name]

    def _shortest_path(self, name_a, name_b):
        """NLTK's `shortest_path_distance`: via the best common ancestor."""
        if name_a == name_b:
            return 0
        key = (name_a, name_b)
        if key not in self._path_length:
            up_a = self._hypernym_distances(name_a)
            up_b = self._hypernym_distances(name_b)
            self._path_length[key] = min(
                up_a[c] + up_b[c] for c in up_a.keys() & up_b.keys()
            )
        return self._path_length[key]


# === Tree hierarchies (Barz & Denzler) ===


def read_parent_child_edges(path):
    """Reads a "parent child" edge list, one whitespace-separated pair a line.

    Blank lines and lines starting with `#` are skipped. Node ids stay
    strings.

    Args:
        path: a text file such as Barz & Denzler's `cifar.parent-child.txt`.

    Returns:
        A list of `(parent, child)` string pairs.

    Raises:
        ValueError: a line without exactly two fields.
    """
    edges = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise ValueError(
                    f"Expected 'parent child' on line {number} of {path}. "
                    f"Received: line={line.rstrip()!r}"
                )
            edges.append((fields[0], fields[1]))
    return edges


def lcs_height_distance_matrix(edges, class_ids):
    """Returns Barz & Denzler's tree distance between classes.

    `d(a, b) = height(lcs(a, b)) / max_w height(w)`, where `lcs` is the
    lowest common ancestor and the height of a node is the number of edges
    on the longest path down to a leaf (leaves 0). The maximum is over the
    whole tree, i.e. the root's height. `d(a, a) = 0`, also for a class
    that is an inner node. The result is an ultrametric in [0, 1].

    Args:
        edges: iterable of `(parent, child)` pairs of hashable node ids that
            form one tree (every node has at most one parent).
        class_ids: `C` node ids, in class-label order.

    Returns:
        A float64 array `[C, C]`.

    Raises:
        ValueError: a node with two parents, a cycle, more than one root, or
            a class id that is not in the tree.

    Reference:
        Barz & Denzler, "Hierarchy-based Image Embeddings for Semantic Image
        Retrieval", WACV 2019.
    """
    parent_of, children_of = {}, {}
    for parent, child in edges:
        if parent_of.get(child, parent) != parent:
            raise ValueError(
                f"Node {child!r} has two parents, {parent_of[child]!r} and "
                f"{parent!r}; edges must form a tree. Received: "
                f"edge={(parent, child)!r}"
            )
        parent_of[child] = parent
        children_of.setdefault(parent, set()).add(child)
        children_of.setdefault(child, set())
    roots = [node for node in children_of if node not in parent_of]
    if len(roots) != 1:
        raise ValueError(
            f"Edges must form one tree with one root. Received: "
            f"roots={sorted(map(str, roots))[:10]} ({len(roots)} roots)"
        )
    class_ids = list(class_ids)
    for class_id in class_ids:
        if class_id not in children_of:
            raise ValueError(
                f"Class id not found in the tree. Received: "
                f"class_id={class_id!r}"
            )
    height = _node_heights(roots[0], children_of)
    if len(height) != len(children_of):
        raise ValueError(
            "Edges contain a cycle that is not connected to the root. "
            f"Received: {len(children_of) - len(height)} nodes off the tree"
        )
    max_height = height[roots[0]]
    num_classes = len(class_ids)
    if max_height == 0:
        return np.zeros((num_classes, num_classes))

    # Root-to-node paths as rows of a padded matrix; the lowest common
    # ancestor is the last entry of the longest common prefix.
    paths = [_path_from_root(c, parent_of) for c in class_ids]
    node_index = {node: i for i, node in enumerate(children_of)}
    width = max(len(path) for path in paths)
    table = np.full((num_classes, width), -1, dtype=np.int64)
    for row, path in enumerate(paths):
        table[row, : len(path)] = [node_index[node] for node in path]
    same = table[:, None, :] == table[None, :, :]
    prefix = np.logical_and.accumulate(same, axis=2).sum(axis=2)
    lcs = table[np.arange(num_classes)[:, None], prefix - 1]
    node_heights = np.array([height[node] for node in children_of])
    distances = node_heights[lcs] / max_height
    np.fill_diagonal(distances, 0.0)
    return distances.astype(np.float64)


def _node_heights(root, children_of):
    """Longest downward path (edges) of every node reachable from `root`."""
    height = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            height[node] = 1 + max(
                (height[c] for c in children_of[node]), default=-1
            )
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children_of[node])
    return height


def _path_from_root(node, parent_of):
    path = [node]
    while path[-1] in parent_of:
        path.append(parent_of[path[-1]])
    return path[::-1]


# === Embeddings ===


def embedding_distance_matrix(embeddings, metric="cosine"):
    """Returns pairwise distances between class embeddings.

    Args:
        embeddings: array `[C, D]`, e.g. sentence embeddings of the classes'
            WordNet glosses.
        metric: `"cosine"` (`1 - cos`, in [0, 2]) or `"euclidean"` (L2, in
            the embeddings' units).

    Returns:
        A float64 array `[C, C]`, symmetric, zero diagonal.

    Raises:
        ValueError: an unknown metric, embeddings that are not 2-D, or a
            zero embedding with `metric="cosine"`.
    """
    if metric not in EMBEDDING_METRICS:
        raise ValueError(
            f"metric must be one of {EMBEDDING_METRICS}. Received: "
            f"metric={metric!r}"
        )
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D [C, D]. Received: "
            f"shape={embeddings.shape}"
        )
    if metric == "cosine":
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError(
                "Cosine distance is undefined for a zero embedding. "
                f"Received: zero rows={np.flatnonzero(norms[:, 0] == 0)}"
            )
        unit = embeddings / norms
        distances = 1.0 - np.clip(unit @ unit.T, -1.0, 1.0)
    else:
        distances = scipy_distance.cdist(embeddings, embeddings, "euclidean")
    distances = 0.5 * (distances + distances.T)
    np.fill_diagonal(distances, 0.0)
    return distances


def class_similarity(distances):
    """Class similarities `s = max(0, 1 - d)` for mAHP, from class distances.

    This is the one place where the evaluation (mAHP, HP@k curves, the
    validation callback, the ablation and the report) turns the `[C, C]`
    target distances into the non-negative similarities that hierarchical
    precision needs.

    * WUP and LCS distances lie in [0, 1]: `s = 1 - d` exactly, as in the
      paper and in Barz & Denzler's mAHP.
    * Cosine distances (`semantics="bert"`) lie in [0, 2]: `s = max(0,
      cos)`, so a pair whose sentence embeddings are orthogonal or point
      apart counts as unrelated (similarity 0), never as negatively
      relevant (hierarchical precision is a ratio of sums of similarities
      and is meaningless with negative terms). This is the rule of the
      caption protocol (`evaluation.caption_similarity_matrix`:
      `clip(cos, 0, 1)`), so class and caption mAHP treat opposite
      embeddings alike. Rescaling `1 - d / 2` was not chosen: it would give
      an orthogonal (unrelated) pair similarity 1/2 and change every BERT
      similarity, including the positive ones the paper's mAHP uses.

    Args:
        distances: array `[C, C]` of class distances >= 0.

    Returns:
        float64 array `[C, C]` in [0, 1] (1 on the zero diagonal).
    """
    return np.maximum(1.0 - np.asarray(distances, dtype=np.float64), 0.0)

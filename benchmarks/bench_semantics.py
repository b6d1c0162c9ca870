"""Wall time of the WUP distance matrix: cached implementation vs NLTK loop.

Both compute the same symmetrised matrix (`semantics.wup_distance_matrix`)
for the same ImageNet-1k synsets: the baseline calls NLTK's
`wup_similarity` for every ordered pair, as a straightforward
implementation would. The baseline runs on a subset and is scaled up by
the number of pairs; the full 1000-class matrix is timed for the cached
version only. Both are checked to agree on the subset.

    python benchmarks/bench_semantics.py [--subset 80] [--root NLTK_DATA]
"""

import argparse
import itertools
import tempfile
import time

import numpy as np

from shrewd_tf.semantics import class_synsets
from shrewd_tf.semantics import distances as semantics
from shrewd_tf.semantics import wordnet_corpus


def nltk_loop_distances(wordnet, names):
    size = len(names)
    distances = np.zeros((size, size))
    synsets = [wordnet.synset(name) for name in names]
    for i, j in itertools.combinations(range(size), 2):
        a, b = synsets[i], synsets[j]
        similarity = max(a.wup_similarity(b), b.wup_similarity(a))
        distances[i, j] = distances[j, i] = 1.0 - similarity
    return distances


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=80)
    parser.add_argument("--root", default=None, help="nltk_data root")
    args = parser.parse_args()

    root = args.root
    if root is None and not wordnet_corpus.is_complete_corpus(
        wordnet_corpus.wordnet_corpus_dir()
    ):
        root = tempfile.mkdtemp(prefix="bench-nltk-data-")
        wordnet_corpus.build_nltk_wordnet(target_root=root)
    start = time.perf_counter()
    wordnet = semantics.load_wordnet(root)
    names = class_synsets.synsets_for("imagenet2012", wordnet=wordnet)
    print(f"load WordNet + resolve 1000 wnids: "
          f"{time.perf_counter() - start:.1f} s")

    rng = np.random.default_rng(0)
    subset = [names[i] for i in rng.choice(len(names), args.subset, False)]
    pairs_subset = args.subset * (args.subset - 1) / 2
    pairs_full = len(names) * (len(names) - 1) / 2

    # The baseline first, so NLTK's own depth caches are warm for both.
    start = time.perf_counter()
    expected = nltk_loop_distances(wordnet, subset)
    nltk_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cached = semantics.wup_distance_matrix(subset, wordnet=wordnet)
    cached_seconds = time.perf_counter() - start
    max_error = np.max(np.abs(cached - expected))

    start = time.perf_counter()
    full = semantics.wup_distance_matrix(names, wordnet=wordnet)
    full_seconds = time.perf_counter() - start
    nltk_full_estimate = nltk_seconds * pairs_full / pairs_subset

    print(f"subset of {args.subset} classes ({pairs_subset:.0f} pairs):")
    print(f"  NLTK loop       {nltk_seconds:8.2f} s")
    print(f"  cached          {cached_seconds:8.2f} s")
    print(f"  speed-up        {nltk_seconds / cached_seconds:8.1f} x")
    print(f"  max |difference| {max_error:.1e}")
    print(f"full ImageNet-1k ({pairs_full:.0f} pairs), {full.shape}:")
    print(f"  cached          {full_seconds:8.2f} s")
    print(f"  NLTK loop (est.) {nltk_full_estimate:7.0f} s")
    print(f"  speed-up (est.) {nltk_full_estimate / full_seconds:8.1f} x")


if __name__ == "__main__":
    main()

"""Semantic distances between classes: the WordNet corpus (`wordnet_corpus`),
WUP / LCS-height / embedding distances (`distances`) and the class tables
that resolve dataset classes to synsets (`class_synsets`).

    from shrewd_tf import semantics
    from shrewd_tf.semantics import class_synsets
    semantics.wup_distance_matrix(class_synsets.FASHION_MNIST_SYNSETS)
"""

from shrewd_tf.semantics.distances import EMBEDDING_METRICS
from shrewd_tf.semantics.distances import class_similarity
from shrewd_tf.semantics.distances import embedding_distance_matrix
from shrewd_tf.semantics.distances import lcs_height_distance_matrix
from shrewd_tf.semantics.distances import load_wordnet
from shrewd_tf.semantics.distances import read_parent_child_edges
from shrewd_tf.semantics.distances import synset_definitions
from shrewd_tf.semantics.distances import wup_distance_matrix

__all__ = [
    "EMBEDDING_METRICS",
    "class_similarity",
    "embedding_distance_matrix",
    "lcs_height_distance_matrix",
    "load_wordnet",
    "read_parent_child_edges",
    "synset_definitions",
    "wup_distance_matrix",
]

"""shrewd_tf: SHREWD semantic deep hashing in Keras/TensorFlow.

Subpackages, in data-flow order (docs/architecture.md has the map):

* `ops`: pure maths (pairwise distances, kNN estimators, eq. 4, target
  samples);
* `losses`: eq. 2 and eq. 4 as Keras losses and loss layers;
* `semantics`: WordNet, class distances, class tables;
* `text`: the BERT-family sentence encoder;
* `data`: TFRecord schema, sources and input pipelines;
* `models`: encoders, the SHREWD model and its code head;
* `training`: strategy, precision, eq. 1, callbacks, `model.fit`;
* `evaluation`: ranking, metrics, report, experiments;
* `export`: TF-Serving SavedModels;
* `retrieval`: Hamming and ScaNN indexes and their files;
* `config` (frozen dataclasses) and `cli` (the `shrewd` command, the only
  module that imports `pipeline` and `serving`).

The public API, the names README uses:

    from shrewd_tf import losses      # SimilarityMatchingLoss, EmpiricalKLLoss, *Layer
    from shrewd_tf import semantics   # wup_distance_matrix, load_wordnet, ...
    from shrewd_tf.semantics import class_synsets
    from shrewd_tf import text        # SentenceEncoder, export_tf_hub
    from shrewd_tf import retrieval   # BinaryHammingIndex, ScannIndex, load_index
    from shrewd_tf.evaluation import metrics
    from shrewd_tf import config      # ExperimentConfig and its parts

Import the subpackage you need; this package imports nothing heavy itself.
"""

__version__ = "0.1.0"

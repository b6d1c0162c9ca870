"""shrewd_tf: SHREWD semantic deep hashing in Keras/TensorFlow.

Modules (one concept each):

* method: `losses` (eq. 2, eq. 4), `loss_layers` (the same as Keras loss
  layers), `pairwise`, `target_sampling`, `estimators`, `semantics`,
  `class_synsets`, `wordnet_corpus`;
* evaluation: `metrics`, `ranking`, `evaluation`, `experiments`;
* data and models: `config`, `datasets`, `inputs`, `models`;
* training: `training` (strategy, precision, compile), `trainer` (fit),
  `callbacks`, `demo`;
* text: `bert`, `text` (sentence encoder);
* retrieval: `index`, `hamming_index`, `scann_index`, `index_files`;
* `cli`: the `shrewd` command.
Import the module you need; this package imports nothing heavy on its own.
"""

__version__ = "0.1.0"

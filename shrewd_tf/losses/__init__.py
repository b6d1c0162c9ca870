"""The SHREWD losses: eq. 2 (similarity matching, `similarity`) and eq. 4
(empirical KL, `kl`) as Keras `Loss` classes, the all-gather behind
`cross_replica=True` (`replicas`), and both as loss layers (`layers`).

    from shrewd_tf import losses
    losses.SimilarityMatchingLoss(class_distances=d)
    losses.EmpiricalKLLoss(alpha=0.02)
    losses.EmpiricalKLLayer(weight=0.01)
"""

from shrewd_tf.losses.kl import EmpiricalKLLoss
from shrewd_tf.losses.layers import EmpiricalKLLayer
from shrewd_tf.losses.layers import SimilarityMatchingLayer
from shrewd_tf.losses.replicas import gather_across_replicas
from shrewd_tf.losses.similarity import SimilarityMatchingLoss
from shrewd_tf.losses.similarity import similarity_matching_loss
from shrewd_tf.losses.similarity import similarity_matching_per_example
from shrewd_tf.losses.similarity import similarity_weights
from shrewd_tf.ops.empirical_kl import KL_SCALES
from shrewd_tf.ops.empirical_kl import empirical_kl_loss
from shrewd_tf.ops.empirical_kl import empirical_kl_per_example

__all__ = [
    "KL_SCALES",
    "EmpiricalKLLayer",
    "EmpiricalKLLoss",
    "SimilarityMatchingLayer",
    "SimilarityMatchingLoss",
    "empirical_kl_loss",
    "empirical_kl_per_example",
    "gather_across_replicas",
    "similarity_matching_loss",
    "similarity_matching_per_example",
    "similarity_weights",
]

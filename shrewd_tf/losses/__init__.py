"""The SHREWD losses: eq. 2 (similarity matching) and eq. 4 (empirical KL)
as Keras `Loss` classes (`keras_losses`) and as loss layers (`layers`).

    from shrewd_tf import losses
    losses.SimilarityMatchingLoss(class_distances=d)
    losses.EmpiricalKLLoss(alpha=0.02)
    losses.EmpiricalKLLayer(weight=0.01)
"""

from shrewd_tf.losses.keras_losses import EmpiricalKLLoss
from shrewd_tf.losses.keras_losses import SimilarityMatchingLoss
from shrewd_tf.losses.keras_losses import gather_across_replicas
from shrewd_tf.losses.keras_losses import similarity_matching_loss
from shrewd_tf.losses.keras_losses import similarity_matching_per_example
from shrewd_tf.losses.keras_losses import similarity_weights
from shrewd_tf.losses.layers import EmpiricalKLLayer
from shrewd_tf.losses.layers import SimilarityMatchingLayer
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

"""The BERT-family sentence encoder (all-MiniLM-L6-v2 by default): the
tensorflow_text preprocessor (`preprocessor`) and the Keras encoder
(`bert`) behind the TF-Hub-shaped `SentenceEncoder` (`encoder`).

    from shrewd_tf import text
    text.SentenceEncoder().encode(["a dog runs"])
"""

from shrewd_tf.text.encoder import DEFAULT_MODEL_PACKAGE
from shrewd_tf.text.encoder import ENCODER_DIR
from shrewd_tf.text.encoder import EXECUTIONS
from shrewd_tf.text.encoder import PREPROCESSOR_DIR
from shrewd_tf.text.encoder import SentenceEncoder
from shrewd_tf.text.encoder import default_model_dir
from shrewd_tf.text.encoder import export_tf_hub
from shrewd_tf.text.preprocessor import BertPreprocessor

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "ENCODER_DIR",
    "EXECUTIONS",
    "PREPROCESSOR_DIR",
    "BertPreprocessor",
    "SentenceEncoder",
    "default_model_dir",
    "export_tf_hub",
]

"""Finished training runs to export, and the Keras codes to compare with.

`make_run_dir(run_dir, ...)` writes what `shrewd train` leaves behind
(config.json, preprocessing.json, model.keras) for a tiny random-weight
ShrewdModel; `keras_codes` computes the codes the exported SavedModel must
reproduce, by NumPy standardisation and a Keras call.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from shrewd_tf import config as config_lib
from shrewd_tf import contract
from shrewd_tf.training import trainer

IMAGE_SHAPE = (12, 12, 3)
MEAN = [101.0, 117.0, 96.0]
STD = [61.0, 55.0, 70.0]


def make_run_dir(run_dir, image_shape=IMAGE_SHAPE, code_bits=16, mean=MEAN,
                 std=STD):
    """A finished-run directory: config.json, preprocessing.json, model.keras.

    The code head is centred at 0.5 (a linear head's bias is set to 0.5), so
    a random-weight model puts codes on both sides of the bit threshold.

    Returns:
        (model, mean float32 [C], std float32 [C]).
    """
    os.makedirs(run_dir, exist_ok=True)
    config = config_lib.ExperimentConfig(name="tiny").with_overrides(
        {"model.encoder": "cifar_resnet:8:4", "model.code_bits": code_bits}
    )
    keras.utils.set_random_seed(0)
    model = trainer.build_model(config, 4, image_shape)
    if config.model.code_activation == "linear":
        # A bounded head is centred at 0.5 already.
        code_layer = model.get_layer(contract.CODE_OUTPUT)
        code_layer.bias.assign(np.full(code_bits, 0.5, np.float32))
    config.save_json(os.path.join(run_dir, contract.CONFIG_FILE))
    with open(os.path.join(run_dir, contract.PREPROCESSING_FILE), "w") as f:
        json.dump(
            {"image_shape": list(image_shape), "mean": mean, "std": std}, f
        )
    model.save(os.path.join(run_dir, contract.MODEL_FILE))
    return model, np.float32(mean), np.float32(std)


def keras_codes(model, pixels, mean, std):
    """Reference: numpy standardisation of uint8/float pixels, Keras call."""
    standardised = (np.asarray(pixels, np.float32) - mean) / std
    return model(standardised, training=False)[contract.CODE_OUTPUT].numpy()


def random_images(count, shape=IMAGE_SHAPE, seed=0):
    """uint8 [count, *shape] random pixels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *shape)).astype(np.uint8)


def png(image):
    """PNG bytes of uint8 [H, W, C] pixels."""
    return tf.io.encode_png(image).numpy()


def save_text_op_saved_model(path):
    """A SavedModel using a TF Text op (CaseFoldUTF8), not core TF."""
    import tensorflow_text

    module = tf.Module()
    module.fold = tf.function(
        tensorflow_text.case_fold_utf8,
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, path)

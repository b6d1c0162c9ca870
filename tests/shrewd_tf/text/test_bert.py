"""Tests for shrewd_tf.text.bert against a float64 numpy BERT."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.text import bert
from tests.support.bert_reference import numpy_bert


TINY = bert.BertConfig(vocab_size=40, hidden_size=8, num_layers=2,
                       num_heads=2, intermediate_size=16,
                       max_position_embeddings=12, max_seq_length=12)


def _tiny_inputs():
    ids = np.array([[2, 5, 7, 3], [2, 9, 3, 0]], np.int32)
    return {"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32),
            "input_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def tiny_model():
    return bert.BertEncoder(TINY)


def test_bert_encoder_config_round_trip(tiny_model):
    model = tiny_model
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model))
    clone.set_weights(model.get_weights())
    assert clone.config == TINY
    np.testing.assert_allclose(clone(_tiny_inputs())["sequence_output"],
                               model(_tiny_inputs())["sequence_output"],
                               atol=1e-6)
    block = model.get_layer("layer_0")
    assert bert.BertTransformerBlock.from_config(
        block.get_config()).num_heads == 2
    with pytest.raises(ValueError, match="num_heads=3"):
        bert.BertTransformerBlock(8, 3, 16, 1e-12)


def test_bert_encoder_stays_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        out = bert.BertEncoder(TINY)(_tiny_inputs())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert all(v.dtype == tf.float32 for v in out.values())


def test_padding_does_not_change_token_states(tiny_model):
    model = tiny_model
    full = model(_tiny_inputs())["sequence_output"]
    single = {k: v[1:, :3] for k, v in _tiny_inputs().items()}
    np.testing.assert_allclose(model(single)["sequence_output"][0],
                               full[1, :3], atol=1e-5)


def _random_hf_tensors(cfg, seed=0):
    """HF `BertModel` names -> random float32 arrays shaped for `cfg`."""
    rng = np.random.default_rng(seed)
    h, inter = cfg.hidden_size, cfg.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, h),
        "embeddings.position_embeddings.weight":
            (cfg.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
        "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,),
    }
    for ln in ["embeddings.LayerNorm"] + [
            f"encoder.layer.{i}.{part}.LayerNorm"
            for i in range(cfg.num_layers)
            for part in ("attention.output", "output")]:
        shapes.update({ln + ".weight": (h,), ln + ".bias": (h,)})
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        for name, shape in [("attention.self.query", (h, h)),
                            ("attention.self.key", (h, h)),
                            ("attention.self.value", (h, h)),
                            ("attention.output.dense", (h, h)),
                            ("intermediate.dense", (inter, h)),
                            ("output.dense", (h, inter))]:
            shapes.update({p + name + ".weight": shape,
                           p + name + ".bias": shape[:1]})
    return {k: rng.normal(scale=0.5, size=s).astype(np.float32)
            for k, s in shapes.items()}


def test_hf_weights_load_with_bert_prefix(tiny_model):
    tensors = _random_hf_tensors(TINY)
    bert.load_hf_bert_weights(tiny_model,
                              {"bert." + k: v for k, v in tensors.items()})
    out = tiny_model(_tiny_inputs())
    ref = {k: v.astype(np.float64) for k, v in tensors.items()}
    for i, ids in enumerate([[2, 5, 7, 3], [2, 9, 3]]):
        states, pooled = numpy_bert(ids, ref, num_layers=2, num_heads=2)
        np.testing.assert_allclose(out["sequence_output"][i, :len(ids)],
                                   states, atol=1e-5)
        np.testing.assert_allclose(out["pooled_output"][i], pooled, atol=1e-5)

    del tensors["encoder.layer.1.output.dense.bias"]
    with pytest.raises(ValueError, match="output.dense.bias"):
        bert.load_hf_bert_weights(tiny_model, tensors)
    tensors["encoder.layer.1.output.dense.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match=r"Received: \(7,\)"):
        bert.load_hf_bert_weights(tiny_model, tensors)

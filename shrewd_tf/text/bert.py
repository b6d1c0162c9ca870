"""BERT encoder in Keras with the TF-Hub encoder interface.

`BertEncoder(BertConfig)` is a post-LayerNorm BERT built from `config.json`:
word + absolute position + token type embeddings, exact (erf) GELU,
LayerNorm epsilon from the config. `load_bert_encoder(model_dir)` builds
one from `config.json` and `model.safetensors` (read with
`safetensors.numpy`; a leading `bert.` in the names, as in checkpoints of
`BertFor...` heads, is dropped). All layers run in float32 whatever the
global Keras dtype policy. `shrewd_tf.text.encoder.SentenceEncoder` wraps it with
the tokenizer and the sentence pooling.

Reference: Devlin et al., BERT, NAACL 2019.
"""

import dataclasses
import functools
import json
import logging
import math
import pathlib

import keras
import numpy as np
from keras import ops
from safetensors.numpy import load_file

WEIGHTS_FILE = "model.safetensors"
# Names of the int32 [B, L] inputs of the TF-Hub BERT encoder interface.
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
# Added to attention logits of padding; exp() of it underflows to exactly 0.
_MASK_LOGIT = -1e9


# === Config ===


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder and its tokenizer settings.

    Attributes:
        vocab_size: rows of the word embedding.
        hidden_size: width H of every token state.
        num_layers: transformer blocks.
        num_heads: attention heads; H must be a multiple of it.
        intermediate_size: width of the feed-forward layer.
        max_position_embeddings: rows of the position embedding.
        type_vocab_size: rows of the token type embedding.
        layer_norm_eps: epsilon of every LayerNorm.
        max_seq_length: word pieces per text, [CLS] and [SEP] included.
        lower_case: whether the tokenizer lower-cases and strips accents.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256
    lower_case: bool = True

    @classmethod
    def from_model_dir(cls, model_dir):
        """Reads `config.json` (+ tokenizer and sentence-BERT configs).

        Raises:
            ValueError: the model is not a BERT with absolute positions and
                exact GELU.
        """
        model_dir = pathlib.Path(model_dir)
        hf = json.loads((model_dir / "config.json").read_text())
        act = hf.get("hidden_act", "gelu")
        pos = hf.get("position_embedding_type", "absolute")
        if act != "gelu" or pos != "absolute":
            raise ValueError(
                "Only BERT with exact GELU and absolute positions is "
                f"supported. Received: hidden_act={act!r}, "
                f"position_embedding_type={pos!r}"
            )
        tok_file = model_dir / "tokenizer_config.json"
        tok = json.loads(tok_file.read_text()) if tok_file.exists() else {}
        sbert_file = model_dir / "sentence_bert_config.json"
        sbert = (json.loads(sbert_file.read_text())
                 if sbert_file.exists() else {})
        max_len = sbert.get("max_seq_length", hf["max_position_embeddings"])
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            max_seq_length=min(max_len, hf["max_position_embeddings"]),
            lower_case=tok.get("do_lower_case", True),
        )


# === Layers ===


def masked_mean_pool(sequence_output, input_mask):
    """Mean of states over `input_mask`: `[B, L, H]`, `[B, L]` -> `[B, H]`.

    A row with no token gives zeros (the count is clamped at 1e-9, as in
    sentence-transformers).
    """
    mask = ops.cast(input_mask, sequence_output.dtype)[:, :, None]
    total = ops.sum(sequence_output * mask, axis=1)
    return total / ops.maximum(ops.sum(mask, axis=1), 1e-9)


def l2_normalize(x, epsilon=1e-12):
    """Rows divided by `max(||row||_2, epsilon)`: `[B, H]` -> `[B, H]`."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return x / ops.maximum(norm, epsilon)


@keras.saving.register_keras_serializable(package="shrewd_tf")
class BertEmbeddings(keras.layers.Layer):
    """Word + absolute position + token type embeddings, then LayerNorm."""

    def __init__(
        self,
        vocab_size,
        hidden_size,
        max_position_embeddings,
        type_vocab_size,
        layer_norm_eps,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        dtype = self.dtype_policy
        self.word_embeddings = keras.layers.Embedding(
            vocab_size, hidden_size, dtype=dtype, name="word_embeddings"
        )
        self.position_embeddings = keras.layers.Embedding(
            max_position_embeddings, hidden_size, dtype=dtype,
            name="position_embeddings",
        )
        self.token_type_embeddings = keras.layers.Embedding(
            type_vocab_size, hidden_size, dtype=dtype,
            name="token_type_embeddings",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=dtype, name="layer_norm"
        )

    def call(self, input_word_ids, input_type_ids):
        positions = ops.arange(ops.shape(input_word_ids)[1], dtype="int32")
        x = (
            self.word_embeddings(input_word_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(input_type_ids)
        )
        return self.layer_norm(x)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
        }


@keras.saving.register_keras_serializable(package="shrewd_tf")
class BertTransformerBlock(keras.layers.Layer):
    """Post-LayerNorm block: self-attention, then an exact-GELU MLP.

    Raises:
        ValueError: `hidden_size` is not a multiple of `num_heads`.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        intermediate_size,
        layer_norm_eps,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                "hidden_size must be a multiple of num_heads. Received: "
                f"hidden_size={hidden_size}, num_heads={num_heads}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.layer_norm_eps = layer_norm_eps

        def dense(units, name):
            return keras.layers.Dense(units, dtype=self.dtype_policy, name=name)

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_eps, dtype=self.dtype_policy, name=name
            )

        # Names follow the Hugging Face checkpoint (see _HF_BLOCK_WEIGHTS).
        self.query = dense(hidden_size, "query")
        self.key = dense(hidden_size, "key")
        self.value = dense(hidden_size, "value")
        self.attention_output = dense(hidden_size, "attention_output")
        self.attention_layer_norm = norm("attention_layer_norm")
        self.intermediate = dense(intermediate_size, "intermediate")
        self.output_dense = dense(hidden_size, "output_dense")
        self.output_layer_norm = norm("output_layer_norm")

    def call(self, x, input_mask):
        # Dense layers act on [B*L, H] rows: a plain matmul, where a rank-3
        # input would go through tensordot's reshapes.
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        head_size = self.hidden_size // self.num_heads
        rows = ops.reshape(x, (-1, self.hidden_size))

        def split_heads(t):  # [B*L, H] -> [B, heads, L, head_size]
            t = ops.reshape(t, (batch, length, self.num_heads, head_size))
            return ops.transpose(t, (0, 2, 1, 3))

        q = split_heads(self.query(rows))
        k = split_heads(self.key(rows))
        v = split_heads(self.value(rows))
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        logits = logits / math.sqrt(head_size)
        padding = 1.0 - ops.cast(input_mask, logits.dtype)
        logits = logits + padding[:, None, None, :] * _MASK_LOGIT
        context = ops.matmul(ops.softmax(logits, axis=-1), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)),
                              (-1, self.hidden_size))
        rows = self.attention_layer_norm(rows + self.attention_output(context))
        h = ops.gelu(self.intermediate(rows), approximate=False)
        rows = self.output_layer_norm(rows + self.output_dense(h))
        return ops.reshape(rows, (batch, length, self.hidden_size))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": self.layer_norm_eps,
        }


# === Functional Model ===


@keras.saving.register_keras_serializable(package="shrewd_tf")
class BertEncoder(keras.Model):
    """BERT with the TF-Hub encoder interface, in float32.

    Inputs: dict of int32 `[B, L]` tensors `input_word_ids`, `input_mask`,
    `input_type_ids`. Outputs: dict with `sequence_output` `[B, L, H]`,
    `pooled_output` `[B, H]` (the BERT pooler, tanh(W h_[CLS] + b); not
    trained for similarity in sentence-transformers models) and `default`
    `[B, H]` (L2-normalised masked mean of `sequence_output`: the sentence
    embedding).
    """

    def __init__(self, config=None, **kwargs):
        config = config if config is not None else BertConfig()
        if isinstance(config, dict):
            config = BertConfig(**config)
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in INPUT_NAMES
        }
        x = BertEmbeddings(
            config.vocab_size,
            config.hidden_size,
            config.max_position_embeddings,
            config.type_vocab_size,
            config.layer_norm_eps,
            dtype="float32",
            name="embeddings",
        )(inputs["input_word_ids"], inputs["input_type_ids"])
        for i in range(config.num_layers):
            x = BertTransformerBlock(
                config.hidden_size,
                config.num_heads,
                config.intermediate_size,
                config.layer_norm_eps,
                dtype="float32",
                name=f"layer_{i}",
            )(x, inputs["input_mask"])
        pooled = keras.layers.Dense(
            config.hidden_size, activation="tanh", dtype="float32",
            name="pooler",
        )(x[:, 0])
        # A Lambda is safe here: get_config rebuilds the graph from
        # BertConfig, so it is never serialized.
        sentence = keras.layers.Lambda(
            lambda t: l2_normalize(masked_mean_pool(t[0], t[1])),
            dtype="float32",
            name="mean_pooling",
        )([x, inputs["input_mask"]])
        outputs = {
            "sequence_output": x,
            "pooled_output": pooled,
            "default": sentence,
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.config = config

    def get_config(self):
        return {
            "config": dataclasses.asdict(self.config),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Keras variable of a block -> Hugging Face name suffix ("weight" is
# transposed for Dense kernels).
_HF_BLOCK_WEIGHTS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_layer_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output_dense": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def _assign(variable, value, name):
    if tuple(variable.shape) != value.shape:
        raise ValueError(
            f"Shape mismatch for {name}. Received: {value.shape}, "
            f"expected {tuple(variable.shape)}"
        )
    variable.assign(value.astype(np.float32))


def _assign_dense(layer, tensors, prefix):
    _assign(layer.kernel, tensors[f"{prefix}.weight"].T, f"{prefix}.weight")
    _assign(layer.bias, tensors[f"{prefix}.bias"], f"{prefix}.bias")


def _assign_norm(layer, tensors, prefix):
    _assign(layer.gamma, tensors[f"{prefix}.weight"], f"{prefix}.weight")
    _assign(layer.beta, tensors[f"{prefix}.bias"], f"{prefix}.bias")


def load_hf_bert_weights(model, tensors):
    """Copies Hugging Face `BertModel` tensors into a `BertEncoder`.

    Args:
        model: a built `BertEncoder`.
        tensors: name -> float array, e.g. `safetensors.numpy.load_file`.
            A `bert.` prefix is dropped; without `pooler.*` tensors the
            pooler keeps its random initialisation (a warning is logged).

    Raises:
        ValueError: a tensor is missing or has the wrong shape.
    """
    tensors = {
        (k[len("bert."):] if k.startswith("bert.") else k): v
        for k, v in tensors.items()
    }
    try:
        emb = model.get_layer("embeddings")
        for part in ("word", "position", "token_type"):
            name = f"embeddings.{part}_embeddings.weight"
            layer = getattr(emb, f"{part}_embeddings")
            _assign(layer.embeddings, tensors[name], name)
        _assign_norm(emb.layer_norm, tensors, "embeddings.LayerNorm")
        for i in range(model.config.num_layers):
            block = model.get_layer(f"layer_{i}")
            for attr, hf_name in _HF_BLOCK_WEIGHTS.items():
                prefix = f"encoder.layer.{i}.{hf_name}"
                if attr.endswith("layer_norm"):
                    _assign_norm(getattr(block, attr), tensors, prefix)
                else:
                    _assign_dense(getattr(block, attr), tensors, prefix)
    except KeyError as err:
        raise ValueError(
            f"Checkpoint lacks a BERT tensor. Received: missing {err}, "
            f"first names {sorted(tensors)[:3]}"
        ) from None
    if "pooler.dense.weight" in tensors:
        _assign_dense(model.get_layer("pooler"), tensors, "pooler.dense")
    else:
        logging.warning("No pooler weights: pooled_output is untrained.")


@functools.lru_cache(maxsize=4)
def load_bert_encoder(model_dir):
    """Builds a `BertEncoder` from `model_dir`, once per folder (cached).

    Args:
        model_dir: folder with `config.json` and `model.safetensors`.

    Returns:
        `(BertConfig, BertEncoder)`; callers share the returned model.
    """
    model_dir = pathlib.Path(model_dir)
    config = BertConfig.from_model_dir(model_dir)
    model = BertEncoder(config, name="bert_encoder")
    load_hf_bert_weights(model, load_file(str(model_dir / WEIGHTS_FILE)))
    logging.info("Loaded %s: %s", model_dir, config)
    return config, model

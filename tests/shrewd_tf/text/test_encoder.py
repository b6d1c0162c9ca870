"""Tests for shrewd_tf.text.encoder against a numpy BERT and a python tokenizer.

The numpy forward pass (tests/support/bert_reference.py) and the Hugging
Face-rule tokenizer below are written from the BERT paper / HF algorithm
descriptions, independently of the Keras code: they share only the weights
file and vocab.txt.
"""

import json
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
from safetensors.numpy import load_file

from shrewd_tf.text import bert
from shrewd_tf.text import encoder as text
from tests.support.bert_reference import numpy_bert

LONG_TEXT = " ".join(f"caption{i} of a scene" for i in range(120))
SENTENCES = [
    "A man is riding a horse on the beach.",
    "Hello, world! It's 3:45 p.m. -- price: $12.50 (approx.)",
    "",
    "2024-01-01 12345 3.14159 #tags @user",
    "Café naïve – 東京",
    LONG_TEXT,
]


# === Independent references ===

# Ideograph blocks that HF's BertNormalizer pads with spaces.
CJK_BLOCKS = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
              (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF),
              (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def hf_word_pieces(s, vocab):
    """HF BertNormalizer(lowercase) + BertPreTokenizer + WordPiece."""
    chars = []
    for c in s:  # clean_text, then CJK padding
        if c in "\x00\ufffd" or (
                c not in "\t\n\r" and unicodedata.category(c)[0] == "C"):
            continue
        if c.isspace():
            chars.append(" ")
        elif any(lo <= ord(c) <= hi for lo, hi in CJK_BLOCKS):
            chars.append(f" {c} ")
        else:
            chars.append(c)
    s = unicodedata.normalize("NFD", "".join(chars))
    s = "".join(c for c in s if unicodedata.category(c) != "Mn").lower()
    words = []
    for chunk in s.split():
        word = ""
        for c in chunk:
            if (c.isascii() and not c.isalnum()) or \
                    unicodedata.category(c).startswith("P"):
                words += [word, c] if word else [c]
                word = ""
            else:
                word += c
        if word:
            words.append(word)
    pieces = []
    for word in words:
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start or len(word) > 100:
                out = ["[UNK]"]
                break
            out.append(piece)
            start = end
        pieces += out
    return pieces


# === Fixtures ===


@pytest.fixture(scope="module")
def model_dir():
    return text.default_model_dir()


@pytest.fixture(scope="module")
def weights(model_dir):
    tensors = load_file(str(model_dir / "model.safetensors"))
    return {k: v.astype(np.float64) for k, v in tensors.items()}


@pytest.fixture(scope="module")
def vocab(model_dir):
    lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {tok: i for i, tok in enumerate(lines)}


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return tf_text.BertTokenizer(str(model_dir / "vocab.txt"),
                                 lower_case=True, token_out_type=tf.string)


@pytest.fixture(scope="module")
def encoder():
    return text.SentenceEncoder()


@pytest.fixture(scope="module")
def export_dir(encoder, tmp_path_factory):
    return text.export_tf_hub(encoder, tmp_path_factory.mktemp("hub"))


def _tf_pieces(tokenizer, s):
    pieces = tokenizer.tokenize([s]).merge_dims(-2, -1).to_list()[0]
    return [p.decode("utf-8") for p in pieces]


def _model_ids(tokenizer, vocab, s):
    pieces = _tf_pieces(tokenizer, s)[:254]  # 256 with [CLS] and [SEP]
    return [vocab["[CLS]"]] + [vocab[p] for p in pieces] + [vocab["[SEP]"]]


# === Numerics ===


def test_embeddings_match_numpy_bert(encoder, weights, tokenizer, vocab):
    got = encoder.encode(SENTENCES, batch_size=4)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    for row, s in zip(got, SENTENCES):
        states, _ = numpy_bert(_model_ids(tokenizer, vocab, s), weights)
        ref = states.mean(0)
        cosine = row @ ref / np.linalg.norm(ref)
        assert cosine >= 0.9999, (s[:40], cosine)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_outputs_match_numpy_bert_with_padding(encoder, weights, tokenizer,
                                               vocab):
    batch = ["a dog", "Hello, world! It's 3:45 p.m.", "Café naïve – 東京"]
    inputs = encoder.preprocess(batch)
    out = encoder.keras_model(inputs)
    assert inputs["input_word_ids"].shape[1] == max(
        len(_model_ids(tokenizer, vocab, s)) for s in batch)
    for i, s in enumerate(batch):
        ids = _model_ids(tokenizer, vocab, s)
        np.testing.assert_array_equal(
            inputs["input_word_ids"][i, :len(ids)], ids)
        assert int(tf.reduce_sum(inputs["input_mask"][i])) == len(ids)
        states, pooled = numpy_bert(ids, weights)
        np.testing.assert_allclose(
            out["sequence_output"][i, :len(ids)], states, atol=2e-4)
        np.testing.assert_allclose(out["pooled_output"][i], pooled, atol=2e-4)
        mean = states.mean(0) / np.linalg.norm(states.mean(0))
        np.testing.assert_allclose(out["default"][i], mean, atol=1e-5)


def test_text_beyond_256_word_pieces_is_ignored(encoder, tokenizer):
    assert len(_tf_pieces(tokenizer, LONG_TEXT)) > 300
    inputs = encoder.preprocess([LONG_TEXT])
    assert inputs["input_word_ids"].shape == (1, 256)
    assert int(inputs["input_word_ids"][0, -1]) == 102  # [SEP] kept
    a, b = encoder.encode([LONG_TEXT, LONG_TEXT + " but a different end"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_batching_and_order_do_not_change_embeddings(encoder):
    one_by_one = encoder.encode(SENTENCES, batch_size=1)
    batched = encoder.encode(SENTENCES[::-1], batch_size=32)[::-1]
    np.testing.assert_allclose(one_by_one, batched, atol=2e-5)


def test_semantic_sanity(encoder):
    dog, puppy, stocks = encoder.encode(
        ["a dog runs", "a puppy is running", "stock markets fell"])
    assert dog @ puppy > dog @ stocks + 0.3


# === Tokenizer ===


def test_tokenizer_agrees_with_hf_rules_on_common_text(tokenizer, vocab):
    for s in ["A man is riding a horse.", "Hello, world! It's 3:45 p.m.",
              "Café naïve – 東京", "", "  tabs\tand\nnewlines ",
              "pneumonoultramicroscopicsilicovolcanoconiosis",
              "日本語のテキスト", "“Quotes” and — dashes"]:
        assert _tf_pieces(tokenizer, s) == hf_word_pieces(s, vocab), s


@pytest.mark.parametrize("raw, folded", [
    ("Straße", "strasse"),  # NFKC casefold; HF keeps "ß"
    ("ﬁne", "fine"),  # compatibility ligature
    ("Ｆｕｌｌ width", "full width"),
    ("wait…", "wait..."),
    ("a\x00b", "a b"),  # control: tf-text splits, HF deletes
])
def test_tokenizer_differs_from_hf_where_documented(tokenizer, vocab, raw,
                                                    folded):
    assert _tf_pieces(tokenizer, raw) == _tf_pieces(tokenizer, folded)
    assert _tf_pieces(tokenizer, raw) != hf_word_pieces(raw, vocab)


def test_replacement_character_is_unknown_not_deleted(tokenizer, vocab):
    assert _tf_pieces(tokenizer, "a \ufffd") == ["a", "[UNK]"]
    assert hf_word_pieces("a \ufffd", vocab) == ["a"]


def test_tokenizer_shared_behaviour(tokenizer, vocab):
    assert _tf_pieces(tokenizer, "Café") == ["cafe"]  # accents stripped
    assert _tf_pieces(tokenizer, "東京") == ["東", "京"]  # CJK split
    # Default-ignorable soft hyphen and zero-width space vanish in both.
    for raw in ["co\u00adoperate", "co\u200boperate"]:
        assert _tf_pieces(tokenizer, raw) == _tf_pieces(tokenizer, "cooperate")
        assert _tf_pieces(tokenizer, raw) == hf_word_pieces(raw, vocab)


# === Export ===


def test_tf_hub_export_reloads_with_same_embeddings(encoder, export_dir):
    import tensorflow_hub as hub

    sentences = SENTENCES[:5]
    expected = encoder.encode(sentences)
    preprocessor = hub.KerasLayer(str(export_dir / "preprocessor"))
    hub_encoder = hub.KerasLayer(str(export_dir / "encoder"))
    inputs = preprocessor(tf.constant(sentences))
    assert {k: v.dtype for k, v in inputs.items()} == {
        "input_word_ids": tf.int32, "input_mask": tf.int32,
        "input_type_ids": tf.int32}
    out = hub_encoder(inputs)
    n, length = inputs["input_word_ids"].shape
    assert out["sequence_output"].shape == (n, length, 384)
    assert out["pooled_output"].shape == (n, 384)
    np.testing.assert_allclose(out["default"], expected, atol=1e-5)
    assert len(hub_encoder.weights) == len(encoder.keras_model.weights)

    # The same SavedModels through their TF-Serving signatures.
    serving = preprocessor.resolved_object.signatures["serving_default"]
    inputs = serving(tf.constant(sentences))
    serving = hub_encoder.resolved_object.signatures["serving_default"]
    out = serving(**inputs)
    assert set(out) == {"sequence_output", "pooled_output", "default"}
    np.testing.assert_allclose(out["default"], expected, atol=1e-5)
    vocab_file = preprocessor.resolved_object.vocab_file.asset_path
    assert vocab_file.numpy().decode().startswith(str(export_dir))
    assert bool(preprocessor.resolved_object.do_lower_case.numpy())

    reloaded = text.SentenceEncoder(export_dir)
    np.testing.assert_allclose(reloaded.encode(sentences), expected,
                               atol=1e-5)
    assert reloaded.dim == 384


class _FakeHubEncoder(tf.Module):
    """A TF-Hub-style encoder: token states are rows of a fixed table."""

    def __init__(self, vocab_file, table):
        super().__init__()
        self.vocab_file = tf.saved_model.Asset(str(vocab_file))
        self.do_lower_case = tf.Variable(True, trainable=False)
        self.table = tf.Variable(table)

    @tf.function(input_signature=[{
        n: tf.TensorSpec([None, None], tf.int32) for n in
        ("input_word_ids", "input_mask", "input_type_ids")}])
    def __call__(self, inputs):
        states = tf.gather(self.table, inputs["input_word_ids"])
        return {"sequence_output": states, "pooled_output": states[:, 0]}


def test_hub_encoder_with_vocab_file_is_enough(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s"]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    table = np.random.default_rng(0).normal(size=(len(vocab), 4))
    tf.saved_model.save(_FakeHubEncoder(vocab_file, table.astype(np.float32)),
                        str(tmp_path / "hub"))
    single = text.SentenceEncoder(tmp_path / "hub")
    pair = text.SentenceEncoder(  # loaded objects instead of handles
        preprocessor=text.BertPreprocessor(vocab_file),
        encoder=_FakeHubEncoder(vocab_file, table.astype(np.float32)))
    for encoder in (single, pair):
        got = encoder.encode(["Hello worlds", "WORLD"], batch_size=2)
        for row, ids in zip(got, [[2, 4, 5, 6, 3], [2, 5, 3]]):
            mean = table[ids].mean(0)
            np.testing.assert_allclose(row, mean / np.linalg.norm(mean),
                                       atol=1e-6)
    assert pair.dim == 4


# === API ===


def test_eager_execution_matches_graph(encoder):
    eager = text.SentenceEncoder(execution="eager")
    np.testing.assert_allclose(eager.encode(SENTENCES[:3]),
                               encoder.encode(SENTENCES[:3]), atol=1e-5)


@pytest.mark.large
def test_xla_execution_matches_graph(encoder):
    xla = text.SentenceEncoder(execution="xla")
    np.testing.assert_allclose(xla.encode(SENTENCES), encoder.encode(SENTENCES),
                               atol=1e-4)


def test_config_comes_from_the_model_files(encoder, model_dir):
    hf = json.loads((model_dir / "config.json").read_text())
    sbert = json.loads((model_dir / "sentence_bert_config.json").read_text())
    assert encoder.config.max_seq_length == sbert["max_seq_length"] == 256
    model = encoder.keras_model
    norms = [model.get_layer("embeddings").layer_norm] + [
        getattr(model.get_layer(f"layer_{i}"), name)
        for i in range(hf["num_hidden_layers"])
        for name in ("attention_layer_norm", "output_layer_norm")]
    assert {layer.epsilon for layer in norms} == {hf["layer_norm_eps"]}


def test_model_is_loaded_once(encoder):
    before = bert.load_bert_encoder.cache_info().hits
    again = text.SentenceEncoder()
    assert again.keras_model is encoder.keras_model
    assert bert.load_bert_encoder.cache_info().hits == before + 1


def test_encode_validates_arguments(encoder):
    with pytest.raises(TypeError, match="Received"):
        encoder.encode("a single string")
    with pytest.raises(ValueError, match="batch_size=0"):
        encoder.encode(["a"], batch_size=0)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match="Received"):
        text.SentenceEncoder(preprocessor="somewhere")
    with pytest.raises(ValueError, match="execution='jit'"):
        text.SentenceEncoder(execution="jit")
    with pytest.raises(ValueError, match="max_seq_length=600"):
        text.SentenceEncoder(max_seq_length=600)

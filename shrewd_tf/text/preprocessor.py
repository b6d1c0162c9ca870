"""The BERT preprocessor: strings to the TF-Hub BERT input dict, with
`tensorflow_text.BertTokenizer` (see `shrewd_tf.text.encoder` for where its
tokenization differs from the Hugging Face tokenizer)."""

import pathlib

import tensorflow as tf
import tensorflow_text as tf_text


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

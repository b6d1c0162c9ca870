"""A fake sentence encoder for the Beam jobs that embed text.

`FakeEncoderHandler` is the real `SentenceEncoderModelHandler` with the
model swapped for `FakeEncoder`, a deterministic hashed bag of words, so a
test computes the expected embedding of a text with `fake_embedding`,
independently of the pipeline. Marker words make bad embeddings: a text
with `NAN_MARK` embeds to nan, one with `SHORT_MARK` to `SHORT_DIM` values
instead of `FAKE_DIM`.
"""

import zlib

import numpy as np

from pipeline import embeddings

FAKE_DIM = 8
NAN_MARK = "NANWORD"  # captions with this word embed to nan
SHORT_MARK = "SHORTWORD"  # captions with this word embed to SHORT_DIM values
SHORT_DIM = 5
FAKE_ENCODER_NAME = "fake-bag-of-words"


def fake_embedding(caption):
    """Hashed bag of words -> L2-normalised float32 [FAKE_DIM] (the oracle)."""
    words = caption.lower().split()
    if NAN_MARK.lower() in words:
        return np.full(FAKE_DIM, np.nan, np.float32)
    dim = SHORT_DIM if SHORT_MARK.lower() in words else FAKE_DIM
    vector = np.zeros(dim, np.float64)
    for word in words:
        code = zlib.crc32(word.encode("utf-8"))
        vector[code % dim] += 1.0 if (code >> 16) & 1 else -1.0
    vector[0] += 0.5  # never the zero vector
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class FakeEncoder:
    """Stands in for `SentenceEncoder`: same `encode(texts, batch_size)`.

    Args:
        fail: raise RuntimeError("fake encoder failure") on every call.
    """

    def __init__(self, fail=False):
        self.fail = fail

    def encode(self, texts, batch_size=32):
        if self.fail:
            raise RuntimeError("fake encoder failure")
        texts = list(texts)
        assert len(texts) <= batch_size
        return [fake_embedding(t) for t in texts]


class FakeEncoderHandler(embeddings.SentenceEncoderModelHandler):
    """The real handler with the model swapped for `FakeEncoder`.

    Args:
        fail: the encoder fails on every batch.
        **kwargs: `SentenceEncoderModelHandler` batching arguments.
    """

    def __init__(self, fail=False, **kwargs):
        super().__init__(FAKE_ENCODER_NAME, **kwargs)
        self.fail = fail

    def load_model(self):
        return FakeEncoder(self.fail)

"""Tests for pipeline.embeddings: the sentence-encoder handler, EmbedCaptions.

Bulk cases use `FakeEncoderHandler` of tests/support/sentence_encoders, a
deterministic hashed bag of words, so the expected embedding of a caption
is computed independently of the pipeline. One test runs the real default
encoder on three captions.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402
from apache_beam.testing.util import BeamAssertException  # noqa: E402
from apache_beam.testing.util import assert_that  # noqa: E402
from apache_beam.testing.util import equal_to  # noqa: E402

from pipeline import dead_letters  # noqa: E402
from pipeline import embeddings  # noqa: E402
from shrewd_tf.data import records as data  # noqa: E402
from tests.support.sentence_encoders import FAKE_DIM  # noqa: E402
from tests.support.sentence_encoders import FAKE_ENCODER_NAME  # noqa: E402
from tests.support.sentence_encoders import NAN_MARK  # noqa: E402
from tests.support.sentence_encoders import SHORT_MARK  # noqa: E402
from tests.support.sentence_encoders import FakeEncoder  # noqa: E402
from tests.support.sentence_encoders import FakeEncoderHandler  # noqa: E402
from tests.support.sentence_encoders import fake_embedding  # noqa: E402


def make_record(record_id, caption, label=0, embedding=None):
    return data.ImageRecord(
        id=record_id,
        image=b"\x89PNG fake " + record_id.encode(),
        label=label,
        label_name=f"class{label}",
        caption=caption,
        caption_embedding=embedding,
    )


def check_embedded(expected_captions):
    """Matcher: records are exactly `{id: caption}` with fake embeddings."""

    def check(records):
        got = {r.id: r for r in records}
        if sorted(got) != sorted(expected_captions) or len(records) != len(got):
            raise BeamAssertException(
                f"ids {sorted(r.id for r in records)} != "
                f"{sorted(expected_captions)}"
            )
        for record_id, caption in expected_captions.items():
            record = got[record_id]
            assert record.caption == caption
            assert record.image == b"\x89PNG fake " + record_id.encode()
            assert record.caption_embedding.dtype == np.float32
            np.testing.assert_allclose(
                record.caption_embedding, fake_embedding(caption), atol=1e-7
            )

    return check


def dead_letter_summary(letter):
    return (letter.id, letter.stage, letter.reason.split(":")[0])


def check_reasons_name_the_field(letters):
    for letter in letters:
        field = ("'caption'" if letter.id in ("empty", "blank")
                 else "'caption_embedding'")
        if field not in letter.reason:
            raise BeamAssertException(f"{field} not in {letter}")


def test_embed_captions_embeds_good_and_dead_letters_bad():
    good = {
        "a": "a dog runs on the beach",
        "b": "Two cats sleep",
        "c": "a red car",
        "d": "a dog runs on the beach",  # same caption, other record
        "a ": "a blue bird",  # already embedded: replaced
    }
    records = [make_record(k, v, label=i) for i, (k, v) in
               enumerate(good.items())]
    records[-1] = records[-1].with_embedding(np.ones(3))
    records += [
        make_record("empty", ""),
        make_record("blank", " \t\n"),
        make_record("nan", f"a {NAN_MARK} caption"),
        make_record("short", f"a {SHORT_MARK} caption"),
    ]
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    embedded, dead = (
        pipeline | beam.Create(records)
        | embeddings.EmbedCaptions(model_handler=FakeEncoderHandler(
            max_batch_size=3))
    )
    assert_that(embedded, check_embedded(good), label="Embedded")
    assert_that(
        embedded | beam.Map(lambda r: (r.id, r.label, r.label_name)),
        equal_to([(k, i, f"class{i}") for i, k in enumerate(good)]),
        label="LabelsKept",
    )
    assert_that(
        dead | beam.Map(dead_letter_summary),
        equal_to([
            ("empty", "embed_captions", "empty caption"),
            ("blank", "embed_captions", "empty caption"),
            ("nan", "embed_captions", "nan embedding"),
            ("short", "embed_captions", "wrong embedding dim"),
        ]),
        label="DeadLetters",
    )
    assert_that(dead, check_reasons_name_the_field, label="Reasons")
    result = pipeline.run()
    result.wait_until_finish()
    assert embeddings.embedding_dim(result) == FAKE_DIM
    assert dead_letters.dead_letter_counts(result) == {"embed_captions": 4}


def test_most_common_width_wins_and_explicit_dim_overrides():
    # Two SHORT_DIM captions against one FAKE_DIM: without embedding_dim the
    # majority width is kept; with embedding_dim=FAKE_DIM the other way; with
    # only empty captions nothing is embedded.
    records = [
        make_record("s1", f"one {SHORT_MARK}"),
        make_record("s2", f"two {SHORT_MARK}"),
        make_record("f1", "full width"),
    ]
    cases = {
        "Majority": (records, None, ["s1", "s2"], ["f1"]),
        "Explicit": (records, FAKE_DIM, ["f1"], ["s1", "s2"]),
        "AllEmpty": ([make_record("e", "")], None, [], ["e"]),
    }
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        for name, (inputs, dim, kept, rejected) in cases.items():
            embedded, dead = (
                pipeline | f"Create{name}" >> beam.Create(inputs)
                | f"Embed{name}" >> embeddings.EmbedCaptions(
                    model_handler=FakeEncoderHandler(), embedding_dim=dim)
            )
            assert_that(embedded | f"Ids{name}" >> beam.Map(lambda r: r.id),
                        equal_to(kept), label=f"Kept{name}")
            assert_that(dead | f"DeadIds{name}" >> beam.Map(lambda d: d.id),
                        equal_to(rejected), label=f"Rejected{name}")


def test_handler_settings_and_validation():
    handler = embeddings.SentenceEncoderModelHandler(
        min_batch_size=2, max_batch_size=16,
        share_model_across_processes=True)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 2,
                                               "max_batch_size": 16}
    assert handler.share_model_across_processes()
    assert handler.encoder_name == embeddings.DEFAULT_ENCODER_NAME
    assert handler.get_metrics_namespace() == embeddings.METRICS_NAMESPACE
    default = embeddings.SentenceEncoderModelHandler("/models/bert")
    assert default.batch_elements_kwargs()["max_batch_size"] == 64
    assert not default.share_model_across_processes()
    assert default.encoder_name == "/models/bert"
    assert default.get_num_bytes(["ab", "é"]) == 4
    with pytest.raises(ValueError, match="max_batch_size=0"):
        embeddings.SentenceEncoderModelHandler(max_batch_size=0)
    with pytest.raises(ValueError, match="min_batch_size=5"):
        embeddings.SentenceEncoderModelHandler(min_batch_size=5,
                                               max_batch_size=4)
    with pytest.raises(ValueError, match="embedding_dim=0"):
        embeddings.EmbedCaptions(embedding_dim=0)


def test_run_inference_encodes_one_batch_in_one_call():
    calls = []

    class CountingEncoder(FakeEncoder):
        def encode(self, texts, batch_size=32):
            calls.append((len(texts), batch_size))
            return super().encode(texts, batch_size)

    handler = FakeEncoderHandler()
    texts = ["a b", "c d e", "f"]
    results = list(handler.run_inference(texts, CountingEncoder()))
    assert calls == [(3, 3)]
    assert [r.example for r in results] == texts
    for result, text in zip(results, texts):
        np.testing.assert_allclose(result.inference, fake_embedding(text))
        assert result.model_id == FAKE_ENCODER_NAME


def test_real_default_encoder_matches_sentence_encoder():
    text = pytest.importorskip("shrewd_tf.text.encoder")
    try:
        text.default_model_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    captions = {"r0": "A dog runs along the beach.",
                "r1": "Two people ride bicycles in a busy city street.",
                "r2": "snow"}
    expected = dict(zip(captions, text.SentenceEncoder().encode(
        list(captions.values()))))

    def check(records):
        assert sorted(r.id for r in records) == sorted(captions)
        for record in records:
            got = record.caption_embedding
            assert got.shape == (384,)
            cosine = got @ expected[record.id] / (
                np.linalg.norm(got) * np.linalg.norm(expected[record.id]))
            assert cosine >= 0.9999, (record.id, cosine)

    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        embedded, dead = (
            pipeline
            | beam.Create([make_record(k, v) for k, v in captions.items()])
            | embeddings.EmbedCaptions(max_batch_size=2)
        )
        assert_that(embedded, check, label="Embedded")
        assert_that(dead, equal_to([]), label="NoDeadLetters")

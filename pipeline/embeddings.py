"""Caption embeddings in Beam: a sentence-encoder ModelHandler for RunInference.

`SentenceEncoderModelHandler` loads `shrewd_tf.text.encoder.SentenceEncoder` once
per worker (`load_model`) and embeds each batch that `RunInference` forms
in one `encode` call. `EmbedCaptions` is the step the jobs use:
`ImageRecord`s in, `(records with caption_embedding, dead_letters)` out.

Rules of `EmbedCaptions` (stage `embed_captions` in the dead letters):

* an empty or whitespace-only caption is a dead letter ("empty caption"),
  never sent to the encoder;
* an embedding with a nan or inf value is a dead letter ("nan embedding");
* every embedding must have one width E, because the TFRecord spec reads
  `caption_embedding` as a fixed-length `[E]` feature: E is `embedding_dim`
  when given, else the most common width among this run's embeddings
  (ties: the smaller); rows of another width are dead letters;
* a record that already has an embedding gets the new one.

Each caption is keyed by its record (`KeyedModelHandler`), so an embedding
rejoins its record without a shuffle; record ids need not be unique.

Example:
    records, dead = records | EmbedCaptions(max_batch_size=64)
"""

import collections
import logging

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference_base

from pipeline import dead_letters

log = logging.getLogger(__name__)

STAGE = "embed_captions"
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"
DEFAULT_MAX_BATCH_SIZE = 64
METRICS_NAMESPACE = "shrewd_sentence_encoder"
EMBEDDING_DIM_METRIC = "embedding_dim"


class SentenceEncoderModelHandler(inference_base.ModelHandler):
    """RunInference handler: strings -> float32 `[E]` sentence embeddings.

    Args:
        text_encoder: None (all-MiniLM-L6-v2), or any model path or TF-Hub
            handle that `shrewd_tf.text.encoder.SentenceEncoder` accepts.
        min_batch_size: smallest batch `BatchElements` forms.
        max_batch_size: largest batch; one `encode` call per batch.
        share_model_across_processes: one model per machine shared by the
            worker processes (Beam's `MultiProcessShared`) instead of one
            per process.
        execution: `SentenceEncoder` execution ("graph", "xla", "eager").

    Raises:
        ValueError: a batch size < 1 or min > max.
    """

    def __init__(self, text_encoder=None, *, min_batch_size=1,
                 max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                 share_model_across_processes=False, execution="graph"):
        if int(min_batch_size) < 1 or int(max_batch_size) < int(min_batch_size):
            raise ValueError(
                "Batch sizes must satisfy 1 <= min_batch_size <= "
                f"max_batch_size. Received: min_batch_size={min_batch_size}, "
                f"max_batch_size={max_batch_size}"
            )
        super().__init__(min_batch_size=int(min_batch_size),
                         max_batch_size=int(max_batch_size))
        self.text_encoder = text_encoder
        self.min_batch_size = int(min_batch_size)
        self.max_batch_size = int(max_batch_size)
        self.share_across_processes = bool(share_model_across_processes)
        self.execution = execution

    @property
    def encoder_name(self):
        """What `DatasetInfo.text_encoder` records for this encoder."""
        if self.text_encoder is None:
            return DEFAULT_ENCODER_NAME
        return str(self.text_encoder)

    def load_model(self):
        from shrewd_tf.text import encoder as text

        log.info("loading sentence encoder %s", self.encoder_name)
        return text.SentenceEncoder(self.text_encoder,
                                    execution=self.execution)

    def run_inference(self, batch, model, inference_args=None):
        """Embeds `batch` (N strings) in one `model.encode` call.

        Yields:
            N `PredictionResult(example=text, inference=float32 [E])`.

        Raises:
            ValueError: the model returned another number of rows.
        """
        texts = list(batch)
        embeddings = model.encode(texts, batch_size=max(1, len(texts)))
        if len(embeddings) != len(texts):
            raise ValueError(
                f"The encoder returned {len(embeddings)} embeddings for "
                f"{len(texts)} texts. Received: encoder={model!r}"
            )
        # Row by row: a broken model may return rows of different widths,
        # which EmbedCaptions turns into dead letters.
        for text, embedding in zip(texts, embeddings):
            yield inference_base.PredictionResult(
                text, np.asarray(embedding, np.float32),
                model_id=self.encoder_name,
            )

    def get_num_bytes(self, batch):
        return sum(len(text.encode("utf-8")) for text in batch)

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.min_batch_size,
                "max_batch_size": self.max_batch_size}

    def share_model_across_processes(self):
        return self.share_across_processes

    def get_metrics_namespace(self):
        return METRICS_NAMESPACE


class _RecordKeyedModelHandler(inference_base.KeyedModelHandler):
    """`(record, caption)` pairs; counts caption bytes only, so the images
    riding along as keys are not pickled again for the byte metric."""

    def get_num_bytes(self, batch):
        return self._unkeyed.get_num_bytes([caption for _, caption in batch])


class _MostCommonWidth(beam.CombineFn):
    """Embedding widths -> the most common one (ties: smaller); None if none."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, counts, width):
        counts[width] += 1
        return counts

    def merge_accumulators(self, accumulators):
        merged = collections.Counter()
        for counts in accumulators:
            merged.update(counts)
        return merged

    def extract_output(self, counts):
        if not counts:
            return None
        return min(counts, key=lambda width: (-counts[width], width))


def _embedding_width(keyed_prediction):
    """`(key, PredictionResult)` -> the embedding's width, -1 if not 1-D."""
    embedding = np.asarray(keyed_prediction[1].inference)
    return int(embedding.shape[0]) if embedding.ndim == 1 else -1


class _RejectEmptyCaptions(beam.DoFn):
    def process(self, keyed_record):
        _, record = keyed_record
        if not record.caption.strip():
            yield dead_letters.dead_letter(
                record.id, STAGE,
                "empty caption: field 'caption' is empty or whitespace. "
                f"Received: caption={record.caption!r}",
            )
            return
        yield keyed_record


class _AttachEmbedding(beam.DoFn):
    """`((key, record), PredictionResult)` -> `(key, record with its
    embedding)`, or a dead letter naming what is wrong with the embedding."""

    def __init__(self):
        super().__init__()
        self._width = beam.metrics.Metrics.distribution(
            dead_letters.METRICS_NAMESPACE, EMBEDDING_DIM_METRIC
        )

    def process(self, keyed_prediction, expected_width):
        (key, record), prediction = keyed_prediction
        embedding = np.asarray(prediction.inference, np.float32)
        if embedding.ndim != 1 or embedding.size == 0:
            yield dead_letters.dead_letter(
                record.id, STAGE,
                "field 'caption_embedding' must be a non-empty vector. "
                f"Received: shape={embedding.shape}",
            )
            return
        bad = int(np.count_nonzero(~np.isfinite(embedding)))
        if bad:
            yield dead_letters.dead_letter(
                record.id, STAGE,
                f"nan embedding: field 'caption_embedding' has {bad} nan or "
                f"inf values of {embedding.size}. Received: "
                f"caption={record.caption!r}",
            )
            return
        if expected_width is not None and embedding.size != expected_width:
            yield dead_letters.dead_letter(
                record.id, STAGE,
                "wrong embedding dim: field 'caption_embedding' must have "
                f"{expected_width} values. Received: dim={embedding.size}",
            )
            return
        self._width.update(embedding.size)
        yield key, record.with_embedding(embedding)


def _default_handler(text_encoder, max_batch_size, model_handler):
    return model_handler or SentenceEncoderModelHandler(
        text_encoder, max_batch_size=max_batch_size
    )


def _check_embedding_dim(embedding_dim):
    if embedding_dim is not None and int(embedding_dim) < 1:
        raise ValueError(
            f"embedding_dim must be >= 1. Received: "
            f"embedding_dim={embedding_dim}"
        )
    return None if embedding_dim is None else int(embedding_dim)


class EmbedKeyedCaptions(beam.PTransform):
    """`(key, ImageRecord)` pairs -> `((key, embedded record), dead_letters)`.

    `EmbedCaptions` for records that carry a key along (e.g. their split),
    so that one model serves several inputs. Same arguments and rules.
    """

    def __init__(self, text_encoder=None,
                 max_batch_size=DEFAULT_MAX_BATCH_SIZE, model_handler=None,
                 embedding_dim=None):
        super().__init__()
        self.text_encoder = text_encoder
        self.max_batch_size = max_batch_size
        self.model_handler = _default_handler(text_encoder, max_batch_size,
                                              model_handler)
        self.embedding_dim = _check_embedding_dim(embedding_dim)

    def expand(self, keyed_records):
        checked = keyed_records | "RejectEmptyCaptions" >> beam.ParDo(
            _RejectEmptyCaptions()
        ).with_outputs(dead_letters.DEAD_LETTER_TAG, main="captioned")
        predictions = (
            checked.captioned
            | "KeyByRecord" >> beam.Map(lambda pair: (pair, pair[1].caption))
            | "RunInference" >> inference_base.RunInference(
                _RecordKeyedModelHandler(self.model_handler)
            )
        )
        if self.embedding_dim is None:
            expected_width = beam.pvalue.AsSingleton(
                predictions
                | "Width" >> beam.Map(_embedding_width)
                | "MostCommonWidth" >> beam.CombineGlobally(_MostCommonWidth())
            )
        else:
            expected_width = self.embedding_dim
        attached = predictions | "AttachEmbedding" >> beam.ParDo(
            _AttachEmbedding(), expected_width
        ).with_outputs(dead_letters.DEAD_LETTER_TAG, main="embedded")
        rejected = (
            checked[dead_letters.DEAD_LETTER_TAG],
            attached[dead_letters.DEAD_LETTER_TAG],
        ) | "FlattenDeadLetters" >> beam.Flatten()
        return attached.embedded, rejected


class EmbedCaptions(beam.PTransform):
    """`ImageRecord`s -> `(records with caption_embedding, dead_letters)`.

    See the module docstring for the dead-letter rules. The embedding width
    of the good records goes to the Beam distribution metric
    `shrewd/embedding_dim` (read it with `embedding_dim(result)`).

    Args:
        text_encoder: for the default handler: None (all-MiniLM-L6-v2) or a
            model path / TF-Hub handle.
        max_batch_size: for the default handler: captions per `encode`.
        model_handler: a ModelHandler of strings -> `[E]` vectors to use
            instead (e.g. a `SentenceEncoderModelHandler` subclass).
        embedding_dim: the required width E; default: the most common.

    Raises:
        ValueError: `embedding_dim < 1`.
    """

    def __init__(self, text_encoder=None, max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                 model_handler=None, embedding_dim=None):
        super().__init__()
        self.text_encoder = text_encoder
        self.max_batch_size = max_batch_size
        self.model_handler = _default_handler(text_encoder, max_batch_size,
                                              model_handler)
        self.embedding_dim = _check_embedding_dim(embedding_dim)

    def expand(self, records):
        embedded, rejected = (
            records
            | "KeyByNone" >> beam.Map(lambda record: (None, record))
            | "EmbedKeyed" >> EmbedKeyedCaptions(
                model_handler=self.model_handler,
                embedding_dim=self.embedding_dim,
            )
        )
        return embedded | "DropKey" >> beam.Values(), rejected


def embedding_dim(pipeline_result):
    """The caption-embedding width E of a finished pipeline, None if no
    record got an embedding.

    Raises:
        ValueError: the good records disagree on E (cannot happen unless the
            metric was merged from two `EmbedCaptions` with other widths).
    """
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter()
        .with_namespace(dead_letters.METRICS_NAMESPACE)
        .with_name(EMBEDDING_DIM_METRIC)
    )
    widths = set()
    for distribution in query["distributions"]:
        value = distribution.committed or distribution.attempted
        if value is not None and value.count:
            widths.update((int(value.min), int(value.max)))
    if len(widths) > 1:
        raise ValueError(
            f"Caption embeddings of different widths. Received: "
            f"{sorted(widths)}"
        )
    return widths.pop() if widths else None

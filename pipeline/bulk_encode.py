"""Bulk image encoding with an exported SavedModel, through `RunInference`.

`EncodeImages` turns `data.ImageRecord`s into `EncodedRecord(id, code,
metadata)`: the record's encoded image bytes go through one string-input
signature of a SavedModel (`serving_default` of an export takes encoded
images tf.string [N] and returns {"code": float32 [N, d], "bits": ...}),
and the float code of each image comes back with the record's label,
label_name, caption and image_uri. Nothing here decodes or resizes: the
signature runs `preprocess.preprocess_image` in its graph, the function
that made the training inputs, so records stored by `make_tfrecords` (or
original image files) get the codes the model was evaluated with.

The SavedModel is loaded once per worker by `SavedModelEncoderHandler`
(a Beam `ModelHandler`, wrapped in a `KeyedModelHandler` so each image keeps
its record). A batch is one signature call; when the call fails with
`InvalidArgumentError` (an undecodable or wrongly sized image), the batch is
retried one image at a time, so only the bad images become dead letters
(stage "encode_image"); codes with NaN or inf values become dead letters of
stage "nonfinite_code".

`saved_model_dir` is a version directory (`export_root/<model>/<version>/`,
holding `saved_model.pb`) or a model directory, whose highest integer
version is used (resolved once, when the transform is built, so every
worker encodes with the same version). Both the version directories and
the signature check are read by `shrewd_tf.export` (`versions`,
`signatures`), as the export wrote them.

Example:
    codes, dead = records | EncodeImages("exports/shrewd", max_batch_size=256)
"""

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference_base

from pipeline.dead_letters import DEAD_LETTER_TAG
from pipeline.dead_letters import dead_letter
from shrewd_tf import contract
from shrewd_tf.export.signatures import inspect_signature
from shrewd_tf.export.versions import resolve_saved_model_dir

log = logging.getLogger(__name__)

ENCODE_STAGE = "encode_image"
NONFINITE_STAGE = "nonfinite_code"


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedRecord:
    """One encoded image.

    A dataclass, not a NamedTuple: Beam would infer a row schema for a
    NamedTuple and cannot for an ndarray or dict field.

    Attributes:
        id: the record id.
        code: float32 [d], the signature's `output_key` output.
        metadata: {"label": int, "label_name": str, "caption": str,
            "image_uri": str}.
    """

    id: str
    code: np.ndarray
    metadata: dict


@dataclasses.dataclass(frozen=True)
class EncodeFailure:
    """The inference result of an image the signature could not encode."""

    reason: str


# === Signatures ===


def signature_input_name(function):
    """The single tf.string input name of a loaded signature function.

    Args:
        function: a concrete function, e.g. `loaded.signatures["..."]`.

    Returns:
        The keyword its encoded images are passed under.

    Raises:
        ValueError: if it does not take exactly one tf.string input.
    """
    import tensorflow as tf

    args, kwargs = function.structured_input_signature
    specs = dict(kwargs)
    specs.update({spec.name or f"arg{i}": spec for i, spec in enumerate(args)})
    if len(specs) != 1 or next(iter(specs.values())).dtype != tf.string:
        raise ValueError(
            "The signature must take one tf.string input of encoded images. "
            f"Received: {specs}"
        )
    return next(iter(specs))


# === Model handler ===


class _LoadedEncoder:
    """A loaded SavedModel and the signature function called on batches."""

    def __init__(self, module, function, input_name):
        self.module = module  # Keeps the function's variables alive.
        self.function = function
        self.input_name = input_name


class SavedModelEncoderHandler(inference_base.ModelHandler):
    """Encodes batches of image bytes with a SavedModel signature.

    Examples are encoded image bytes; each inference is the float32 [d]
    code (`output_key` output), or an `EncodeFailure` for an image the
    signature rejected (see the module docstring).

    Args:
        saved_model_dir: a SavedModel directory (see
            `export.versions.resolve_saved_model_dir`; not resolved here).
        signature: signature key; it must take one tf.string input.
        output_key: the output that holds the codes.
        min_batch_size, max_batch_size: batch sizes for `RunInference`.
    """

    def __init__(
        self,
        saved_model_dir,
        signature=contract.SERVING_SIGNATURE,
        output_key=contract.CODE_OUTPUT,
        min_batch_size=1,
        max_batch_size=256,
    ):
        super().__init__(
            min_batch_size=min_batch_size, max_batch_size=max_batch_size
        )
        self.saved_model_dir = saved_model_dir
        self.signature = signature
        self.output_key = output_key

    def load_model(self):
        import tensorflow as tf

        module = tf.saved_model.load(self.saved_model_dir)
        if self.signature not in module.signatures:
            raise ValueError(
                f"{self.saved_model_dir} has no signature {self.signature!r}. "
                f"Available: {sorted(module.signatures.keys())}"
            )
        function = module.signatures[self.signature]
        log.info("loaded %s [%s]", self.saved_model_dir, self.signature)
        return _LoadedEncoder(module, function, signature_input_name(function))

    def _encode(self, model, images):
        import tensorflow as tf

        outputs = model.function(
            **{model.input_name: tf.constant(images, dtype=tf.string)}
        )
        return np.asarray(outputs[self.output_key], np.float32)

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf

        images = list(batch)
        try:
            codes = list(self._encode(model, images))
        except tf.errors.InvalidArgumentError:
            # Some image in the batch is bad: find it, keep the others.
            codes = []
            for image in images:
                try:
                    codes.append(self._encode(model, [image])[0])
                except tf.errors.InvalidArgumentError as error:
                    message = error.message.strip().splitlines()
                    codes.append(EncodeFailure(message[0] if message else ""))
        return [
            inference_base.PredictionResult(image, code)
            for image, code in zip(images, codes)
        ]

    def get_num_bytes(self, batch):
        return sum(len(image) for image in batch)

    def get_metrics_namespace(self):
        return "shrewd_encode"


# === Transform ===


def image_uri(record_id, image_uri_prefix=""):
    """`prefix + id`, or the prefix as a template when it holds "{id}"
    (e.g. "images/{id}.png")."""
    if "{id}" in image_uri_prefix:
        return image_uri_prefix.replace("{id}", record_id)
    return image_uri_prefix + record_id


def record_metadata(record, image_uri_prefix=""):
    """The metadata columns of an `ImageRecord` for the index table."""
    return {
        "label": int(record.label),
        "label_name": record.label_name,
        "caption": record.caption,
        "image_uri": image_uri(record.id, image_uri_prefix),
    }


class _SplitEncoded(beam.DoFn):
    """(key, PredictionResult) -> EncodedRecord, or a dead letter."""

    def process(self, keyed):
        (record_id, metadata), result = keyed
        code = result.inference
        if isinstance(code, EncodeFailure):
            yield dead_letter(record_id, ENCODE_STAGE, code.reason)
            return
        code = np.asarray(code, np.float32)
        if code.ndim != 1 or not np.all(np.isfinite(code)):
            reason = (
                f"code must be a finite vector. Received: shape={code.shape}, "
                f"non-finite values={int(np.sum(~np.isfinite(code)))}"
            )
            yield dead_letter(record_id, NONFINITE_STAGE, reason)
            return
        yield EncodedRecord(record_id, code, metadata)


class EncodeImages(beam.PTransform):
    """`ImageRecord`s -> (`EncodedRecord`s, `DeadLetter`s).

    Args:
        saved_model_dir: a version directory or a model directory (its
            highest integer version); resolved and checked when built.
        signature: a signature taking encoded images tf.string [N].
        output_key: the signature output holding float codes [N, d].
        max_batch_size: images per signature call (at most).
        image_uri_prefix: prepended to the record id to make image_uri,
            or a template with "{id}" ("images/{id}.png").

    Raises:
        FileNotFoundError: no SavedModel at `saved_model_dir`.
        ValueError: the signature is missing, takes no encoded images or
            has no `output_key` output.
    """

    def __init__(
        self,
        saved_model_dir,
        signature=contract.SERVING_SIGNATURE,
        output_key=contract.CODE_OUTPUT,
        max_batch_size=256,
        image_uri_prefix="",
    ):
        super().__init__()
        self.saved_model_dir = resolve_saved_model_dir(saved_model_dir)
        self.signature_info = inspect_signature(
            self.saved_model_dir, signature, output_key
        )
        self.handler = inference_base.KeyedModelHandler(
            SavedModelEncoderHandler(
                self.saved_model_dir,
                signature=signature,
                output_key=output_key,
                max_batch_size=max_batch_size,
            )
        )
        self.image_uri_prefix = image_uri_prefix

    def expand(self, records):
        prefix = self.image_uri_prefix
        results = (
            records
            | "Key" >> beam.Map(
                lambda r: ((r.id, record_metadata(r, prefix)), r.image)
            )
            | "RunInference" >> inference_base.RunInference(self.handler)
            | "Split" >> beam.ParDo(_SplitEncoded()).with_outputs(
                DEAD_LETTER_TAG, main="codes"
            )
        )
        return results.codes, results[DEAD_LETTER_TAG]

"""Loaded SavedModel versions: `Servable` and its runnable `Signature`s.

A `Servable` is one version directory loaded with `tf.saved_model.load`
(tag "serve"). Its signatures are served generically from the SavedModel's
own signature functions (any input names, dtypes and shapes, as TF Serving
does), and its SignatureDefs are read from saved_model.pb for the metadata
APIs. `warm_up()` replays `assets.extra/tf_serving_warmup_requests`.
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving import tensors
from serving.errors import from_tensorflow_error
from serving.errors import invalid_argument
from shrewd_tf import contract
from shrewd_tf.export import signatures

SERVE_TAG = contract.SERVE_TAG
DEFAULT_SIGNATURE = contract.SERVING_SIGNATURE
WARMUP_FILE = os.path.join(contract.ASSETS_EXTRA_DIR, contract.WARMUP_FILE)


# === Signatures ===


class Signature:
    """One runnable signature of a loaded SavedModel.

    Args:
        name: signature key, e.g. `contract.SERVING_SIGNATURE`.
        function: the SavedModel's signature `ConcreteFunction`.
        scheduler: `serving.batching.BatchScheduler` that batches `run`
            with concurrent runs, or None (each run calls the function).

    Attributes:
        inputs: {name: tf.TensorSpec} the function takes.
        outputs: {name: tf.TensorSpec} it returns.
    """

    def __init__(self, name, function, scheduler=None):
        self.name = name
        self._function = function
        self._scheduler = scheduler
        _, self.inputs = function.structured_input_signature
        self.outputs = dict(function.structured_outputs)

    def run(self, arrays, max_batch_size=None, output_filter=()):
        """Runs the signature on NumPy inputs (batched with concurrent runs
        when the servable has a `serving.batching.BatchScheduler` and every
        input has a batch dimension of the same size).

        Args:
            arrays: {input name: np.ndarray}, exactly the signature's inputs,
                each of the input's dtype (object of bytes for strings).
            max_batch_size: refuse inputs whose first dimension is larger.
            output_filter: output names to return (default: all).

        Returns:
            {output name: np.ndarray}.

        Raises:
            ServingError: INVALID_ARGUMENT for missing / extra inputs, wrong
                dtype or shape, a batch over `max_batch_size`, unknown output
                names, or an op error on the values (e.g. an undecodable
                image); the op's own code for other TF errors; UNAVAILABLE
                when the batch queue is full.
        """
        feeds = self._feeds(arrays, max_batch_size, output_filter)
        output_filter = tuple(output_filter)
        sizes = {t.shape[0] if t.shape.rank else None for t in feeds.values()}
        if self._scheduler is None or len(sizes) != 1 or None in sizes:
            return self._call(feeds, output_filter)
        (size,) = sizes
        if size == 0:
            return self._call(feeds, output_filter)
        return self._scheduler.run(self._call, feeds, size, output_filter)

    def _feeds(self, arrays, max_batch_size, output_filter):
        """{input name: tf.Tensor} of checked, converted inputs."""
        if set(arrays) != set(self.inputs):
            raise invalid_argument(
                f"Signature {self.name!r} takes inputs {sorted(self.inputs)}. "
                f"Received: {sorted(arrays)}"
            )
        unknown = set(output_filter) - set(self.outputs)
        if unknown:
            raise invalid_argument(
                f"output_filter names outputs not in signature {self.name!r} "
                f"(outputs: {sorted(self.outputs)}). "
                f"Received: {sorted(unknown)}"
            )
        feeds = {}
        for name, array in arrays.items():
            spec = self.inputs[name]
            array = np.asarray(array)
            _check_shape(name, array.shape, spec)
            if (
                max_batch_size is not None
                and array.ndim
                and (array.shape[0] > max_batch_size)
            ):
                raise invalid_argument(
                    f"Input {name!r} has batch size {array.shape[0]}, over "
                    f"the server's max_batch_size={max_batch_size}."
                )
            try:
                feeds[name] = tf.constant(array, dtype=spec.dtype)
            except (TypeError, ValueError) as e:
                raise invalid_argument(
                    f"Input {name!r} cannot be converted to "
                    f"{spec.dtype.name}: {e}"
                ) from None
        return feeds

    def _call(self, feeds, output_filter):
        """One call of the signature function: {output name: np.ndarray}."""
        try:
            results = self._function(**feeds)
        except tf.errors.OpError as e:
            raise from_tensorflow_error(e) from None
        names = output_filter or results.keys()
        return {name: results[name].numpy() for name in names}


def _check_shape(name, shape, spec):
    """Raises INVALID_ARGUMENT unless `shape` fits the spec's shape."""
    expected = spec.shape
    if expected.rank is None:
        return
    if len(shape) != expected.rank or any(
        dim is not None and dim != got for dim, got in zip(expected, shape)
    ):
        wanted = [-1 if d is None else d for d in expected.as_list()]
        raise invalid_argument(
            f"Input {name!r} must have shape {wanted} (-1: any). "
            f"Received: shape={list(shape)}"
        )


# === Servables ===


class Servable:
    """One loaded version of a model: its signatures and SignatureDefs.

    Args:
        name: model name.
        version: int version (its directory name).
        path: the version directory.
        scheduler: `serving.batching.BatchScheduler` batching its
            signatures' runs, or None.

    Raises:
        Exception: whatever loading raises (a missing / corrupt SavedModel).
    """

    def __init__(self, name, version, path, scheduler=None):
        self.name = name
        self.version = version
        self.path = path
        self.removal_logged = False
        self.signature_defs = signatures.signature_defs(path, SERVE_TAG)
        self._loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        self.signatures = {
            key: Signature(key, function, scheduler)
            for key, function in self._loaded.signatures.items()
        }

    def signature(self, name):
        """Returns the `Signature` called `name` ("" means serving_default).

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown signature name, as
                TF Serving answers.
        """
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid_argument(
                f'Serving signature name: "{name}" not found in signature '
                f"def. Signatures of {self.name} version {self.version}: "
                f"{sorted(self.signatures)}"
            )
        return self.signatures[name]

    def signature_def_map(self):
        """`tensorflow.serving.SignatureDefMap` of the SavedModel."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.signature_defs.items():
            result.signature_def[key].CopyFrom(value)
        return result

    def warm_up(self, max_requests=1000):
        """Replays `assets.extra/tf_serving_warmup_requests` (PredictLogs).

        Raises:
            ServingError or tf.errors.OpError: when a warmup request fails,
                which fails the load, as in TF Serving.
        """
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(max_requests):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if not log.HasField("predict_log"):
                continue
            request = log.predict_log.request
            signature = self.signature(request.model_spec.signature_name)
            arrays = {
                key: tensors.tensor_proto_to_array(proto, f"warmup.{key}")
                for key, proto in request.inputs.items()
            }
            signature.run(arrays)
            count += 1
        return count

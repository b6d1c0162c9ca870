"""gRPC API: TF Serving's `PredictionService` and `ModelService`.

Implemented with the protos and stubs of `tensorflow_serving.apis`, so an
unchanged TF Serving client works:

* `PredictionService.Predict`: `PredictRequest.inputs` (TensorProtos whose
  dtype must equal the signature's), optional `output_filter`;
  the response's model_spec carries the version and signature used.
* `PredictionService.GetModelMetadata`: metadata_field ["signature_def"],
  answered with a packed `SignatureDefMap`.
* `ModelService.GetModelStatus`: the versions' `ModelVersionStatus`.

Classify, Regress, MultiInference and HandleReloadConfigRequest answer
UNIMPLEMENTED (the base servicer's default). Request errors abort with the
`ServingError`'s code (INVALID_ARGUMENT, NOT_FOUND...); unexpected
exceptions with INTERNAL; the server keeps running.
"""

import logging
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import tensors
from serving.errors import ServingError
from serving.errors import invalid_argument

_SIGNATURE_DEF_FIELD = "signature_def"


def _call(context, method, function, metrics=None):
    """Runs `function()`; aborts the RPC with the error's status code.

    `metrics` (a `serving.metrics.Metrics`) records the call as endpoint
    "grpc_<method>" with the status code's name.
    """
    start = time.perf_counter()
    code, message = grpc.StatusCode.OK, None
    try:
        return function()
    except ServingError as e:
        code, message = e.code, e.message
    except Exception as e:  # A bug answers INTERNAL; the server keeps going.
        logging.exception("Error answering gRPC %s", method)
        code, message = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
    finally:
        if metrics is not None:
            metrics.observe(
                f"grpc_{method}", code.name, time.perf_counter() - start
            )
    context.abort(code, message)


def _servable(repository, model_spec):
    if not model_spec.name:
        raise invalid_argument("Missing ModelSpec name")
    version = (
        model_spec.version.value if model_spec.HasField("version") else None
    )
    return repository.get(
        model_spec.name, version, model_spec.version_label or None
    )


class PredictionServicer(
    prediction_service_pb2_grpc.PredictionServiceServicer
):
    """Predict and GetModelMetadata over a `ModelRepository`.

    Args:
        repository: `serving.models.ModelRepository`.
        max_batch_size: largest first dimension of an input.
    """

    def __init__(self, repository, max_batch_size=64, metrics=None):
        self.repository = repository
        self.max_batch_size = max_batch_size
        self.metrics = metrics

    def Predict(self, request, context):  # noqa: N802 (gRPC naming)
        return _call(
            context, "Predict", lambda: self._predict(request), self.metrics
        )

    def _predict(self, request):
        servable = _servable(self.repository, request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        arrays = {}
        for name, proto in request.inputs.items():
            spec = signature.inputs.get(name)
            if spec is not None and proto.dtype != spec.dtype.as_datatype_enum:
                raise invalid_argument(
                    f"Input {name!r} must be {spec.dtype.name}. "
                    f"Received dtype "
                    f"enum {proto.dtype} ({_dtype_name(proto.dtype)})"
                )
            arrays[name] = tensors.tensor_proto_to_array(
                proto, f"inputs.{name}"
            )
        outputs = signature.run(
            arrays,
            max_batch_size=self.max_batch_size,
            output_filter=list(request.output_filter),
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(
                tensors.array_to_tensor_proto(array)
            )
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _call(
            context,
            "GetModelMetadata",
            lambda: self._metadata(request),
            self.metrics,
        )

    def _metadata(self, request):
        fields = list(request.metadata_field)
        if fields != [_SIGNATURE_DEF_FIELD]:
            raise invalid_argument(
                f"metadata_field must be [{_SIGNATURE_DEF_FIELD!r}]. "
                f"Received: {fields}"
            )
        servable = _servable(self.repository, request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[_SIGNATURE_DEF_FIELD].Pack(
            servable.signature_def_map()
        )
        return response


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over a `ModelRepository`."""

    def __init__(self, repository, metrics=None):
        self.repository = repository
        self.metrics = metrics

    def GetModelStatus(self, request, context):  # noqa: N802
        return _call(
            context,
            "GetModelStatus",
            lambda: self._status(request),
            self.metrics,
        )

    def _status(self, request):
        spec = request.model_spec
        if not spec.name:
            raise invalid_argument("Missing ModelSpec name")
        version = spec.version.value if spec.HasField("version") else None
        if spec.version_label:
            version = self.repository.get(
                spec.name, None, spec.version_label
            ).version
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.repository.status(spec.name, version):
            response.model_version_status.append(status.to_proto())
        return response


def _dtype_name(enum):
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return "unknown"


def make_grpc_server(
    repository,
    host,
    port,
    max_request_bytes,
    max_batch_size,
    max_workers=8,
    metrics=None,
    max_in_flight=None,
    idle_timeout_s=None,
):
    """Creates (not starts) a gRPC server with both services.

    Args:
        repository: `serving.models.ModelRepository`.
        host, port: address to bind (port 0: any free port).
        max_request_bytes: largest request message accepted.
        max_batch_size: largest first dimension of a Predict input.
        max_workers: threads answering RPCs concurrently.
        metrics: `serving.metrics.Metrics` recording each call, or None.
        max_in_flight: RPCs running or waiting for a worker; one more is
            answered RESOURCE_EXHAUSTED at once (None: unbounded queue).
        idle_timeout_s: a connection without an RPC for this long is
            closed (None: kept).

    Returns:
        (grpc.Server, bound port).

    Raises:
        RuntimeError: if the address cannot be bound.
    """
    options = [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]
    if idle_timeout_s is not None:
        options.append(
            ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000))
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=options,
        maximum_concurrent_rpcs=max_in_flight,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(repository, max_batch_size, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelStatusServicer(repository, metrics), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"Cannot bind the gRPC server to {host}:{port}")
    return server, bound

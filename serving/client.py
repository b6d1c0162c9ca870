"""Clients for TF Serving's REST and gRPC APIs (and this server's search).

Both take `host` ("host:port" or "http://host:port" for REST), `model`,
`signature` and `timeout` (seconds per call), and return outputs as
{name: np.ndarray} with the signature's dtypes. Both raise
`serving.errors.ServingError` with the gRPC status code of a failure
(REST statuses mapped back: 400 INVALID_ARGUMENT, 404 NOT_FOUND, ...).

```python
client = RestClient("localhost:8501", model="shrewd", timeout=5)
codes = client.predict_images([png_bytes])["code"]       # float32 [1, d]
hits = client.search(image=png_bytes, k=10)["results"]
grpc_client = GrpcClient("localhost:8500", model="shrewd")
bits = grpc_client.predict_images([png_bytes])["bits"]   # uint8 [1, d/8]
```
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np

from serving.errors import ServingError
from serving.errors import from_http_status
from shrewd_tf.contract import BITS_OUTPUT
from shrewd_tf.contract import CODE_OUTPUT
from shrewd_tf.contract import SERVING_SIGNATURE

DEFAULT_SIGNATURE = SERVING_SIGNATURE
# tensorflow.DataType enum names -> NumPy dtypes (the ones JSON carries).
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,
}


def _to_json(array):
    """np.ndarray -> JSON lists; bytes become {"b64": ...}."""
    array = np.asarray(array)
    if array.dtype.kind in "OS":

        def encode(value):
            if isinstance(value, list):
                return [encode(v) for v in value]
            if isinstance(value, str):
                value = value.encode("utf-8")
            return {"b64": base64.b64encode(value).decode("ascii")}

        return encode(array.tolist())
    return array.tolist()


def _from_json(value, dtype_name):
    """JSON value -> np.ndarray of the signature's dtype."""

    def decode(item):
        if isinstance(item, list):
            return [decode(v) for v in item]
        if isinstance(item, dict):
            return base64.b64decode(item["b64"])
        return item.encode("utf-8") if isinstance(item, str) else item

    dtype = _NUMPY_DTYPES.get(dtype_name)
    if dtype is object:
        return np.array(decode(value), dtype=object)
    return np.asarray(value, dtype=dtype)


class RestClient:
    """TF Serving REST client (`/v1/models/...`) plus `/v1/search`.

    Args:
        host: "host:port" or "http(s)://host:port".
        model: model name.
        signature: signature name.
        timeout: seconds per request.
        version: int version to ask for (None: the served one).
    """

    def __init__(
        self,
        host,
        model,
        signature=DEFAULT_SIGNATURE,
        timeout=10.0,
        version=None,
    ):
        self.base_url = (host if "://" in host else f"http://{host}").rstrip(
            "/"
        )
        self.model = model
        self.signature = signature
        self.timeout = timeout
        self.version = version
        self._signature_def = None

    def _model_path(self):
        path = f"/v1/models/{urllib.parse.quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return path

    def request(self, method, path, body=None):
        """Sends one request; returns the parsed JSON answer.

        Raises:
            ServingError: for an error answer ({"error": ...}), or
                UNAVAILABLE when the server cannot be reached.
        """
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout
            ) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.decode("utf-8", "replace") or str(e)
            raise from_http_status(e.code, message) from None
        except (urllib.error.URLError, OSError) as e:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, f"{self.base_url}: {e}"
            ) from None

    def status(self):
        """GET /v1/models/<model>[/versions/<v>]: {"model_version_status"}."""
        return self.request("GET", self._model_path())

    def metadata(self):
        """GET .../metadata: {"model_spec", "metadata": {"signature_def"}}."""
        return self.request("GET", self._model_path() + "/metadata")

    def signature_def(self):
        """The signature's SignatureDef as JSON (cached)."""
        if self._signature_def is None:
            defs = self.metadata()["metadata"]["signature_def"][
                "signature_def"
            ]
            if self.signature not in defs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Model {self.model} has no signature {self.signature!r}. "
                    f"Signatures: {sorted(defs)}",
                )
            self._signature_def = defs[self.signature]
        return self._signature_def

    def predict(self, inputs):
        """Columnar `:predict`.

        Args:
            inputs: {input name: array} (bytes / object arrays for
                DT_STRING inputs), or one array for a one-input signature.

        Returns:
            {output name: np.ndarray} with the signature's dtypes.
        """
        if isinstance(inputs, dict):
            payload = {name: _to_json(value) for name, value in inputs.items()}
        else:
            payload = _to_json(inputs)
        answer = self.request(
            "POST",
            self._model_path() + ":predict",
            {"signature_name": self.signature, "inputs": payload},
        )
        outputs = self.signature_def()["outputs"]
        values = answer["outputs"]
        if not (isinstance(values, dict) and set(values) != {"b64"}):
            values = {next(iter(outputs)): values}
        return {
            name: _from_json(value, outputs[name]["dtype"])
            for name, value in values.items()
        }

    def predict_images(self, images):
        """Encodes a list of image bytes with the signature's one input."""
        array = np.empty(len(images), dtype=object)
        array[:] = list(images)
        return self.predict(array)

    def search(self, image=None, code=None, bits=None, k=10, mode=None):
        """POST /v1/search with exactly one of image bytes, code, bits.

        Returns:
            The answer: {"results": [{"id", "distance", "metadata",
            "image_url"}], "mode", "distance", "exact", ...}.
        """
        body = {"model": self.model, "k": k}
        if mode is not None:
            body["mode"] = mode
        if image is not None:
            body["image"] = {"b64": base64.b64encode(image).decode("ascii")}
        # Code and bits queries are keyed like the model outputs they are.
        if code is not None:
            body[CODE_OUTPUT] = np.asarray(code, dtype=np.float64).tolist()
        if bits is not None:
            body[BITS_OUTPUT] = np.asarray(bits, dtype=np.uint8).tolist()
        return self.request("POST", "/v1/search", body)


class GrpcClient:
    """TF Serving gRPC client (PredictionService, ModelService).

    Args:
        host: "host:port".
        model: model name.
        signature: signature name.
        timeout: seconds per call (gRPC deadline).
        version: int version to ask for (None: the served one).
    """

    def __init__(
        self,
        host,
        model,
        signature=DEFAULT_SIGNATURE,
        timeout=10.0,
        version=None,
    ):
        from tensorflow_serving.apis import model_service_pb2_grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.host = host
        self.model = model
        self.signature = signature
        self.timeout = timeout
        self.version = version
        self._channel = grpc.insecure_channel(
            host, options=[("grpc.max_receive_message_length", -1)]
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel
        )
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signature_def = None

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _fill_spec(self, spec, with_signature=True):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        if with_signature:
            spec.signature_name = self.signature

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code(), e.details()) from None

    def status(self):
        """GetModelStatus -> GetModelStatusResponse."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, with_signature=False)
        return self._call(self.models.GetModelStatus, request)

    def metadata(self):
        """GetModelMetadata -> SignatureDefMap proto."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._fill_spec(request.model_spec, with_signature=False)
        request.metadata_field.append("signature_def")
        response = self._call(self.prediction.GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return signature_defs

    def predict(self, inputs, output_filter=()):
        """Predict with {input name: array}; returns {output: np.ndarray}."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request)
        return {
            name: tf.make_ndarray(proto)
            for name, proto in response.outputs.items()
        }

    def predict_images(self, images, output_filter=()):
        """Encodes image bytes with the signature's one DT_STRING input."""
        if self._signature_def is None:
            defs = self.metadata().signature_def
            if self.signature not in defs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Model {self.model} has no signature {self.signature!r}",
                )
            self._signature_def = defs[self.signature]
        (name,) = self._signature_def.inputs.keys()
        array = np.empty(len(images), dtype=object)
        array[:] = list(images)
        return self.predict({name: array}, output_filter)

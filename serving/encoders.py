"""Search encoders: image bytes -> code outputs, locally or remotely.

* `LocalEncoder`: runs a model of this server's `ModelRepository` (its
  signature with one DT_STRING input, `serving_default` by default).
* `RemoteEncoder` (`--encoder-url`): forwards a row-format `:predict` with
  `{"b64": ...}` to a TF Serving REST endpoint (tensorflow_model_server, or
  another instance of this server) and reads the named outputs back.

Both return ({output name: np.ndarray for the one image}, version or None)
and raise `ServingError`s (the remote's HTTP status mapped back to a gRPC
code; UNAVAILABLE when it cannot be reached).
"""

import base64
import binascii
import json
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np

from serving.errors import ServingError
from serving.errors import from_http_status
from serving.errors import invalid_argument
from serving.servables import DEFAULT_SIGNATURE
from shrewd_tf.contract import BITS_OUTPUT
from shrewd_tf.contract import CODE_OUTPUT


def decode_b64(value, path):
    """{"b64": str} -> bytes, or INVALID_ARGUMENT quoting the value."""
    if (
        not isinstance(value, dict)
        or set(value) != {"b64"}
        or not isinstance(value["b64"], str)
    ):
        raise invalid_argument(
            f'\'{path}\' must be {{"b64": "<base64>"}}. '
            f"Received: {str(value)[:80]!r}"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise invalid_argument(
            f"'{path}': unable to base64-decode ({e}). "
            f"Received: {value['b64'][:80]!r}"
        ) from None


class LocalEncoder:
    """Encodes image bytes with a model of this server's repository.

    Args:
        repository: `serving.models.ModelRepository`.
        signature_name: signature taking DT_STRING image bytes [N].
    """

    def __init__(self, repository, signature_name=DEFAULT_SIGNATURE):
        self.repository = repository
        self.signature_name = signature_name

    def encode(self, model, image_bytes):
        """Returns ({output name: np.ndarray [...]} of one image, version).

        Raises:
            ServingError: NOT_FOUND for an unknown model; INVALID_ARGUMENT
                for an undecodable image or a signature without exactly one
                DT_STRING input.
        """
        servable = self.repository.get(model)
        signature = servable.signature(self.signature_name)
        names = [
            n for n, s in signature.inputs.items() if s.dtype.name == "string"
        ]
        if len(signature.inputs) != 1 or len(names) != 1:
            dtypes = {n: s.dtype.name for n, s in signature.inputs.items()}
            raise invalid_argument(
                f"Signature {signature.name!r} of model {model} must take one "
                f"DT_STRING input (image bytes) to encode images. Received "
                f"inputs: {dtypes}"
            )
        batch = np.empty(1, dtype=object)
        batch[0] = image_bytes
        outputs = signature.run({names[0]: batch})
        return {
            name: array[0] for name, array in outputs.items()
        }, servable.version


class RemoteEncoder:
    """Encodes image bytes by forwarding `:predict` to a TF Serving server.

    Args:
        url: REST base URL of tensorflow_model_server, e.g.
            "http://host:8501".
        signature_name: signature taking image bytes.
        timeout_s: seconds per forwarded request.
    """

    def __init__(self, url, signature_name=DEFAULT_SIGNATURE, timeout_s=10.0):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                "`encoder_url` must be an http(s) URL like http://host:8501. "
                f"Received: encoder_url={url!r}"
            )
        self.url = url.rstrip("/")
        self.signature_name = signature_name
        self.timeout_s = timeout_s

    def encode(self, model, image_bytes):
        """Returns ({output name: np.ndarray} of one image, None).

        Raises:
            ServingError: the remote's 4xx/5xx answer with its message
                (400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND...), UNAVAILABLE
                when the remote cannot be reached.
        """
        body = json.dumps(
            {
                "signature_name": self.signature_name,
                "instances": [
                    {"b64": base64.b64encode(image_bytes).decode("ascii")}
                ],
            }
        ).encode("utf-8")
        quoted = urllib.parse.quote(model, safe="")
        url = f"{self.url}/v1/models/{quoted}:predict"
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except (ValueError, AttributeError):
                message = str(e)
            raise from_http_status(
                e.code, f"Encoder at {self.url}: {message}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE,
                f"Encoder at {self.url} did not answer: {e}",
            ) from None
        prediction = answer.get("predictions", [None])[0]
        if not isinstance(prediction, dict):
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"Encoder at {self.url} answered no named outputs; expected "
                f"{{'{CODE_OUTPUT}': [...], '{BITS_OUTPUT}': [...]}}. "
                f"Received: {str(answer)[:200]}",
            )
        return {
            name: np.asarray(value) for name, value in prediction.items()
        }, None

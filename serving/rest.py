"""REST API: TF Serving's `/v1/models/...` endpoints, search, images, page.

Routes (JSON in and out; errors are `{"error": "..."}` with TF Serving's
status codes, see `serving.errors`):

* `GET  /v1/models/<name>[/versions/<v>]`: model_version_status.
* `GET  /v1/models/<name>[/versions/<v>]/metadata`: model_spec and the
  SignatureDefMap in TF Serving's JSON shape.
* `POST /v1/models/<name>[/versions/<v>]:predict`: `instances` (row) or
  `inputs` (columnar), optional `signature_name`.
* `POST /v1/search`, `GET /v1/database?offset=&limit=`,
  `GET /v1/images/<id>`: retrieval (`serving.retrieval`).
* `GET /` and `GET /static/<file>`: the web page (`serving/static/`).

`dispatch` answers one request (blocking: it runs TensorFlow and faiss);
the HTTP plumbing, limits and timeouts are in `serving.rest_server`.
JSON bodies with a lone surrogate escape ("\\ud800") are refused with 400
like any other malformed JSON; handler exceptions become 500 answers,
never a dead server.
"""

import json
import logging
import mimetypes
import os
import re
import urllib.parse

import grpc
from google.protobuf import json_format

from serving import tensors
from serving.errors import ServingError
from serving.errors import invalid_argument
from serving.errors import not_found

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MODEL_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:[a-zA-Z]+)?$"
)
_DEFAULT_PAGE_LIMIT = 24
_MAX_PAGE_LIMIT = 500


# A \uD800-\uDFFF escape: a surrogate, maybe lone (checked only then).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_body(raw):
    """Parses a request body into JSON, or INVALID_ARGUMENT."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8
        raise invalid_argument(f"JSON Parse error: {e}") from None
    if _SURROGATE_ESCAPE.search(raw):
        _check_no_lone_surrogates(value)
    return value


def _check_no_lone_surrogates(value):
    """Raises INVALID_ARGUMENT for a string that is not valid Unicode.

    Python's json decodes "\\ud800" to a lone surrogate, which no UTF-8
    encoder (TensorFlow's string tensors included) accepts.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise invalid_argument(
                    "JSON Parse error: a string holds a lone UTF-16 "
                    f"surrogate ({item[e.start]!r} at character {e.start}), "
                    "which is not valid Unicode."
                ) from None


def _parse_version(text):
    if text is None:
        return None
    if not re.fullmatch(r"\d{1,18}", text):
        raise invalid_argument(
            f"Version must be a non-negative integer. Received: {text!r}"
        )
    return int(text)


class RestApi:
    """The REST endpoints, independent of the HTTP server plumbing.

    Args:
        repository: `serving.models.ModelRepository` or None.
        search: `serving.retrieval.SearchService` or None.
        max_batch_size: largest first dimension of a predict input.
    """

    def __init__(self, repository=None, search=None, max_batch_size=64):
        self.repository = repository
        self.search = search
        self.max_batch_size = max_batch_size

    def _repository(self):
        if self.repository is None:
            raise not_found(
                "This server serves no models (no --export-root); it encodes "
                "with --encoder-url."
            )
        return self.repository

    # --- models ---

    def model_status(self, name, version):
        statuses = self._repository().status(name, version)
        return {"model_version_status": [s.to_json() for s in statuses]}

    def model_metadata(self, name, version, label):
        servable = self._repository().get(name, version, label)
        signature_defs = json_format.MessageToDict(
            servable.signature_def_map(),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        return {
            "model_spec": {
                "name": name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {"signature_def": signature_defs},
        }

    def predict(self, name, version, label, body):
        servable = self._repository().get(name, version, label)
        if not isinstance(body, dict):
            raise invalid_argument(
                "The request must be a JSON object with 'instances' or "
                f"'inputs'. Received: {str(body)[:80]!r}"
            )
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument(
                "'signature_name' must be a string. "
                f"Received: {signature_name!r}"
            )
        signature = servable.signature(signature_name)
        has_instances, has_inputs = "instances" in body, "inputs" in body
        if has_instances == has_inputs:
            raise invalid_argument(
                "Missing 'inputs' or 'instances' key"
                if not has_instances
                else "Not formatted correctly expecting only one of 'inputs' "
                "or 'instances' keys exists"
            )
        if has_instances:
            arrays = tensors.parse_instances(
                body["instances"], signature.inputs
            )
        else:
            arrays = tensors.parse_inputs(body["inputs"], signature.inputs)
        outputs = signature.run(arrays, max_batch_size=self.max_batch_size)
        if has_instances:
            return {"predictions": tensors.format_predictions(outputs)}
        return {"outputs": tensors.format_outputs(outputs)}

    def route_model(self, method, path, read_body):
        """Dispatches `/v1/models/...`; returns the JSON answer."""
        match = _MODEL_ROUTE.match(path)
        if not match:
            raise not_found(f"Malformed request: {method} {path}")
        name = urllib.parse.unquote(match["name"])
        version = _parse_version(match["version"])
        label = match["label"] and urllib.parse.unquote(match["label"])
        tail = match["tail"]
        if method == "GET" and tail is None:
            if label:
                version = self._repository().get(name, None, label).version
            return self.model_status(name, version)
        if method == "GET" and tail == "/metadata":
            return self.model_metadata(name, version, label)
        if method == "POST" and tail == ":predict":
            return self.predict(name, version, label, _json_body(read_body()))
        if method == "POST" and tail in (":classify", ":regress"):
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{tail[1:]} is not implemented by this server; use :predict.",
            )
        raise not_found(f"Malformed request: {method} {path}")

    # --- retrieval ---

    def search_service(self):
        if self.search is None:
            raise not_found("Retrieval is off: no index is configured.")
        return self.search

    def database(self, query):
        params = urllib.parse.parse_qs(query)
        try:
            offset = int(params.get("offset", ["0"])[0])
            limit = int(params.get("limit", [str(_DEFAULT_PAGE_LIMIT)])[0])
        except ValueError:
            raise invalid_argument(
                f"'offset' and 'limit' must be integers. Received: {query!r}"
            ) from None
        if offset < 0 or not 1 <= limit <= _MAX_PAGE_LIMIT:
            raise invalid_argument(
                f"Need offset >= 0 and limit in [1, {_MAX_PAGE_LIMIT}]. "
                f"Received: offset={offset}, limit={limit}"
            )
        return self.search_service().items(offset, limit)


class HttpError(Exception):
    """An HTTP-level refusal with no gRPC equivalent (408, 411, 413)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def json_answer(status, value):
    """(status, body bytes, content type) of a JSON answer."""
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return status, body, "application/json"


def error_answer(error):
    """The JSON answer of a `ServingError` or `HttpError`."""
    if isinstance(error, ServingError):
        return json_answer(error.http_status, {"error": error.message})
    status = error.status
    return json_answer(status, {"error": error.message})


def _file_answer(path, content_type):
    with open(path, "rb") as f:
        return 200, f.read(), content_type


def dispatch(api, method, target, read_body):
    """Answers one request; blocking (run it on a worker thread).

    Args:
        api: `RestApi`.
        method: "GET" or "POST" (HEAD is answered as GET).
        target: the raw request target, e.g. "/v1/models/m:predict?x".
        read_body: callable returning the body bytes or raising
            `ServingError` / `HttpError` (called only by the routes
            that take a body, so their errors come first otherwise).

    Returns:
        (status, body bytes, content type). Request errors become their
        TF Serving JSON answer; a bug becomes a 500 answer.
    """
    url = urllib.parse.urlsplit(target)
    path = url.path
    try:
        if path.startswith("/v1/models/"):
            return json_answer(200, api.route_model(method, path, read_body))
        if path == "/v1/search" and method == "POST":
            body = _json_body(read_body())
            return json_answer(200, api.search_service().search(body))
        if path == "/v1/database" and method == "GET":
            return json_answer(200, api.database(url.query))
        if path.startswith("/v1/images/") and method == "GET":
            id_text = urllib.parse.unquote(path[len("/v1/images/") :])
            return _file_answer(*api.search_service().image_file(id_text))
        if path in ("/", "/index.html") and method == "GET":
            return _file_answer(
                os.path.join(STATIC_DIR, "index.html"), "text/html"
            )
        if path.startswith("/static/") and method == "GET":
            return _file_answer(*_static_file(path[len("/static/") :]))
        raise not_found(f"Malformed request: {method} {path}")
    except (ServingError, HttpError) as e:
        return error_answer(e)
    except UnicodeError as e:  # Request text no codec accepts.
        return json_answer(
            400, {"error": f"Invalid Unicode in the request: {e}"}
        )
    except Exception as e:  # A bug answers 500; the server keeps going.
        logging.exception("Error answering %s %s", method, path)
        return json_answer(
            500, {"error": f"Internal error: {type(e).__name__}: {e}"}
        )


def _static_file(name):
    """Resolves `/static/<name>` to a file of serving/static (no subpaths)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9]+", name):
        raise not_found(f"No static file {name!r}")
    path = os.path.join(STATIC_DIR, name)
    if not os.path.isfile(path):
        raise not_found(f"No static file {name!r}")
    return path, mimetypes.guess_type(path)[0] or "application/octet-stream"

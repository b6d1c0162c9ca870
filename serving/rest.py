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

Limits: request bodies over `max_request_bytes` get 413 without being
read; POSTs without Content-Length 411; each connection has a socket
timeout; handler exceptions become 500 answers, never a dead server.
"""

import http.server
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


def _json_body(raw):
    """Parses a request body into JSON, or INVALID_ARGUMENT."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8
        raise invalid_argument(f"JSON Parse error: {e}") from None


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


class RestHandler(http.server.BaseHTTPRequestHandler):
    """HTTP plumbing around `RestApi` (one thread per connection)."""

    protocol_version = "HTTP/1.1"
    server_version = "shrewd-serving"
    # Set on the subclass made by `make_handler`.
    api = None
    max_request_bytes = 8 * 2**20
    timeout = 30
    # Headers and body leave in two writes; with Nagle on, the second
    # waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        logging.debug("%s - %s", self.address_string(), format % args)

    # --- answers ---

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, value):
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json")

    def _send_error(self, error):
        self._send_json(error.http_status, {"error": error.message})

    def _send_file(self, path, content_type):
        with open(path, "rb") as f:
            body = f.read()
        self._send(200, body, content_type)

    # --- requests ---

    def _read_body(self):
        """Reads the body (Content-Length, <= max_request_bytes)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Chunked request bodies are not supported; send "
                "Content-Length.",
            )
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _HttpError(411, "A POST needs a Content-Length header.")
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise invalid_argument(
                f"Bad Content-Length. Received: {length_text!r}"
            ) from None
        if length < 0:
            self.close_connection = True
            raise invalid_argument(f"Bad Content-Length. Received: {length}")
        if length > self.max_request_bytes:
            self.close_connection = True
            if length <= 4 * self.max_request_bytes:
                self._discard(length)  # So the client can read the answer.
            raise _HttpError(
                413,
                f"Request body of {length} bytes is over the server's "
                f"max_request_bytes={self.max_request_bytes}.",
            )
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise invalid_argument(
                f"Request body ended after {len(body)} of {length} bytes."
            )
        return body

    def _discard(self, length):
        while length > 0:
            chunk = self.rfile.read(min(length, 2**20))
            if not chunk:
                return
            length -= len(chunk)

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        body_read = False

        def read_body():
            nonlocal body_read
            body_read = True
            return self._read_body()

        try:
            if path.startswith("/v1/models/"):
                self._send_json(
                    200, self.api.route_model(method, path, read_body)
                )
            elif path == "/v1/search" and method == "POST":
                answer = self.api.search_service().search(
                    _json_body(read_body())
                )
                self._send_json(200, answer)
            elif path == "/v1/database" and method == "GET":
                self._send_json(200, self.api.database(url.query))
            elif path.startswith("/v1/images/") and method == "GET":
                id_text = urllib.parse.unquote(path[len("/v1/images/") :])
                self._send_file(*self.api.search_service().image_file(id_text))
            elif path in ("/", "/index.html") and method == "GET":
                self._send_file(
                    os.path.join(STATIC_DIR, "index.html"), "text/html"
                )
            elif path.startswith("/static/") and method == "GET":
                self._send_file(*_static_file(path[len("/static/") :]))
            else:
                raise not_found(f"Malformed request: {method} {path}")
        except ServingError as e:
            self._send_error(e)
        except _HttpError as e:
            self._send_json(e.status, {"error": e.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # A bug answers 500; the server keeps going.
            logging.exception("Error answering %s %s", method, path)
            self._send_json(
                500, {"error": f"Internal error: {type(e).__name__}: {e}"}
            )
        if not body_read and self.headers.get("Content-Length", "0") != "0":
            # Unread body bytes would be parsed as the next request.
            self.close_connection = True

    def do_GET(self):  # noqa: N802 (stdlib naming)
        self._handle("GET")

    def do_HEAD(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


class _HttpError(Exception):
    """An HTTP-level refusal with no gRPC equivalent (411, 413)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _static_file(name):
    """Resolves `/static/<name>` to a file of serving/static (no subpaths)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9]+", name):
        raise not_found(f"No static file {name!r}")
    path = os.path.join(STATIC_DIR, name)
    if not os.path.isfile(path):
        raise not_found(f"No static file {name!r}")
    return path, mimetypes.guess_type(path)[0] or "application/octet-stream"


class RestServer(http.server.ThreadingHTTPServer):
    """`ThreadingHTTPServer` with a longer listen queue and daemon threads."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True


def make_rest_server(api, host, port, max_request_bytes, timeout_s=30):
    """Binds a threading HTTP server answering `api` on (host, port).

    Args:
        api: `RestApi`.
        host, port: address to bind (port 0: any free port; read it back
            from `server.server_address`).
        max_request_bytes: largest request body accepted.
        timeout_s: socket timeout per connection (idle keep-alive, slow
            uploads).
    """
    handler = type(
        "BoundRestHandler",
        (RestHandler,),
        {
            "api": api,
            "max_request_bytes": max_request_bytes,
            "timeout": timeout_s,
        },
    )
    return RestServer((host, port), handler)

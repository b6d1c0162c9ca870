"""`ServingError`: one error type for REST and gRPC, with TF Serving's codes.

Every request failure is a `ServingError(code, message)` whose `code` is a
`grpc.StatusCode`. The gRPC servicers abort with it; the REST handler
answers `{"error": message}` with the HTTP status TF Serving maps the code
to (`http_status`): INVALID_ARGUMENT 400, NOT_FOUND 404, RESOURCE_EXHAUSTED
429, UNIMPLEMENTED 501, UNAVAILABLE 503, INTERNAL/UNKNOWN 500, ...
"""

import re

import grpc

# tensorflow_serving/model_servers/http_rest_api_handler ToHTTPStatusCode.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_GRPC_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    411: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# TensorFlow's error codes (tf.errors.*.error_code) are gRPC's numbers.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_NOISE = re.compile(
    r"^(Graph execution error:|Detected at node|<stack traces unavailable>"
    r"|\s+File |\s*$)"
)


class ServingError(Exception):
    """A failed request: a `grpc.StatusCode` and a message for the client.

    Args:
        code: `grpc.StatusCode`, e.g. `grpc.StatusCode.INVALID_ARGUMENT`.
        message: what went wrong, quoting the received value.
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        """The HTTP status TF Serving answers for `code` (int)."""
        return _HTTP_STATUS.get(self.code, 500)


def invalid_argument(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def from_http_status(status, message):
    """The `ServingError` for a REST answer's HTTP status (e.g. 404)."""
    return ServingError(
        _GRPC_FOR_HTTP.get(status, grpc.StatusCode.UNKNOWN), message
    )


def from_tensorflow_error(error):
    """Converts a `tf.errors.OpError` into a `ServingError`, trimmed.

    The message keeps the op's own text (e.g. "Unknown image file format.
    One of JPEG, PNG, GIF, BMP, WebP required.") and drops the graph
    execution boilerplate and stack lines.
    """
    lines = [
        line.strip()
        for line in str(getattr(error, "message", error)).splitlines()
        if not _NOISE.match(line)
    ]
    message = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", " ".join(lines)).strip()
    # Graph wrapping: "{{function_node ...}} " before, "[[{{node ...}}]]"
    # after, and an Assert's "assertion failed: [text]" around its text.
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]", "", message).strip()
    asserted = re.fullmatch(r"assertion failed: \[(.*)\]", message, re.S)
    if asserted:
        message = asserted.group(1)
    code = _BY_NUMBER.get(
        getattr(error, "error_code", 2), grpc.StatusCode.UNKNOWN
    )
    return ServingError(code, message or type(error).__name__)

"""The REST server: `serving.rest.dispatch` behind aiohttp's HTTP/1.1 stack.

One asyncio event loop (its own thread) owns every connection, so an idle
connection costs a few kilobytes, not a thread. Request handling is:

1. aiohttp parses the request line and headers (limits: 8190-byte lines
   and header fields, 128 headers; a malformed request gets 400).
2. The body is read on the loop: POST bodies need Content-Length (411),
   at most `max_request_bytes` (413, the rest is discarded), chunked
   bodies are refused (400), a body that does not arrive within
   `request_timeout_s` gets 408 and the connection is closed.
3. `dispatch` (TensorFlow, faiss: blocking) runs on a bounded thread pool
   of `workers` threads via `loop.run_in_executor`. At most
   `max_in_flight` requests wait for or run on it; one more gets 503
   UNAVAILABLE in TF Serving's JSON form.

Connections: keep-alive, closed after `idle_timeout_s` without a request
(also a connection that never completes its request headers); at most
`max_connections` open, one more gets a 503 and is closed. `stop()` stops
accepting, closes idle connections, lets in-flight requests finish for up
to `grace_s`, then closes the rest.
"""

import asyncio
import concurrent.futures
import json
import logging
import threading
import time

import aiohttp
import aiohttp.http_exceptions
import grpc
from aiohttp import web

from serving import metrics as metrics_lib
from serving import rest
from serving.errors import ServingError
from serving.errors import invalid_argument

_SERVER_HEADER = "shrewd-serving"
_ABORT = "abort"
_REFUSED_CONNECTION_BODY = json.dumps(
    {"error": "Too many open connections; retry later."},
    separators=(",", ":"),
).encode("utf-8")
_REFUSED_CONNECTION = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    + f"Content-Length: {len(_REFUSED_CONNECTION_BODY)}\r\n".encode("ascii")
    + b"Connection: close\r\n\r\n"
    + _REFUSED_CONNECTION_BODY
)


class _ProtocolErrorFilter(logging.Filter):
    """Drops aiohttp's tracebacks of malformed requests (answered 400):
    a client's mistake, not a server error."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, aiohttp.http_exceptions.HttpProcessingError):
            logging.debug("Malformed HTTP request: %s", error)
            return False
        return True


_PROTOCOL_LOGGER = logging.getLogger("serving.rest_server.http")
_PROTOCOL_LOGGER.addFilter(_ProtocolErrorFilter())


class _RefuseConnection(asyncio.Protocol):
    """Answers 503 and closes: over `max_connections`, or shutting down."""

    def connection_made(self, transport):
        transport.write(_REFUSED_CONNECTION)
        transport.close()


class RestServer:
    """aiohttp server answering a `serving.rest.RestApi`; start() / stop().

    Args:
        api: `serving.rest.RestApi`.
        host, port: address to bind (port 0: any free port; read it back
            from `server_address`).
        max_request_bytes: largest request body accepted (413 above).
        request_timeout_s: time a request body may take to arrive (408).
        idle_timeout_s: keep-alive: a connection without a request for
            this long is closed.
        max_connections: open connections; more are answered 503 and closed.
        max_in_flight: requests waiting for or running on the workers;
            more are answered 503.
        workers: threads running `dispatch` (TensorFlow, faiss).
        backlog: listen queue length.
        metrics: `serving.metrics.Metrics` that records every request and
            is served at /monitoring/prometheus/metrics (None: off).

    Attributes (after start):
        server_address: (host, bound port).
        in_flight: requests now waiting for or running on the workers.
    """

    def __init__(
        self,
        api,
        host="127.0.0.1",
        port=8501,
        *,
        max_request_bytes=8 * 2**20,
        request_timeout_s=30.0,
        idle_timeout_s=75.0,
        max_connections=4096,
        max_in_flight=64,
        workers=4,
        backlog=1024,
        metrics=None,
    ):
        self.api = api
        self.host, self.port = host, port
        self.max_request_bytes = max_request_bytes
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.workers = workers
        self.backlog = backlog
        self.metrics = metrics
        self.server_address = None
        self.in_flight = 0
        self._loop = None
        self._thread = None
        self._listener = None
        self._web = None
        self._executor = None
        self._closing = False

    @property
    def connections(self):
        """Open connections (int)."""
        return 0 if self._web is None else len(self._web.connections)

    # === Start and stop ===

    def start(self):
        """Binds and starts answering on a new event-loop thread.

        Raises:
            OSError: if the address cannot be bound.
        """
        ready = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="rest-server", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self

    def _run(self, ready):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except BaseException as e:
            ready.set_exception(e)
            loop.close()
            return
        self._loop = loop
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _bind(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix="rest-worker"
        )
        self._web = web.Server(
            self._handle,
            keepalive_timeout=self.idle_timeout_s,
            access_log=None,
            logger=_PROTOCOL_LOGGER,
        )
        self._listener = await asyncio.get_running_loop().create_server(
            self._protocol,
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
        )
        self.server_address = self._listener.sockets[0].getsockname()[:2]

    def _protocol(self):
        if (
            self._closing
            or len(self._web.connections) >= self.max_connections
        ):
            return _RefuseConnection()
        return self._web()

    def stop(self, grace_s=10.0):
        """Stops accepting, finishes in-flight requests (up to `grace_s`),
        closes every connection and the workers."""
        if self._thread is None:
            return
        loop = self._loop
        shutdown = asyncio.run_coroutine_threadsafe(
            self._shutdown(grace_s), loop
        )
        try:
            shutdown.result(grace_s + 5)
        except Exception:  # noqa: BLE001 (stop regardless)
            logging.exception("REST shutdown did not finish cleanly")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, grace_s):
        self._closing = True  # Accepted late: refused.
        self._listener.close()  # No new connections.
        self._web.pre_shutdown()  # Idle keep-alive connections close.
        await self._web.shutdown(grace_s)  # In-flight requests finish.
        # Connection tasks cancelled above (lingering reads) end here,
        # before the loop closes.
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # === Requests ===

    async def _handle(self, request):
        start = time.perf_counter()
        response = await self._answer(request)
        if self.metrics is not None:
            self.metrics.observe(
                metrics_lib.endpoint_of(request.method, request.path),
                response.status,
                time.perf_counter() - start,
            )
        return response

    async def _answer(self, request):
        method = "GET" if request.method == "HEAD" else request.method
        if method not in ("GET", "POST"):
            return _response(
                rest.json_answer(
                    501, {"error": f"Unsupported method {request.method!r}"}
                )
            )
        body, error, close = None, None, False
        if method == "GET" and request.path == metrics_lib.PATH:
            return self._metrics_response()
        if method == "POST":
            body, error, close = await self._read_body(request)
        if self.in_flight >= self.max_in_flight:
            response = _response(
                rest.error_answer(
                    ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"The server is busy: max_in_flight="
                        f"{self.max_in_flight} requests are being "
                        "answered; retry later.",
                    )
                )
            )
            response.force_close()
            return response

        def read_body():
            if error is not None:
                raise error
            return body

        self.in_flight += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                rest.dispatch,
                self.api,
                method,
                request.raw_path,
                read_body,
            )
        finally:
            self.in_flight -= 1
        response = _response(answer)
        if close:
            response.force_close()
        if close == _ABORT:
            # The body never came: answer, then close without lingering
            # (aiohttp would otherwise wait for the rest of the body).
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response

    def _metrics_response(self):
        if self.metrics is None:
            answer = rest.json_answer(404, {"error": "Metrics are off."})
        else:
            text = self.metrics.render(
                self.api.repository, self.api.search, self
            )
            answer = 200, text.encode("utf-8"), metrics_lib.CONTENT_TYPE
        return _response(answer)

    async def _read_body(self, request):
        """(body, error, close) of a POST; close: False, True (after the
        answer) or _ABORT (after the answer, not reading the rest)."""
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return None, invalid_argument(
                "Chunked request bodies are not supported; send "
                "Content-Length."
            ), True
        length = request.content_length
        if length is None:
            return None, rest.HttpError(
                411, "A POST needs a Content-Length header."
            ), True
        if length > self.max_request_bytes:
            # aiohttp reads and drops the body after the answer (up to
            # its lingering time), so the client can read the 413.
            return None, rest.HttpError(
                413,
                f"Request body of {length} bytes is over the server's "
                f"max_request_bytes={self.max_request_bytes}.",
            ), True
        try:
            body = await asyncio.wait_for(
                request.content.readexactly(length), self.request_timeout_s
            )
            return body, None, False
        except asyncio.TimeoutError:  # Not TimeoutError before 3.11.
            return None, rest.HttpError(
                408,
                f"The request body of {length} bytes did not arrive within "
                f"request_timeout_s={self.request_timeout_s}.",
            ), _ABORT
        except asyncio.IncompleteReadError as e:
            return None, invalid_argument(
                f"Request body ended after {len(e.partial)} of {length} "
                "bytes."
            ), _ABORT
        except (aiohttp.ClientPayloadError, ConnectionError) as e:
            return None, invalid_argument(
                f"Request body could not be read: {e}"
            ), _ABORT


def _response(answer):
    status, body, content_type = answer
    return web.Response(
        status=status,
        body=body,
        headers={
            "Content-Type": content_type,
            "X-Content-Type-Options": "nosniff",
            "Server": _SERVER_HEADER,
        },
    )

"""The aiohttp REST stack: limits, timeouts, keep-alive, graceful shutdown.

A fake `RestApi` whose model route blocks until released makes the
in-flight and shutdown cases deterministic; no TensorFlow is loaded.
"""

import json
import socket
import threading
import time

import pytest

from serving.rest import RestApi
from serving.rest_server import RestServer
from tests.support.http import http_json
from tests.support.http import http_raw


class _BlockingApi(RestApi):
    """`GET /v1/models/slow` waits for `release`; other models answer."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def route_model(self, method, path, read_body):
        if path == "/v1/models/slow":
            self.started.release()
            self.release.wait(30)
            return {"slow": True}
        if method == "POST":
            return {"body_bytes": len(read_body())}
        return {"path": path}


@pytest.fixture
def api():
    api = _BlockingApi()
    yield api
    api.release.set()


def _server(api, **limits):
    return RestServer(api, "127.0.0.1", 0, **limits).start()


def _get_in_thread(port, path):
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(http_json(port, "GET", path))
    )
    thread.start()
    return thread, answers


def _read_all(sock, timeout=10):
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_keep_alive_answers_several_requests_on_one_connection(api):
    server = _server(api)
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(3):
                s.sendall(
                    f"GET /v1/models/m{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                answer = s.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
                assert f'"/v1/models/m{i}"'.encode() in answer
        assert server.connections <= 1
    finally:
        server.stop(1)


def test_over_max_in_flight_answers_503_in_tf_serving_json(api):
    server = _server(api, max_in_flight=1, workers=1)
    try:
        port = server.server_address[1]
        thread, answers = _get_in_thread(port, "/v1/models/slow")
        assert api.started.acquire(timeout=10)
        status, body = http_json(port, "GET", "/v1/models/other")
        assert status == 503
        assert set(body) == {"error"}
        assert "max_in_flight=1" in body["error"]
        api.release.set()
        thread.join(10)
        assert answers == [(200, {"slow": True})]
        assert http_json(port, "GET", "/v1/models/other")[0] == 200
    finally:
        server.stop(1)


def test_over_max_connections_answers_503_and_closes(api):
    server = _server(api, max_connections=2)
    port = server.server_address[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        _wait_for(lambda: server.connections == 2)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            answer = _read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
            "error": "Too many open connections; retry later."
        }
    finally:
        for s in held:
            s.close()
    try:
        _wait_for(lambda: server.connections == 0)
        assert http_json(port, "GET", "/v1/models/m")[0] == 200
    finally:
        server.stop(1)


def test_idle_and_half_sent_connections_are_closed(api):
    server = _server(api, idle_timeout_s=0.5, request_timeout_s=0.5)
    try:
        port = server.server_address[1]
        idle = socket.create_connection(("127.0.0.1", port))
        half_headers = socket.create_connection(("127.0.0.1", port))
        half_headers.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost:")
        half_body = socket.create_connection(("127.0.0.1", port))
        half_body.sendall(
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\n{\"instances\""
        )
        start = time.monotonic()
        assert _read_all(idle) == b""
        assert _read_all(half_headers) == b""
        answer = _read_all(half_body)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request_timeout_s=0.5" in answer
        assert time.monotonic() - start < 5
        for s in (idle, half_headers, half_body):
            s.close()
        assert http_json(port, "GET", "/v1/models/m")[0] == 200
    finally:
        server.stop(1)


def test_body_limits(api):
    server = _server(api, max_request_bytes=1000)
    try:
        port = server.server_address[1]
        assert http_json(port, "POST", "/v1/models/m:predict", raw=b"x" * 10)[
            1
        ] == {"body_bytes": 10}
        status, answer = http_raw(
            port,
            "POST",
            "/v1/models/m:predict",
            b"x" * 2000,
            {"Content-Length": "2000"},
        )
        assert status == 413
        assert "max_request_bytes=1000" in json.loads(answer)["error"]
        status, answer = http_raw(
            port,
            "POST",
            "/v1/models/m:predict",
            b"5\r\nhello\r\n0\r\n\r\n",
            {"Transfer-Encoding": "chunked"},
        )
        assert status == 400
        assert "Chunked" in json.loads(answer)["error"]
        assert http_raw(port, "PUT", "/v1/models/m")[0] == 501
        status, body = http_raw(port, "HEAD", "/v1/models/m")
        assert (status, body) == (200, b"")
    finally:
        server.stop(1)


def test_graceful_shutdown_finishes_in_flight_and_stops_accepting(api):
    server = _server(api)
    port = server.server_address[1]
    thread, answers = _get_in_thread(port, "/v1/models/slow")
    assert api.started.acquire(timeout=10)
    idle = socket.create_connection(("127.0.0.1", port))
    _wait_for(lambda: server.connections == 2)
    stopper = threading.Thread(target=server.stop, args=(10,))
    stopper.start()
    time.sleep(0.3)
    assert _read_all(idle) == b""  # Idle keep-alive closed at once.
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
    api.release.set()
    thread.join(10)
    stopper.join(15)
    assert answers == [(200, {"slow": True})]
    assert not stopper.is_alive()

"""HTTP helpers for the serving tests (plain urllib / http.client)."""

import base64
import http.client
import json
import urllib.error
import urllib.request


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def http_json(port, method, path, body=None, raw=None, timeout=30):
    """Sends JSON (or `raw` bytes); returns (status, parsed JSON answer)."""
    data = (
        raw
        if raw is not None
        else (None if body is None else json.dumps(body).encode("utf-8"))
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def http_raw(port, method, path, body=b"", headers=None, timeout=30):
    """A hand-made request (e.g. no Content-Length) -> (status, bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def http_bytes(port, path, timeout=30):
    """GET returning (status, content type, body bytes)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=timeout
        ) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()

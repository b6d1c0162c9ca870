"""Fuzzing the live server: >1,000 malformed REST requests, malformed gRPC.

Property: every answer is 4xx or 501 (gRPC: never INTERNAL or UNKNOWN),
never 500; the server keeps answering correctly afterwards, and its memory
stays bounded. The cases come from the seeded `tests.support.fuzz`.

The served encoder decodes as the real export does
(`preprocess.decode_image` with the default `max_image_pixels`), so the
decompression bombs (a valid 20000 x 20000 PNG of zeros; headers declaring
huge JPEG, GIF, BMP and WebP images) are refused 400 / INVALID_ARGUMENT
from their headers, within the RSS bound.
"""

import collections
import http.client
import logging
import socket

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf.data import preprocess
from shrewd_tf.retrieval import BinaryHammingIndex
from shrewd_tf.retrieval import ScannIndex
from tests.support import fuzz
from tests.support import image_bombs
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_json

CODE_BITS = 16
NUM_CODES = 200
# Growth of the server's (this process's) RSS allowed over the whole fuzz.
MAX_RSS_GROWTH_MB = 300


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    saved_models.write_encoder(
        root / "exports" / fuzz.MODEL / "1", CODE_BITS, seed=0,
        max_image_pixels=preprocess.MAX_IMAGE_PIXELS,
    )
    rng = np.random.default_rng(0)
    codes = rng.random((NUM_CODES, CODE_BITS)).astype(np.float32)
    ids = np.arange(NUM_CODES)
    binary = BinaryHammingIndex(code_bits=CODE_BITS, method="flat")
    binary.build(codes, ids)
    scann = ScannIndex(brute_force=True).build(codes, ids)
    for index in (binary, scann):
        index.set_metadata(
            ids,
            label=[int(i % 3) for i in ids],
            image_uri=["x.png"] * NUM_CODES,
        )
    binary.save(str(root / "binary"))
    scann.save(str(root / "float"))
    (root / "images").mkdir()
    config = ServerConfig(
        export_root=str(root / "exports"),
        binary_index=str(root / "binary"),
        float_index=str(root / "float"),
        image_root=str(root / "images"),
        rest_port=0,
        grpc_port=0,
        poll_interval_s=3600,
        max_batch_size=8,
        max_request_bytes=1_000_000,
        request_timeout_s=1.0,
        idle_timeout_s=2.0,
    )
    with Server(config) as running:
        yield running


def _send(port, case):
    """Status of one case's answer (None: closed without an answer)."""
    if case.raw is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(
                case.method,
                case.path,
                case.body,
                {"Content-Type": "application/json", **dict(case.headers)},
            )
            return connection.getresponse().status
        finally:
            connection.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(case.raw)
            answer = b""
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionError:
            return None
    if not answer:
        return None
    status_line = answer.split(b"\r\n", 1)[0].split()
    assert status_line[0].startswith(b"HTTP/1."), answer[:200]
    return int(status_line[1])


def _check_normal_requests(server):
    pixels = saved_models.random_image(np.random.default_rng(1), 5)
    status, body = http_json(
        server.rest_port,
        "POST",
        f"/v1/models/{fuzz.MODEL}:predict",
        {"instances": [b64(saved_models.png_bytes(pixels))]},
    )
    assert status == 200, body
    code, bits = saved_models.reference_encode(pixels[None], CODE_BITS, 0)
    np.testing.assert_allclose(body["predictions"][0]["code"], code[0],
                               atol=1e-5)
    assert body["predictions"][0]["bits"] == bits[0].tolist()
    status, body = http_json(
        server.rest_port, "POST", "/v1/search",
        {"code": code[0].tolist(), "k": 3},
    )
    assert status == 200, body
    assert len(body["results"]) == 3


def test_rest_fuzz_never_answers_500(server, caplog):
    cases = fuzz.rest_cases(seed=0)
    assert len(cases) >= 1000
    assert {c.kind for c in cases} == set(fuzz.GENERATORS)
    _check_normal_requests(server)
    rss_before = _rss_mb()
    counts = collections.Counter()
    failures = []
    with caplog.at_level(logging.ERROR):
        for case in cases:
            status = _send(server.rest_port, case)
            counts[case.kind, status] += 1
            allowed = status in case.ok_statuses or (
                status is None and case.raw is not None
            )
            if not allowed:
                failures.append((status, case))
    logging.warning(
        "REST fuzz (kind, status): %s", sorted(counts.items(), key=str)
    )
    assert not failures, failures[:5]
    bombs = {s for (kind, s) in counts if kind == "image_bomb"}
    assert bombs == {400}, counts  # refused from the header, not a 413
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    _check_normal_requests(server)
    assert _rss_mb() - rss_before < MAX_RSS_GROWTH_MB


def test_a_real_bomb_gets_400_naming_its_size_and_the_cap(server):
    rss_before = _rss_mb()
    bomb = b64(image_bombs.real_png_bomb())
    for path, body in (
        (f"/v1/models/{fuzz.MODEL}:predict", {"instances": [bomb]}),
        ("/v1/search", {"image": bomb, "k": 3}),
    ):
        status, answer = http_json(server.rest_port, "POST", path, body)
        assert status == 400, answer
        assert "image is 20000 x 20000 (400000000 pixels decoded)" in (
            answer["error"]
        )
        assert "max_image_pixels=67108864" in answer["error"]
    assert _rss_mb() - rss_before < MAX_RSS_GROWTH_MB


def test_grpc_fuzz_never_answers_internal(server):
    rss_before = _rss_mb()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    counts = collections.Counter()
    bad = []
    cases = fuzz.grpc_cases(seed=0)
    for description, request, may_succeed in cases:
        try:
            stub.Predict(request, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        counts[code.name] += 1
        if "bomb" in description and code != grpc.StatusCode.INVALID_ARGUMENT:
            bad.append((description, code))
        if code in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ) or (code == grpc.StatusCode.OK and not may_succeed):
            bad.append((description, code))
    channel.close()
    logging.warning("gRPC fuzz statuses: %s", dict(counts))
    assert not bad, bad
    assert len(cases) >= 100
    _check_normal_requests(server)
    assert _rss_mb() - rss_before < MAX_RSS_GROWTH_MB

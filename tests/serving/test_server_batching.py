"""A server with --enable-batching: concurrent predicts and image-search
encodes run as one batch and answer what an unbatched server answers."""

import concurrent.futures
import re

import numpy as np
import pytest

from serving.batching_parameters import BatchingParameters
from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf.retrieval import BinaryHammingIndex
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_bytes
from tests.support.http import http_json

CODE_BITS = 16
CLIENTS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    rng = np.random.default_rng(11)
    pixels = [saved_models.random_image(rng) for _ in range(40)]
    codes = np.concatenate(
        [saved_models.reference_encode(p[None], CODE_BITS)[0] for p in pixels]
    )
    index = BinaryHammingIndex(code_bits=CODE_BITS).build(codes)
    index.save(str(root / "binary_index"))
    saved_models.write_encoder(root / "exports" / "enc" / "1", CODE_BITS)
    return root, pixels


def _server(root, batching):
    return Server(
        ServerConfig(
            export_root=str(root / "exports"),
            binary_index=str(root / "binary_index"),
            rest_port=0,
            grpc_port=None,
            poll_interval_s=3600,
            # A batch runs only when CLIENTS rows are queued (the timeout
            # is never reached in the test), so the batch is certain.
            batching=batching,
            rest_workers=CLIENTS,
        )
    )


def _concurrently(calls):
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _predict(port, png):
    return lambda: http_json(
        port, "POST", "/v1/models/enc:predict", {"instances": [b64(png)]}
    )


def _search(port, png):
    return lambda: http_json(
        port, "POST", "/v1/search", {"image": b64(png), "k": 5}
    )


def _batch_size_histogram(port):
    status, _, body = http_bytes(port, "/monitoring/prometheus/metrics")
    assert status == 200
    text = body.decode()
    return {
        bound: int(count)
        for bound, count in re.findall(
            r'shrewd_serving_batch_size_bucket\{le="([^"]+)"\} (\d+)', text
        )
    }, text


def test_predicts_and_search_encodes_share_a_batch(setup):
    root, pixels = setup
    pngs = [saved_models.png_bytes(p) for p in pixels[:CLIENTS]]
    batching = BatchingParameters(
        max_batch_size=CLIENTS,
        batch_timeout_micros=600_000_000,
        num_batch_threads=1,
    )
    with _server(root, None) as plain:
        expected_search = [_search(plain.rest_port, png)() for png in pngs]
    with _server(root, batching) as server:
        port = server.rest_port
        answers = _concurrently(
            [_predict(port, pngs[0]), _predict(port, pngs[1]),
             _search(port, pngs[2]), _search(port, pngs[3])]
        )
        histogram, text = _batch_size_histogram(port)
    for i in (0, 1):
        status, body = answers[i]
        assert status == 200, body
        code, bits = saved_models.reference_encode(pixels[i][None], CODE_BITS)
        np.testing.assert_allclose(
            body["predictions"][0]["code"], code[0], atol=1e-6
        )
        assert body["predictions"][0]["bits"] == bits[0].tolist()
    for i in (2, 3):
        status, body = answers[i]
        assert status == 200, body
        assert body["results"] == expected_search[i][1]["results"]
    # One batch of all 4 rows: the bucket le=2 is empty, le=4 holds it.
    assert histogram["2"] == 0 and histogram["4"] == 1, text
    assert "shrewd_serving_batch_size_sum 4" in text


def test_a_bad_image_in_a_batch_fails_only_its_request(setup):
    root, pixels = setup
    pngs = [saved_models.png_bytes(p) for p in pixels[:CLIENTS - 1]]
    batching = BatchingParameters(
        max_batch_size=CLIENTS,
        batch_timeout_micros=600_000_000,
        num_batch_threads=1,
    )
    with _server(root, batching) as server:
        port = server.rest_port
        answers = _concurrently(
            [_predict(port, png) for png in pngs]
            + [_predict(port, b"not an image")]
        )
        histogram, _ = _batch_size_histogram(port)
    for i, (status, body) in enumerate(answers[:-1]):
        assert status == 200, body
        code, _ = saved_models.reference_encode(pixels[i][None], CODE_BITS)
        np.testing.assert_allclose(
            body["predictions"][0]["code"], code[0], atol=1e-6
        )
    status, body = answers[-1]
    assert status == 400
    assert "error" in body
    assert histogram["4"] == 1


def test_a_request_over_the_batch_limit_is_refused(setup):
    root, pixels = setup
    png = saved_models.png_bytes(pixels[0])
    batching = BatchingParameters(max_batch_size=2, num_batch_threads=1)
    with _server(root, batching) as server:
        status, body = http_json(
            server.rest_port,
            "POST",
            "/v1/models/enc:predict",
            {"instances": [b64(png)] * 3},
        )
        ok, answer = _predict(server.rest_port, png)()
    assert status == 400
    assert "Task size 3 is larger than maximum input batch size 2" in (
        body["error"]
    )
    assert ok == 200, answer

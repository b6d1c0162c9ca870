"""REST API against a live server on loopback (plain urllib / http.client)."""

import base64
import concurrent.futures
import json

import numpy as np
import pytest

from serving.client import RestClient
from serving.errors import ServingError
from serving.server import Server
from serving.server import ServerConfig
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_json
from tests.support.http import http_raw

CODE_BITS = 16
MAX_REQUEST_BYTES = 200_000
MAX_BATCH = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    saved_models.write_encoder(root / "enc" / "3", CODE_BITS, seed=0)
    config = ServerConfig(
        export_root=str(root),
        rest_port=0,
        grpc_port=None,
        poll_interval_s=3600,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_batch_size=MAX_BATCH,
    )
    with Server(config) as running:
        yield running


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    # Different sizes: the bytes signature pools each image on its own.
    return [saved_models.random_image(rng, size) for size in (4, 5, 6, 7)]


def _reference(pixels):
    return saved_models.reference_encode(pixels[None], CODE_BITS, seed=0)


def _alive(port):
    status, body = http_json(port, "GET", "/v1/models/enc")
    assert status == 200, body
    assert body["model_version_status"][0]["state"] == "AVAILABLE"


def test_model_status_and_version_status(server):
    expected = {
        "model_version_status": [
            {
                "version": "3",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert http_json(server.rest_port, "GET", "/v1/models/enc") == (
        200,
        expected,
    )
    assert http_json(server.rest_port, "GET", "/v1/models/enc/versions/3") == (
        200,
        expected,
    )


def test_metadata_has_tf_serving_shape(server):
    status, body = http_json(
        server.rest_port, "GET", "/v1/models/enc/metadata"
    )
    assert status == 200
    assert body["model_spec"] == {
        "name": "enc",
        "signature_name": "",
        "version": "3",
    }
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    [(input_name, tensor)] = default["inputs"].items()
    assert input_name == "image_bytes"
    assert tensor["dtype"] == "DT_STRING"
    assert tensor["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}],
        "unknown_rank": False,
    }
    assert default["outputs"]["code"]["tensor_shape"]["dim"][1]["size"] == str(
        CODE_BITS
    )
    assert default["outputs"]["bits"]["dtype"] == "DT_UINT8"
    assert (
        signatures["embed_pixels"]["inputs"]["pixels"]["dtype"] == "DT_FLOAT"
    )
    versioned = http_json(
        server.rest_port, "GET", "/v1/models/enc/versions/3/metadata"
    )
    assert versioned == (200, body)


def test_predict_row_format_with_b64_images(server, images):
    instances = [b64(saved_models.png_bytes(p)) for p in images]
    status, body = http_json(
        server.rest_port,
        "POST",
        "/v1/models/enc:predict",
        {"instances": instances},
    )
    assert status == 200, body
    assert len(body["predictions"]) == len(images)
    for prediction, pixels in zip(body["predictions"], images):
        code, bits = _reference(pixels)
        np.testing.assert_allclose(prediction["code"], code[0], atol=1e-5)
        assert prediction["bits"] == bits[0].tolist()
    named = [{"image_bytes": value} for value in instances]
    status, same = http_json(
        server.rest_port,
        "POST",
        "/v1/models/enc/versions/3:predict",
        {"signature_name": "serving_default", "instances": named},
    )
    assert (status, same) == (200, body)


def test_predict_columnar_format_with_pixels(server, images):
    pixels = np.stack([p for p in images if p.shape[0] == 5]).astype(
        np.float32
    )
    status, body = http_json(
        server.rest_port,
        "POST",
        "/v1/models/enc:predict",
        {
            "signature_name": "embed_pixels",
            "inputs": {"pixels": pixels.tolist()},
        },
    )
    assert status == 200, body
    code, bits = saved_models.reference_encode(pixels, CODE_BITS, seed=0)
    np.testing.assert_allclose(body["outputs"]["code"], code, atol=1e-5)
    assert body["outputs"]["bits"] == bits.tolist()


def _png_b64():
    return b64(saved_models.png_bytes(np.zeros((2, 2, 3), np.uint8)))


ERROR_CASES = [
    # (method, path, JSON body or raw bytes, status, text in the error)
    ("POST", "/v1/models/enc:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/enc:predict", b"\xff\xfe", 400, "JSON Parse error"),
    ("POST", "/v1/models/enc:predict", [1, 2], 400, "JSON object"),
    (
        "POST",
        "/v1/models/enc:predict",
        b"[" * 50_000 + b"]" * 50_000,
        400,
        "JSON Parse error",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        b'{"instances": ["\\ud800"]}',
        400,
        "lone UTF-16 surrogate",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        b'{"instances": [{"b64": "\\udfff"}], "\\ud800": 1}',
        400,
        "lone UTF-16 surrogate",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"instances": [], "inputs": []},
        400,
        "only one of 'inputs' or 'instances'",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"instances": [{"b64": "@@@"}]},
        400,
        "unable to base64-decode",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {
            "instances": [
                {"b64": base64.b64encode(b"not an image at all").decode()}
            ]
        },
        400,
        "Unknown image file format",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"signature_name": "embed_pixels", "inputs": [["a"]]},
        400,
        "expected numbers",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"signature_name": "embed_pixels", "inputs": [[[1, 2, 3]]]},
        400,
        "must have shape [-1, -1, -1, 3]",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {
            "signature_name": "embed_pixels",
            "inputs": [[[[1, 2, 3]], [[1, 2]]]],
        },
        400,
        "ragged",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {
            "signature_name": "embed_pixels",
            "instances": [{"pixels": 1, "extra": 2}],
        },
        400,
        "exactly the keys ['pixels']",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"signature_name": "nope", "instances": [1]},
        400,
        'Serving signature name: "nope" not found',
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"signature_name": 3, "instances": [1]},
        400,
        "'signature_name' must be a string",
    ),
    (
        "POST",
        "/v1/models/enc:predict",
        {"instances": [_png_b64()] * (MAX_BATCH + 1)},
        400,
        f"max_batch_size={MAX_BATCH}",
    ),
    (
        "POST",
        "/v1/models/nope:predict",
        {"instances": [1]},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "POST",
        "/v1/models/enc/versions/9:predict",
        {"instances": [1]},
        404,
        "Specific(enc, 9)",
    ),
    (
        "POST",
        "/v1/models/enc/versions/x:predict",
        {"instances": [1]},
        400,
        "non-negative integer",
    ),
    (
        "POST",
        "/v1/models/enc/labels/stable:predict",
        {"instances": [1]},
        400,
        "Unrecognized servable version label: stable",
    ),
    (
        "POST",
        "/v1/models/enc:classify",
        {"examples": []},
        501,
        "not implemented",
    ),
    (
        "GET",
        "/v1/models/nope",
        None,
        404,
        "Could not find any versions of model nope",
    ),
    (
        "GET",
        "/v1/models/enc/versions/9",
        None,
        404,
        "Could not find version 9",
    ),
    ("GET", "/v1/models/nope/metadata", None, 404, "Latest(nope)"),
    ("GET", "/v1/models/enc/frobnicate", None, 404, "Malformed request"),
    ("GET", "/v1/nothing", None, 404, "Malformed request"),
    ("POST", "/v1/search", {"code": [0.5]}, 404, "Retrieval is off"),
    ("GET", "/v1/images/0", None, 404, "Retrieval is off"),
]


@pytest.mark.parametrize(
    "method, path, body, status, text",
    ERROR_CASES,
    ids=[f"{c[1]}-{c[4][:24]}" for c in ERROR_CASES],
)
def test_errors_are_tf_serving_json_and_the_server_keeps_answering(
    server, method, path, body, status, text
):
    raw = body if isinstance(body, bytes) else None
    got_status, got = http_json(
        server.rest_port, method, path, body=None if raw else body, raw=raw
    )
    assert got_status == status, got
    assert set(got) == {"error"}
    assert text in got["error"]
    _alive(server.rest_port)


def test_oversized_body_is_refused_with_413(server):
    body = json.dumps(
        {"instances": [{"b64": "A" * MAX_REQUEST_BYTES}]}
    ).encode()
    status, answer = http_raw(
        server.rest_port,
        "POST",
        "/v1/models/enc:predict",
        body,
        {"Content-Length": str(len(body)), "Content-Type": "application/json"},
    )
    assert status == 413
    assert (
        f"max_request_bytes={MAX_REQUEST_BYTES}" in json.loads(answer)["error"]
    )
    _alive(server.rest_port)


def test_post_without_content_length_is_refused_with_411(server):
    status, answer = http_raw(
        server.rest_port, "POST", "/v1/models/enc:predict"
    )
    assert status == 411
    assert "Content-Length" in json.loads(answer)["error"]
    _alive(server.rest_port)


def test_concurrent_requests_are_all_answered(server, images):
    bodies = [
        {"instances": [b64(saved_models.png_bytes(pixels))]}
        for pixels in images
    ]

    def call(i):
        body = bodies[i % len(bodies)]
        if i % 5 == 4:  # some bad requests mixed in
            return http_json(
                server.rest_port, "POST", "/v1/models/enc:predict", raw=b"{"
            )
        return http_json(
            server.rest_port, "POST", "/v1/models/enc:predict", body
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(80)))
    for i, (status, body) in enumerate(answers):
        if i % 5 == 4:
            assert status == 400
            continue
        assert status == 200, body
        code, bits = _reference(images[i % len(images)])
        np.testing.assert_allclose(
            body["predictions"][0]["code"], code[0], atol=1e-5
        )
        assert body["predictions"][0]["bits"] == bits[0].tolist()


def test_rest_client_predict_status_metadata(server, images):
    client = RestClient(f"127.0.0.1:{server.rest_port}", "enc", timeout=30)
    outputs = client.predict_images(
        [saved_models.png_bytes(p) for p in images]
    )
    assert outputs["code"].dtype == np.float32
    assert outputs["bits"].dtype == np.uint8
    for row, pixels in enumerate(images):
        code, bits = _reference(pixels)
        np.testing.assert_allclose(outputs["code"][row], code[0], atol=1e-5)
        np.testing.assert_array_equal(outputs["bits"][row], bits[0])
    assert client.status()["model_version_status"][0]["version"] == "3"
    pixels_client = RestClient(
        f"http://127.0.0.1:{server.rest_port}",
        "enc",
        signature="embed_pixels",
        version=3,
    )
    pixels = images[0][None].astype(np.float32)
    got = pixels_client.predict({"pixels": pixels})
    np.testing.assert_allclose(
        got["code"], _reference(images[0])[0], atol=1e-5
    )
    with pytest.raises(ServingError) as info:
        RestClient(f"127.0.0.1:{server.rest_port}", "nope").status()
    assert info.value.http_status == 404

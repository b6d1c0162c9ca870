"""`GET /monitoring/prometheus/metrics`: counts, histograms, versions, index."""

import re

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import metrics
from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf.retrieval import BinaryHammingIndex
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_bytes
from tests.support.http import http_json

CODE_BITS = 16
NUM_CODES = 50
_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def _parse(text):
    """{(name, labels text): value} of the exposition's samples."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) shrewd_serving_[a-z_]+ ", line)
            continue
        match = _SAMPLE.match(line)
        assert match, line
        samples[match[1], match[2] or ""] = float(match[3])
    return samples


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    saved_models.write_encoder(root / "exports" / "enc" / "2", CODE_BITS, 0)
    rng = np.random.default_rng(0)
    index = BinaryHammingIndex(code_bits=CODE_BITS, method="flat").build(
        rng.random((NUM_CODES, CODE_BITS)).astype(np.float32),
        np.arange(NUM_CODES),
    )
    index.save(str(root / "binary"))
    config = ServerConfig(
        export_root=str(root / "exports"),
        binary_index=str(root / "binary"),
        rest_port=0,
        grpc_port=0,
        poll_interval_s=3600,
    )
    with Server(config) as running:
        yield running


def test_endpoints_are_a_fixed_set():
    assert metrics.endpoint_of("POST", "/v1/models/m:predict") == "predict"
    assert metrics.endpoint_of("POST", "/v1/models/m/versions/2:predict") == (
        "predict"
    )
    assert metrics.endpoint_of("GET", "/v1/models/m") == "model_status"
    assert metrics.endpoint_of("GET", "/v1/models/m/metadata") == (
        "model_metadata"
    )
    assert metrics.endpoint_of("POST", "/v1/models/m:regress") == (
        "classify_regress"
    )
    assert metrics.endpoint_of("GET", "/v1/images/3") == "images"
    assert metrics.endpoint_of("GET", "/made/up/" + "x" * 100) == "other"


def test_histogram_buckets_are_cumulative_and_labels_escaped():
    recorder = metrics.Metrics()
    for seconds in (0.0005, 0.003, 0.003, 20.0):
        recorder.observe('a"b\\', 200, seconds)
    samples = _parse(recorder.render())
    labels = 'endpoint="a\\"b\\\\",status="200"'
    assert samples["shrewd_serving_requests_total", "{" + labels + "}"] == 4
    bucket = "shrewd_serving_request_latency_seconds_bucket"
    assert samples[bucket, "{" + labels + ',le="0.001"}'] == 1
    assert samples[bucket, "{" + labels + ',le="0.005"}'] == 3
    assert samples[bucket, "{" + labels + ',le="10.0"}'] == 3
    assert samples[bucket, "{" + labels + ',le="+Inf"}'] == 4
    assert samples[
        "shrewd_serving_request_latency_seconds_sum", "{" + labels + "}"
    ] == pytest.approx(20.0065)


def test_live_metrics_count_requests_versions_and_index(server):
    port = server.rest_port
    png = saved_models.png_bytes(saved_models.random_image(
        np.random.default_rng(1), 4))
    for _ in range(3):
        status, _ = http_json(
            port, "POST", "/v1/models/enc:predict", {"instances": [b64(png)]}
        )
        assert status == 200
    assert http_json(port, "POST", "/v1/models/enc:predict", raw=b"{")[0] == (
        400
    )
    assert http_json(port, "GET", "/nope")[0] == 404
    status, content_type, body = http_bytes(port, metrics.PATH)
    assert status == 200
    assert content_type == metrics.CONTENT_TYPE
    samples = _parse(body.decode("utf-8"))
    total = "shrewd_serving_requests_total"
    assert samples[total, '{endpoint="predict",status="200"}'] == 3
    assert samples[total, '{endpoint="predict",status="400"}'] == 1
    assert samples[total, '{endpoint="other",status="404"}'] == 1
    assert samples[
        "shrewd_serving_request_latency_seconds_count",
        '{endpoint="predict",status="200"}',
    ] == 3
    assert samples[
        "shrewd_serving_request_latency_seconds_bucket",
        '{endpoint="predict",status="200",le="+Inf"}',
    ] == 3
    assert samples[
        "shrewd_serving_model_versions",
        '{model="enc",version="2",state="AVAILABLE"}',
    ] == 1
    assert samples["shrewd_serving_index_size", '{mode="binary"}'] == (
        NUM_CODES
    )
    assert samples["shrewd_serving_in_flight_requests", ""] == 0
    assert samples["shrewd_serving_open_connections", ""] >= 1
    # The scrape itself is counted on the next one.
    again = _parse(http_bytes(port, metrics.PATH)[2].decode("utf-8"))
    assert again[total, '{endpoint="metrics",status="200"}'] == 1


def test_grpc_calls_are_counted_by_method_and_code(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "enc"
    model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        status_request, timeout=30
    )
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError):
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            bad, timeout=30
        )
    channel.close()
    samples = _parse(
        http_bytes(server.rest_port, metrics.PATH)[2].decode("utf-8")
    )
    total = "shrewd_serving_requests_total"
    assert samples[total, '{endpoint="grpc_GetModelStatus",status="OK"}'] == 1
    assert samples[total, '{endpoint="grpc_Predict",status="NOT_FOUND"}'] == 1

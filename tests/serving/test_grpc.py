"""gRPC API with TF Serving's own stubs (tensorflow_serving.apis)."""

import concurrent.futures
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.client import GrpcClient
from serving.errors import ServingError
from serving.server import Server
from serving.server import ServerConfig
from tests.support import saved_models

CODE_BITS = 16
MAX_BATCH = 8
TIMEOUT = 30


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    saved_models.write_encoder(root / "enc" / "1", CODE_BITS, seed=0)
    return root


@pytest.fixture(scope="module")
def server(export_root):
    config = ServerConfig(
        export_root=str(export_root),
        rest_port=0,
        grpc_port=0,
        poll_interval_s=3600,
        max_batch_size=MAX_BATCH,
    )
    with Server(config) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}"
    ) as open_channel:
        yield open_channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _png(seed, size=5):
    pixels = saved_models.random_image(np.random.default_rng(seed), size)
    return pixels, saved_models.png_bytes(pixels)


def _request(model="enc", signature="", version=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _alive(stub):
    _, png = _png(0)
    response = stub.Predict(
        _request(image_bytes=np.array([png])), timeout=TIMEOUT
    )
    assert response.model_spec.version.value == 1


def test_predict_with_image_bytes(stub):
    pngs = [_png(seed, size) for seed, size in ((1, 4), (2, 6), (3, 5))]
    request = _request(
        image_bytes=np.array([png for _, png in pngs], dtype=object)
    )
    response = stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.name == "enc"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    code = tf.make_ndarray(response.outputs["code"])
    bits = tf.make_ndarray(response.outputs["bits"])
    assert code.dtype == np.float32 and bits.dtype == np.uint8
    for row, (pixels, _) in enumerate(pngs):
        ref_code, ref_bits = saved_models.reference_encode(
            pixels[None], CODE_BITS, 0
        )
        np.testing.assert_allclose(code[row], ref_code[0], atol=1e-5)
        np.testing.assert_array_equal(bits[row], ref_bits[0])


def test_predict_with_pixels_signature_and_output_filter(stub):
    pixels = np.stack([_png(s)[0] for s in range(4)]).astype(np.float32)
    request = _request(signature="embed_pixels", version=1, pixels=pixels)
    request.output_filter.append("bits")
    response = stub.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs) == ["bits"]
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["bits"]),
        saved_models.reference_encode(pixels, CODE_BITS, 0)[1],
    )


def test_get_model_metadata_packs_the_signature_def_map(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "enc"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 1
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    default = signature_defs.signature_def["serving_default"]
    assert default.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in default.outputs["code"].tensor_shape.dim] == [
        -1,
        CODE_BITS,
    ]
    assert "embed_pixels" in signature_defs.signature_def


def test_get_model_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "enc"
    [status] = stub.GetModelStatus(
        request, timeout=TIMEOUT
    ).model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelStatus(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


PIXELS = np.zeros((1, 2, 2, 3), np.float32)
ERROR_CASES = [
    # (request, code, text in the details)
    (
        lambda: _request(model="nope", image_bytes=np.array([b"x"])),
        grpc.StatusCode.NOT_FOUND,
        "Latest(nope)",
    ),
    (
        lambda: _request(version=4, image_bytes=np.array([b"x"])),
        grpc.StatusCode.NOT_FOUND,
        "Specific(enc, 4)",
    ),
    (
        lambda: _request(model="", image_bytes=np.array([b"x"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    (
        lambda: _request(signature="nope", image_bytes=np.array([b"x"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        'signature name: "nope" not found',
    ),
    (
        lambda: _request(image_bytes=np.array([b"not an image"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unknown image file format",
    ),
    (
        lambda: _request(
            signature="embed_pixels", pixels=PIXELS.astype(np.float64)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be float32",
    ),
    (
        lambda: _request(signature="embed_pixels", pixels=PIXELS[0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must have shape [-1, -1, -1, 3]",
    ),
    (
        lambda: _request(signature="embed_pixels", wrong=PIXELS),
        grpc.StatusCode.INVALID_ARGUMENT,
        "takes inputs ['pixels']",
    ),
    (
        lambda: _request(
            signature="embed_pixels",
            pixels=np.zeros((MAX_BATCH + 1, 2, 2, 3), np.float32),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"max_batch_size={MAX_BATCH}",
    ),
]


@pytest.mark.parametrize("make_request, code, text", ERROR_CASES)
def test_errors_map_to_grpc_codes_and_the_server_keeps_answering(
    stub, make_request, code, text
):
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(make_request(), timeout=TIMEOUT)
    assert info.value.code() == code
    assert text in info.value.details()
    _alive(stub)


def test_unimplemented_methods_and_bad_metadata_fields(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "enc"
    request.metadata_field.append("other")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    from tensorflow_serving.apis import classification_pb2

    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(
            classification_pb2.ClassificationRequest(), timeout=TIMEOUT
        )
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    _alive(stub)


def test_concurrent_calls_are_all_answered(stub):
    images = [_png(seed) for seed in range(6)]

    def call(i):
        pixels, png = images[i % len(images)]
        response = stub.Predict(
            _request(image_bytes=np.array([png])), timeout=TIMEOUT
        )
        return pixels, tf.make_ndarray(response.outputs["bits"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(64)))
    for pixels, bits in results:
        np.testing.assert_array_equal(
            bits, saved_models.reference_encode(pixels[None], CODE_BITS, 0)[1]
        )


def test_grpc_client_and_new_version_pickup(export_root, tmp_path):
    shutil.copytree(export_root / "enc" / "1", tmp_path / "enc" / "1")
    config = ServerConfig(
        export_root=str(tmp_path),
        rest_port=0,
        grpc_port=0,
        poll_interval_s=0.1,
    )
    with Server(config) as server:
        client = GrpcClient(
            f"127.0.0.1:{server.grpc_port}", "enc", timeout=TIMEOUT
        )
        pixels, png = _png(11)
        before = client.predict_images([png])
        np.testing.assert_allclose(
            before["code"],
            saved_models.reference_encode(pixels[None], CODE_BITS, 0)[0],
            atol=1e-5,
        )
        # Version 2 (another projection) appears, written then renamed in as
        # an exporter should; the poll thread swaps it in without a restart.
        saved_models.write_encoder(
            tmp_path / "enc" / "writing", CODE_BITS, seed=1
        )
        (tmp_path / "enc" / "writing").rename(tmp_path / "enc" / "2")
        deadline = time.monotonic() + 20
        while server.repository.get("enc").version != 2:
            assert time.monotonic() < deadline, "version 2 never loaded"
            time.sleep(0.05)
        after = client.predict_images([png])
        np.testing.assert_allclose(
            after["code"],
            saved_models.reference_encode(pixels[None], CODE_BITS, 1)[0],
            atol=1e-5,
        )
        states = {
            s.version: s.state for s in client.status().model_version_status
        }
        assert states == {
            2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
            1: get_model_status_pb2.ModelVersionStatus.END,
        }
        with GrpcClient(
            f"127.0.0.1:{server.grpc_port}", "enc", version=1
        ) as pinned:
            with pytest.raises(ServingError) as info:
                pinned.predict_images([png])
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        client.close()


def test_rpcs_over_max_in_flight_are_refused_at_once(export_root):
    # Batching with a 10-minute timeout holds the first RPCs in the batch
    # queue until max_batch_size rows arrive, so max_in_flight RPCs are
    # certainly in flight when the next one comes.
    from serving.batching_parameters import BatchingParameters

    in_flight = 2
    config = ServerConfig(
        export_root=str(export_root),
        rest_port=0,
        grpc_port=0,
        poll_interval_s=3600,
        max_in_flight=in_flight,
        warmup=False,
        batching=BatchingParameters(
            max_batch_size=in_flight + 1,
            batch_timeout_micros=600_000_000,
            num_batch_threads=1,
        ),
    )
    pngs = [_png(seed)[1] for seed in range(in_flight)]
    with Server(config) as server, grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}"
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        held = [
            stub.Predict.future(
                _request(image_bytes=np.array([png])), timeout=TIMEOUT
            )
            for png in pngs
        ]
        deadline = time.monotonic() + TIMEOUT
        while server.scheduler.queued_rows() < in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(
                _request(image_bytes=np.array([pngs[0]])), timeout=TIMEOUT
            )
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A REST predict fills the batch: the held RPCs are answered.
        from tests.support.http import b64
        from tests.support.http import http_json

        status, _ = http_json(
            server.rest_port, "POST", "/v1/models/enc:predict",
            {"instances": [b64(pngs[0])]},
        )
        assert status == 200
        for future, png in zip(held, pngs):
            code = np.asarray(
                tf.make_ndarray(future.result(TIMEOUT).outputs["code"])
            )
            pixels = _png(pngs.index(png))[0]
            expected, _ = saved_models.reference_encode(
                pixels[None], CODE_BITS
            )
            np.testing.assert_allclose(code, expected, atol=1e-6)

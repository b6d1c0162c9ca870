"""Model repository: latest version, hot swap, broken versions, warmup."""

import os
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import ServingError
from serving.models import ModelRepository
from tests.support import saved_models

CODE_BITS = 16


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Two encoders (seed 0 and 1) to copy in as versions."""
    root = tmp_path_factory.mktemp("templates")
    return {
        seed: saved_models.write_encoder(root / f"seed{seed}", CODE_BITS, seed)
        for seed in (0, 1)
    }


def _install(templates, export_root, name, version, seed):
    target = export_root / name / str(version)
    shutil.copytree(templates[seed], target)
    return target


def _pixels(seed=0):
    return saved_models.random_image(np.random.default_rng(seed))[None].astype(
        np.float32
    )


def _served_seed(repository, name):
    """Which template (seed) the served version computes, by the reference."""
    signature = repository.get(name).signature("embed_pixels")
    code = signature.run({"pixels": _pixels()})["code"]
    for seed in (0, 1):
        expected, _ = saved_models.reference_encode(_pixels(), CODE_BITS, seed)
        if np.allclose(code, expected, atol=1e-5):
            return seed
    raise AssertionError(f"code matches no template: {code}")


def _repository(export_root, **kwargs):
    kwargs.setdefault("poll_interval_s", 3600)
    return ModelRepository(str(export_root), **kwargs)


def test_serves_the_highest_version_of_every_model(templates, tmp_path):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    _install(templates, tmp_path, "alpha", 7, seed=1)
    _install(templates, tmp_path, "beta", 3, seed=0)
    (tmp_path / "alpha" / "not_a_version").mkdir()
    repository = _repository(tmp_path)
    repository.poll()
    assert repository.model_names_served() == ["alpha", "beta"]
    assert repository.get("alpha").version == 7
    assert _served_seed(repository, "alpha") == 1
    assert repository.get("beta", version=3).version == 3
    [status] = repository.status("alpha")
    assert status.to_json() == {
        "version": "7",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_model_names_restrict_what_is_served(templates, tmp_path):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    _install(templates, tmp_path, "beta", 1, seed=0)
    repository = _repository(tmp_path, model_names=["beta"])
    repository.poll()
    assert repository.model_names_served() == ["beta"]


def test_unknown_model_version_or_label_fail_like_tf_serving(
    templates, tmp_path
):
    _install(templates, tmp_path, "alpha", 2, seed=0)
    repository = _repository(tmp_path)
    repository.poll()
    cases = [
        (
            lambda: repository.get("nope"),
            grpc.StatusCode.NOT_FOUND,
            "Latest(nope)",
        ),
        (
            lambda: repository.get("alpha", 1),
            grpc.StatusCode.NOT_FOUND,
            "Specific(alpha, 1)",
        ),
        (
            lambda: repository.get("alpha", None, "stable"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "stable",
        ),
        (
            lambda: repository.status("nope"),
            grpc.StatusCode.NOT_FOUND,
            "model nope",
        ),
        (
            lambda: repository.status("alpha", 5),
            grpc.StatusCode.NOT_FOUND,
            "version 5",
        ),
    ]
    for call, code, text in cases:
        with pytest.raises(ServingError) as info:
            call()
        assert info.value.code == code
        assert text in info.value.message


def test_new_version_is_picked_up_and_old_one_ends(templates, tmp_path):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    repository = _repository(tmp_path)
    repository.poll()
    old = repository.get("alpha")
    _install(templates, tmp_path, "alpha", 2, seed=1)
    assert repository.get("alpha") is old  # nothing changes before a poll
    repository.poll()
    assert repository.get("alpha").version == 2
    assert _served_seed(repository, "alpha") == 1
    # A request that already holds the old servable still completes.
    code = old.signature("embed_pixels").run({"pixels": _pixels()})["code"]
    np.testing.assert_allclose(
        code,
        saved_models.reference_encode(_pixels(), CODE_BITS, 0)[0],
        atol=1e-5,
    )
    states = {
        s.version: s.to_json()["state"] for s in repository.status("alpha")
    }
    assert states == {2: "AVAILABLE", 1: "END"}


def test_broken_version_is_skipped_then_retried_when_its_files_change(
    templates, tmp_path
):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    repository = _repository(tmp_path)
    repository.poll()
    broken = saved_models.write_broken_version(tmp_path / "alpha" / "2")
    repository.poll()
    assert repository.get("alpha").version == 1
    assert _served_seed(repository, "alpha") == 0
    failed = repository.status("alpha", 2)[0].to_json()
    assert failed["state"] == "END"
    assert failed["status"]["error_code"] != "OK"
    assert failed["status"]["error_message"]
    repository.poll()  # unchanged files: not retried, still version 1
    assert repository.get("alpha").version == 1
    # The exporter finishes writing version 2: it loads on the next poll.
    shutil.rmtree(broken)
    _install(templates, tmp_path, "alpha", 2, seed=1)
    repository.poll()
    assert repository.get("alpha").version == 2
    assert repository.status("alpha", 2)[0].to_json()["state"] == "AVAILABLE"


def test_broken_latest_falls_back_to_a_loadable_version_at_start(
    templates, tmp_path
):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    saved_models.write_broken_version(tmp_path / "alpha" / "5")
    (tmp_path / "alpha" / "6").mkdir()  # an export still being written
    repository = _repository(tmp_path)
    repository.poll()
    assert repository.get("alpha").version == 1


def test_removed_version_falls_back_to_the_next_highest(templates, tmp_path):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    newest = _install(templates, tmp_path, "alpha", 2, seed=1)
    repository = _repository(tmp_path)
    repository.poll()
    assert repository.get("alpha").version == 2
    shutil.rmtree(newest)
    repository.poll()
    assert repository.get("alpha").version == 1
    assert _served_seed(repository, "alpha") == 0


def test_poll_thread_picks_up_new_versions_without_restart(
    templates, tmp_path
):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    repository = _repository(tmp_path, poll_interval_s=0.1).start()
    try:
        assert repository.get("alpha").version == 1
        _install(templates, tmp_path, "alpha", 2, seed=1)
        deadline = time.monotonic() + 20
        while repository.get("alpha").version != 2:
            assert time.monotonic() < deadline, "version 2 never loaded"
            time.sleep(0.05)
    finally:
        repository.stop()
    assert _served_seed(repository, "alpha") == 1


def _write_warmup(version_dir, signature_name, inputs):
    path = os.path.join(
        version_dir, "assets.extra", "tf_serving_warmup_requests"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(3):
            writer.write(log.SerializeToString())


def test_warmup_requests_are_replayed_and_a_failing_warmup_fails_the_load(
    templates, tmp_path
):
    good = _install(templates, tmp_path, "alpha", 1, seed=0)
    _write_warmup(good, "embed_pixels", {"pixels": _pixels()})
    bad = _install(templates, tmp_path, "alpha", 2, seed=1)
    _write_warmup(
        bad, "serving_default", {"image_bytes": np.array([b"not a png"])}
    )
    repository = _repository(tmp_path)
    repository.poll()
    assert repository.get("alpha").version == 1
    assert repository.get("alpha").warm_up() == 3
    message = repository.status("alpha", 2)[0].error_message
    assert "Unknown image file format" in message


def test_signature_checks_inputs_shapes_batch_and_output_filter(
    templates, tmp_path
):
    _install(templates, tmp_path, "alpha", 1, seed=0)
    repository = _repository(tmp_path)
    repository.poll()
    signature = repository.get("alpha").signature("embed_pixels")
    pixels = np.repeat(_pixels(), 3, axis=0)
    only_bits = signature.run({"pixels": pixels}, output_filter=["bits"])
    assert list(only_bits) == ["bits"]
    np.testing.assert_array_equal(
        only_bits["bits"],
        saved_models.reference_encode(pixels, CODE_BITS, 0)[1],
    )
    cases = [
        ({}, {}, "takes inputs ['pixels']"),
        (
            {"pixels": pixels[:, :, :, :2]},
            {},
            "must have shape [-1, -1, -1, 3]",
        ),
        ({"pixels": pixels[0]}, {}, "must have shape"),
        ({"pixels": pixels}, {"max_batch_size": 2}, "max_batch_size=2"),
        ({"pixels": pixels}, {"output_filter": ["nope"]}, "output_filter"),
    ]
    for arrays, kwargs, text in cases:
        with pytest.raises(ServingError) as info:
            signature.run(arrays, **kwargs)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert text in info.value.message
    with pytest.raises(ServingError) as info:
        repository.get("alpha").signature("nope")
    assert 'signature name: "nope" not found' in info.value.message

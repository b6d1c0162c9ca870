"""ServerConfig validation, the command line, loopback binding."""

import argparse
import urllib.request

import pytest

from serving.server import Server
from serving.server import ServerConfig
from serving.server import add_arguments
from serving.server import config_from_args
from tests.support.http import http_json


def _parse(argv):
    return config_from_args(
        add_arguments(argparse.ArgumentParser()).parse_args(argv)
    )


def test_command_line_builds_the_config():
    config = _parse(
        [
            "--export-root",
            "exports",
            "--model-names",
            "a",
            "b",
            "--encoder-url",
            "http://encoder:8501",
            "--binary-index",
            "idx",
            "--image-root",
            "images",
            "--rest-port",
            "0",
            "--grpc-port",
            "-1",
            "--max-k",
            "50",
            "--max-batch-size",
            "4",
            "--max-request-bytes",
            "1000",
            "--poll-interval-s",
            "0.5",
            "--max-connections",
            "100",
            "--max-in-flight",
            "8",
            "--rest-workers",
            "2",
            "--idle-timeout-s",
            "5",
            "--shutdown-grace-s",
            "1",
            "--no-warmup",
        ]
    )
    assert config == ServerConfig(
        export_root="exports",
        model_names=("a", "b"),
        encoder_url="http://encoder:8501",
        binary_index="idx",
        image_root="images",
        rest_port=0,
        grpc_port=None,
        max_k=50,
        max_batch_size=4,
        max_request_bytes=1000,
        poll_interval_s=0.5,
        max_connections=100,
        max_in_flight=8,
        rest_workers=2,
        idle_timeout_s=5.0,
        shutdown_grace_s=1.0,
        warmup=False,
    )
    defaults = _parse(["--binary-index", "idx"])
    assert (defaults.host, defaults.rest_port, defaults.grpc_port) == (
        "127.0.0.1",
        8501,
        8500,
    )


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({}, "Nothing to serve"),
        ({"binary_index": "x", "max_k": 0}, "max_k=0"),
        ({"binary_index": "x", "max_batch_size": True}, "max_batch_size=True"),
        ({"binary_index": "x", "poll_interval_s": 0}, "poll_interval_s=0"),
        ({"binary_index": "x", "max_in_flight": 0}, "max_in_flight=0"),
        ({"binary_index": "x", "idle_timeout_s": 0}, "idle_timeout_s=0"),
        ({"binary_index": "x", "shutdown_grace_s": -1}, "shutdown_grace_s=-1"),
    ],
)
def test_bad_configs_are_refused(kwargs, text):
    with pytest.raises(ValueError, match=text.replace("(", r"\(")):
        ServerConfig(**kwargs)


def test_bad_encoder_url_is_refused():
    with pytest.raises(
        ValueError, match="Received: encoder_url='encoder:8501'"
    ):
        ServerConfig(encoder_url="encoder:8501", binary_index="idx")
    with pytest.raises(ValueError, match="without an index"):
        ServerConfig(encoder_url="http://encoder:8501", export_root="exports")


def test_a_failed_start_stops_what_it_started(tmp_path):
    config = ServerConfig(
        export_root=str(tmp_path),
        binary_index=str(tmp_path / "missing"),
        rest_port=0,
        grpc_port=0,
    )
    server = Server(config)
    with pytest.raises(Exception, match="missing"):
        server.start()
    assert server.repository is None


def test_binds_loopback_by_default_and_serves_the_page(tmp_path):
    config = ServerConfig(export_root=str(tmp_path), rest_port=0, grpc_port=0)
    with Server(config) as server:
        assert server._rest.server_address[0] == "127.0.0.1"
        assert http_json(server.rest_port, "GET", "/v1/models/none")[0] == 404
        url = f"http://127.0.0.1:{server.rest_port}"
        with urllib.request.urlopen(url + "/", timeout=30) as page:
            assert page.headers["Content-Type"] == "text/html"
            assert b'<script src="/static/app.js">' in page.read()
        with urllib.request.urlopen(
            url + "/static/app.js", timeout=30
        ) as script:
            assert b"/v1/search" in script.read()

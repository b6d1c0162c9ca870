"""The web page in headless Chromium: database, query, results, screenshot."""

import os
import re
import struct
import subprocess

import numpy as np
import pytest

from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf.retrieval import BinaryHammingIndex
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_bytes
from tests.support.http import http_json

CHROMIUM = "/usr/bin/chromium"
CODE_BITS = 16
NUM_IMAGES = 30
WINDOW = (1000, 1400)

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent: apt-get install -y chromium",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    (root / "images").mkdir()
    rng = np.random.default_rng(5)
    codes = []
    for i in range(NUM_IMAGES):
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        pixels = np.broadcast_to(colour, (6, 6, 3))
        (root / "images" / f"{i}.png").write_bytes(
            saved_models.png_bytes(pixels)
        )
        codes.append(
            saved_models.reference_encode(pixels[None], CODE_BITS, 0)[0][0]
        )
    index = BinaryHammingIndex(code_bits=CODE_BITS).build(np.array(codes))
    index.set_metadata(
        np.arange(NUM_IMAGES),
        label=[i % 10 for i in range(NUM_IMAGES)],
        caption=[f"colour {i}" for i in range(NUM_IMAGES)],
        image_uri=[f"{i}.png" for i in range(NUM_IMAGES)],
    )
    index.save(str(root / "binary_index"))
    saved_models.write_encoder(
        root / "exports" / "enc" / "1", CODE_BITS, seed=0
    )
    config = ServerConfig(
        export_root=str(root / "exports"),
        binary_index=str(root / "binary_index"),
        image_root=str(root / "images"),
        rest_port=0,
        grpc_port=None,
        poll_interval_s=3600,
    )
    with Server(config) as running:
        yield running


def _chromium(tmp_path, url, *mode):
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *mode,
        url,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _result_cards(dom):
    """[(id, distance text)] of the cards inside <div id="results">."""
    match = re.search(
        r'<div id="results" class="grid">(.*?)</div>\s*</section>', dom, re.S
    )
    assert match, "no results section in the DOM"
    ids = re.findall(r'<div class="card" data-id="([^"]+)">', match[1])
    distances = re.findall(r'<div class="distance">([^<]*)</div>', match[1])
    return list(zip(ids, distances))


def test_page_searches_with_a_database_image_and_shows_results(
    server, tmp_path
):
    query_id = 4
    url = f"http://127.0.0.1:{server.rest_port}/?query={query_id}"
    dom = _chromium(tmp_path, url, "--dump-dom")
    assert 'data-state="results"' in dom, dom[-3000:]
    gallery = re.search(
        r'<div id="gallery" class="grid">(.*?)</section>', dom, re.S
    )[1]
    assert len(re.findall(r'class="card pickable"', gallery)) == 24
    assert "30 database items" in dom
    cards = _result_cards(dom)
    assert len(cards) == 12  # the page's default k
    # The page shows what the API answers for the same image...
    _, _, png = http_bytes(server.rest_port, f"/v1/images/{query_id}")
    status, answer = http_json(
        server.rest_port, "POST", "/v1/search", {"image": b64(png), "k": 12}
    )
    assert status == 200
    assert cards == [
        (str(hit["id"]), f"hamming {hit['distance']}")
        for hit in answer["results"]
    ]
    # ...and the query image itself is at Hamming distance 0.
    zero = [card_id for card_id, distance in cards if distance == "hamming 0"]
    assert str(query_id) in zero
    assert re.search(
        r'<div class="caption" title="colour 4">colour 4</div>', dom
    )


def test_page_reports_errors(server, tmp_path):
    url = f"http://127.0.0.1:{server.rest_port}/?query=999"
    dom = _chromium(tmp_path, url, "--dump-dom")
    assert re.search(
        r'<p id="status" class="error">No database image with id 999</p>', dom
    )


def test_screenshot_is_a_real_png(server, tmp_path):
    shot = tmp_path / "page.png"
    url = f"http://127.0.0.1:{server.rest_port}/?query=7"
    _chromium(tmp_path, url, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    assert len(data) > 10_000  # a rendered page, not a blank canvas

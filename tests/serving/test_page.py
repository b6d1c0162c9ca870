"""The web page in headless Chromium: database, query, upload, results
coloured by class similarity, query time and mode, screenshot.

The `?query=<id>` and screenshot tests run Chromium's command line
(`--dump-dom`, `--screenshot`); the upload and colour tests drive it through
the DevTools protocol (`tests.support.chromium`).
"""

import json
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
from tests.support.chromium import CHROMIUM
from tests.support.chromium import FLAGS
from tests.support.chromium import Chromium
from tests.support.http import b64
from tests.support.http import http_bytes
from tests.support.http import http_json

CODE_BITS = 16
NUM_IMAGES = 30
NUM_CLASSES = 10
WINDOW = (1000, 1400)
# Three super-classes: {0, 1, 2}, {3, 4, 5, 6}, {7, 8, 9}; distance 0.3
# within one, 0.6 / 0.8 / 1.0 between them: similarities 1, 0.7, 0.4, 0.2, 0.
GROUPS = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
GROUP_DISTANCES = [[0.3, 0.6, 1.0], [0.6, 0.3, 0.8], [1.0, 0.8, 0.3]]
CLASS_NAMES = [f"class-{c}" for c in range(NUM_CLASSES)]
# The page's colour scale ends (serving/static/app.js SCALE).
UNRELATED_COLOUR = "rgb(68, 1, 84)"
SAME_CLASS_COLOUR = "rgb(253, 231, 37)"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent: apt-get install -y chromium",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Images, index, encoder (with logits) and class distances on disk."""
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
        root / "exports" / "enc" / "1", CODE_BITS, 0, NUM_CLASSES
    )
    distances = np.array(
        [[0.0 if a == b else GROUP_DISTANCES[GROUPS[a]][GROUPS[b]]
          for b in range(NUM_CLASSES)] for a in range(NUM_CLASSES)]
    )
    np.save(root / "class_distances.npy", distances)
    (root / "class_distances.json").write_text(
        json.dumps({"class_names": CLASS_NAMES})
    )
    return root


def _config(root, **overrides):
    return ServerConfig(
        export_root=str(root / "exports"),
        binary_index=str(root / "binary_index"),
        image_root=str(root / "images"),
        rest_port=0,
        grpc_port=None,
        poll_interval_s=3600,
        **overrides,
    )


@pytest.fixture(scope="module")
def server(root):
    config = _config(
        root, class_distances=str(root / "class_distances.npy")
    )
    with Server(config) as running:
        yield running


def _chromium(tmp_path, url, *mode):
    command = [
        CHROMIUM,
        *FLAGS,
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
    """[(id, distance text, similarity text)] of the cards inside
    <div id="results">."""
    match = re.search(
        r'<div id="results" class="grid">(.*?)</div>\s*</section>', dom, re.S
    )
    assert match, "no results section in the DOM"
    ids = re.findall(
        r'<div class="card result" data-id="([^"]+)"', match[1]
    )
    distances = re.findall(r'<div class="distance">([^<]*)</div>', match[1])
    similarities = re.findall(
        r'<div class="similarity">([^<]*)</div>', match[1]
    )
    return list(zip(ids, distances, similarities))


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
    # The page shows what the API answers for the same image, with the
    # database item's label as the query's class...
    _, _, png = http_bytes(server.rest_port, f"/v1/images/{query_id}")
    status, answer = http_json(
        server.rest_port,
        "POST",
        "/v1/search",
        {"image": b64(png), "k": 12, "label": query_id % 10},
    )
    assert status == 200
    assert answer["query_label"] == query_id % 10
    assert cards == [
        (
            str(hit["id"]),
            f"hamming {hit['distance']}",
            f"similarity {hit['similarity']:.2f}",
        )
        for hit in answer["results"]
    ]
    assert "query class class-4 (4)" in dom
    # ...and the query image itself is at Hamming distance 0.
    zero = [c[0] for c in cards if c[1] == "hamming 0"]
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


# === Driven through the DevTools protocol ===


@pytest.fixture(scope="module")
def browser():
    with Chromium(window=WINDOW) as running:
        yield running


# [{id, label, similarity, border, background}] of the result cards.
_CARDS_JS = """[...document.querySelectorAll('#results .card')].map((c) => ({
  id: c.dataset.id,
  label: c.querySelector('.label').innerText,
  similarity: c.dataset.similarity === undefined ? null
    : Number(c.dataset.similarity),
  border: getComputedStyle(c).borderTopColor,
  background: getComputedStyle(c).backgroundColor,
}))"""


def _text(page, element_id):
    return page.evaluate(f"document.getElementById('{element_id}').innerText")


def _upload(server, browser, tmp_path, pixels):
    """Opens the page, picks a PNG of `pixels` in the upload input, waits
    for the results; returns (page, png bytes)."""
    png = saved_models.png_bytes(pixels)
    path = tmp_path / "query.png"
    path.write_bytes(png)
    page = browser.new_page()
    page.navigate(f"http://127.0.0.1:{server.rest_port}/")
    page.wait_for("document.querySelectorAll('#gallery .card').length > 0")
    page.set_file_input("#upload", path)
    state = page.wait_for(
        "['results', 'error'].includes(document.body.dataset.state) && "
        "document.body.dataset.state"
    )
    assert state == "results", _text(page, "status")
    return page, png


def test_uploading_a_file_shows_the_results_time_and_mode(
    server, browser, tmp_path
):
    pixels = np.broadcast_to(np.array([200, 40, 90], np.uint8), (5, 7, 3))
    page, png = _upload(server, browser, tmp_path, pixels)
    status, answer = http_json(
        server.rest_port, "POST", "/v1/search", {"image": b64(png), "k": 12}
    )
    assert status == 200
    cards = page.evaluate(_CARDS_JS)
    # The uploaded bytes reach the server: the same neighbours, in order.
    assert [c["id"] for c in cards] == [
        str(hit["id"]) for hit in answer["results"]
    ]
    assert [c["similarity"] for c in cards] == pytest.approx(
        [hit["similarity"] for hit in answer["results"]]
    )
    # Labels read with the class names of the matrix's .json.
    assert [c["label"] for c in cards] == [
        f"class-{hit['metadata']['label']} ({hit['metadata']['label']})"
        for hit in answer["results"]
    ]
    logits = saved_models.reference_logits(pixels[None], NUM_CLASSES)[0]
    assert answer["query_label"] == int(np.argmax(logits))
    assert _text(page, "status") == "12 results"
    assert _text(page, "query-mode") == "binary mode (hamming)"
    assert _text(page, "query-exact") == "exact"
    assert re.fullmatch(r"\d+\.\d ms", _text(page, "query-time"))
    assert _text(page, "query-model") == "enc v1"
    label = answer["query_label"]
    assert _text(page, "query-class") == (
        f"· query class class-{label} ({label})"
    )
    assert page.evaluate(
        "getComputedStyle(document.getElementById('legend')).display"
    ) != "none"
    # The uploaded image is shown as the query.
    assert page.evaluate(
        "document.querySelector('#query img').src.startsWith('blob:')"
    )


def test_results_are_coloured_by_class_similarity(server, browser, tmp_path):
    pixels = np.broadcast_to(np.array([30, 160, 220], np.uint8), (6, 6, 3))
    page, _ = _upload(server, browser, tmp_path, pixels)
    cards = page.evaluate(_CARDS_JS)
    colour_of = {}
    for c in cards:
        assert c["similarity"] is not None
        # One colour per similarity, border and background alike.
        colour_of.setdefault(c["similarity"], set()).add(
            (c["border"], c["background"])
        )
    assert all(len(colours) == 1 for colours in colour_of.values())
    assert len(colour_of) >= 3, colour_of  # more than same / other class
    borders = [next(iter(v))[0] for v in colour_of.values()]
    backgrounds = [next(iter(v))[1] for v in colour_of.values()]
    assert len(set(borders)) == len(borders)
    assert len(set(backgrounds)) == len(backgrounds)
    # The scale's ends: the same class and an unrelated one.
    scale = page.evaluate("[similarityColour(1), similarityColour(0)]")
    assert scale == [SAME_CLASS_COLOUR, UNRELATED_COLOUR]
    for similarity, colours in colour_of.items():
        assert next(iter(colours))[0] == page.evaluate(
            f"similarityColour({similarity})"
        )


def test_page_says_whether_a_result_is_exact(server, browser):
    page = browser.new_page()
    page.navigate(f"http://127.0.0.1:{server.rest_port}/")
    texts = page.evaluate(
        "[{exact: true}, {exact: true, recall: null}, {exact: false},"
        " {exact: false, recall: null}, {exact: false, recall: 0.99349}]"
        ".map(exactnessText)"
    )
    assert texts == [
        "exact",
        "exact",
        "approximate",
        "approximate",
        "approximate (recall@k 0.993)",
    ]


def test_without_class_distances_the_page_shows_no_similarities(
    root, browser
):
    with Server(_config(root)) as plain:
        page = browser.new_page()
        page.navigate(f"http://127.0.0.1:{plain.rest_port}/?query=4")
        state = page.wait_for(
            "['results', 'error'].includes(document.body.dataset.state) && "
            "document.body.dataset.state"
        )
        # No "label" is sent (the server would refuse it), no colours.
        assert state == "results", _text(page, "status")
        cards = page.evaluate(_CARDS_JS)
        assert len(cards) == 12
        assert all(c["similarity"] is None for c in cards)
        assert cards[0]["label"] in {f"label {i}" for i in range(10)}
        assert _text(page, "query-class") == ""
        assert page.evaluate(
            "getComputedStyle(document.getElementById('legend')).display"
        ) == "none"


def test_choosing_the_query_class_recolours_the_results(
    server, browser, tmp_path
):
    pixels = np.broadcast_to(np.array([90, 90, 30], np.uint8), (6, 6, 3))
    page, png = _upload(server, browser, tmp_path, pixels)
    chosen = 8
    page.evaluate(
        "(() => { const s = document.getElementById('query-label');"
        f" s.value = '{chosen}';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    page.wait_for(
        "document.body.dataset.state === 'results' && document"
        f".getElementById('query-class').innerText.endsWith('({chosen})')"
    )
    status, answer = http_json(
        server.rest_port,
        "POST",
        "/v1/search",
        {"image": b64(png), "k": 12, "label": chosen},
    )
    assert status == 200
    assert answer["query_label"] == chosen
    cards = page.evaluate(_CARDS_JS)
    assert [c["id"] for c in cards] == [
        str(hit["id"]) for hit in answer["results"]
    ]
    assert [c["similarity"] for c in cards] == pytest.approx(
        [hit["similarity"] for hit in answer["results"]]
    )
    for c in cards:
        assert c["border"] == page.evaluate(
            f"similarityColour({c['similarity']})"
        )


def test_colour_scale_spans_the_matrix_similarities(server, browser):
    page = browser.new_page()
    page.navigate(f"http://127.0.0.1:{server.rest_port}/")
    page.wait_for("classes !== null")
    assert _text(page, "legend-low") == "0.00 least related"
    # A matrix whose similarities lie in [0.5, 1] (Fashion-MNIST's WUP:
    # [0.56, 1]) uses the whole scale: 0.5 is its dark end, 0.75 its middle.
    colours = page.evaluate(
        "(() => { classes = {...classes, min_similarity: 0.5};"
        " return [0.3, 0.5, 0.75, 1].map(similarityColour); })()"
    )
    assert colours == [
        UNRELATED_COLOUR,
        UNRELATED_COLOUR,
        "rgb(33, 145, 140)",  # the middle stop of app.js SCALE
        SAME_CLASS_COLOUR,
    ]

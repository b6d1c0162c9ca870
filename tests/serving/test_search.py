"""`/v1/search`, `/v1/database`, `/v1/images` and the --encoder-url mode."""

import concurrent.futures
import json
import logging
import socket

import numpy as np
import pytest

from serving.client import RestClient
from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf.retrieval import BinaryHammingIndex
from shrewd_tf.retrieval import ScannIndex
from shrewd_tf.retrieval.recall import RecallCheck
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_bytes
from tests.support.http import http_json

CODE_BITS = 16
NUM_IMAGES = 120
MAX_K = 50
# Entries whose image_uri must not be served.
BAD_URIS = {
    NUM_IMAGES: "../outside.png",
    NUM_IMAGES + 1: "gs://bucket/x.png",
    NUM_IMAGES + 2: None,  # set below to an absolute path outside the root
    NUM_IMAGES + 3: "notes.txt",
    NUM_IMAGES + 4: "imgs/missing.png",
    NUM_IMAGES + 5: "imgs/../../outside.png",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """Images on disk, their reference codes, both indexes, the exports."""
    root = tmp_path_factory.mktemp("search")
    image_root = root / "images"
    (image_root / "imgs").mkdir(parents=True)
    (image_root / "notes.txt").write_text("not an image")
    outside = root / "outside.png"
    rng = np.random.default_rng(3)
    outside.write_bytes(saved_models.png_bytes(saved_models.random_image(rng)))
    BAD_URIS[NUM_IMAGES + 2] = str(outside)
    pixels = [
        saved_models.random_image(rng, int(rng.integers(3, 8)))
        for _ in range(NUM_IMAGES)
    ]
    pngs = [saved_models.png_bytes(p) for p in pixels]
    for i, png in enumerate(pngs):
        (image_root / "imgs" / f"{i}.png").write_bytes(png)
    codes = np.concatenate(
        [
            saved_models.reference_encode(p[None], CODE_BITS, 0)[0]
            for p in pixels
        ]
        + [rng.random((len(BAD_URIS), CODE_BITS)).astype(np.float32)]
    )
    ids = np.arange(len(codes))
    uris = [f"imgs/{i}.png" for i in range(NUM_IMAGES)] + [
        BAD_URIS[i] for i in sorted(BAD_URIS)
    ]
    labels = [int(i % 10) for i in ids]
    captions = [f"item {i}" for i in ids]
    binary = BinaryHammingIndex(code_bits=CODE_BITS, method="flat").build(
        codes, ids
    )
    scann = ScannIndex(brute_force=True).build(codes, ids)
    for index in (binary, scann):
        index.set_metadata(ids, label=labels, caption=captions, image_uri=uris)
    binary.save(str(root / "binary_index"))
    scann.save(str(root / "float_index"))
    saved_models.write_encoder(
        root / "exports" / "enc" / "1", CODE_BITS, seed=0
    )
    return {
        "root": root,
        "image_root": image_root,
        "pixels": pixels,
        "pngs": pngs,
        "codes": codes,
        "labels": labels,
        "captions": captions,
        "uris": uris,
    }


def _config(database, **overrides):
    root = database["root"]
    settings = dict(
        export_root=str(root / "exports"),
        binary_index=str(root / "binary_index"),
        float_index=str(root / "float_index"),
        image_root=str(database["image_root"]),
        rest_port=0,
        grpc_port=None,
        poll_interval_s=3600,
        max_k=MAX_K,
    )
    settings.update(overrides)
    return ServerConfig(**settings)


@pytest.fixture(scope="module")
def server(database):
    with Server(_config(database)) as running:
        yield running


def _search(port, body):
    return http_json(port, "POST", "/v1/search", body)


def _hamming_reference(query_bits, codes):
    """Hamming distances [N] by a plain loop over bits."""
    db_bits = codes > 0.5
    return np.array([int(np.sum(query_bits != row)) for row in db_bits])


def _check_hamming_results(answer, query_bits, database, k):
    reference = _hamming_reference(query_bits, database["codes"])
    distances = [hit["distance"] for hit in answer["results"]]
    assert distances == sorted(reference.tolist())[:k]
    for hit in answer["results"]:
        i = hit["id"]
        assert hit["distance"] == reference[i]
        assert hit["metadata"] == {
            "label": database["labels"][i],
            "caption": database["captions"][i],
            "image_uri": database["uris"][i],
        }
        assert hit["image_url"] == f"/v1/images/{i}"


def test_code_query_in_binary_mode_matches_a_brute_force_reference(
    server, database
):
    query = np.random.default_rng(0).random(CODE_BITS)
    status, answer = _search(
        server.rest_port, {"code": query.tolist(), "k": 15}
    )
    assert status == 200, answer
    assert answer["mode"] == "binary"
    assert answer["distance"] == "hamming"
    assert answer["exact"] is True
    assert answer["recall"] is None  # exact: nothing to measure
    assert answer["model"] is None
    assert len(answer["results"]) == 15
    _check_hamming_results(answer, query > 0.5, database, 15)


def test_bits_query_as_packed_ints_or_b64(server, database):
    query_bits = np.random.default_rng(1).random(CODE_BITS) > 0.5
    # Packed MSB first, by hand: bit j is bit 7 - j % 8 of byte j // 8.
    packed = [
        sum(int(query_bits[8 * byte + j]) << (7 - j) for j in range(8))
        for byte in range(CODE_BITS // 8)
    ]
    for bits in (packed, b64(bytes(packed))):
        status, answer = _search(server.rest_port, {"bits": bits, "k": 10})
        assert status == 200, answer
        _check_hamming_results(answer, query_bits, database, 10)


def test_image_query_finds_the_image_itself(server, database):
    j = 17
    status, answer = _search(
        server.rest_port,
        {"model": "enc", "image": b64(database["pngs"][j]), "k": 10},
    )
    assert status == 200, answer
    assert (answer["model"], answer["model_version"]) == ("enc", "1")
    query_bits = database["codes"][j] > 0.5
    _check_hamming_results(answer, query_bits, database, 10)
    assert answer["results"][0]["distance"] == 0
    tied = [hit["id"] for hit in answer["results"] if hit["distance"] == 0]
    reference = _hamming_reference(query_bits, database["codes"])
    if np.sum(reference == 0) <= 10:
        assert j in tied
    # "model" may be left out: the only model served is the default.
    status, same = _search(
        server.rest_port, {"image": b64(database["pngs"][j]), "k": 10}
    )
    assert (status, same) == (200, answer)


def test_float_mode_matches_squared_l2_reference(server, database):
    rng = np.random.default_rng(2)
    query = rng.random(CODE_BITS).astype(np.float32)
    status, answer = _search(
        server.rest_port, {"code": query.tolist(), "k": 8, "mode": "float"}
    )
    assert status == 200, answer
    assert (answer["mode"], answer["distance"], answer["exact"]) == (
        "float",
        "squared_l2",
        True,
    )
    reference = [
        float(np.sum((query - row) ** 2)) for row in database["codes"]
    ]
    order = np.argsort(reference, kind="stable")[:8]
    assert [hit["id"] for hit in answer["results"]] == order.tolist()
    np.testing.assert_allclose(
        [hit["distance"] for hit in answer["results"]],
        np.array(reference)[order],
        rtol=1e-4,
        atol=1e-6,
    )
    j = 5
    status, answer = _search(
        server.rest_port,
        {"image": b64(database["pngs"][j]), "k": 3, "mode": "float"},
    )
    assert status == 200, answer
    assert answer["results"][0]["id"] == j
    assert answer["results"][0]["distance"] == pytest.approx(0.0, abs=1e-6)


def test_k_beyond_the_database_returns_what_exists(database, tmp_path):
    small = BinaryHammingIndex(code_bits=CODE_BITS).build(
        database["codes"][:3]
    )
    small.save(str(tmp_path / "small"))
    config = _config(
        database,
        binary_index=str(tmp_path / "small"),
        float_index=None,
        export_root=None,
        image_root=None,
    )
    with Server(config) as running:
        status, answer = _search(
            running.rest_port, {"code": [0.0] * CODE_BITS, "k": 10}
        )
        assert status == 200, answer
        assert sorted(hit["id"] for hit in answer["results"]) == [0, 1, 2]
        assert all(hit["image_url"] is None for hit in answer["results"])
        status, answer = _search(
            running.rest_port,
            {"image": b64(database["pngs"][0]), "model": "enc"},
        )
        assert status == 400
        assert "need an encoder" in answer["error"]


SEARCH_ERRORS = [
    (
        {"code": [0.5] * CODE_BITS, "k": 0},
        400,
        "'k' must be an integer in [1, 50]",
    ),
    ({"code": [0.5] * CODE_BITS, "k": MAX_K + 1}, 400, "[1, 50]"),
    ({"code": [0.5] * CODE_BITS, "k": "3"}, 400, "Received: k='3'"),
    ({"code": [0.5] * CODE_BITS, "mode": "fuzzy"}, 400, "'mode' must be"),
    ({"code": [0.5] * CODE_BITS, "bits": [0, 0]}, 400, "exactly one of"),
    ({"k": 3}, 400, "exactly one of"),
    ({"code": [0.5] * 3}, 400, "3-bit query but the index holds 16-bit"),
    ({"code": ["a"] * CODE_BITS}, 400, "list of numbers"),
    ({"code": [float("nan")] * CODE_BITS, "mode": "float"}, 400, "finite"),
    ({"code": [0.5] * CODE_BITS, "mode": "float", "k": 2.5}, 400, "'k'"),
    ({"bits": [0, 0], "mode": "float"}, 400, "use mode='binary'"),
    ({"bits": [0, 256]}, 400, "ints in [0, 255]"),
    ({"bits": [0]}, 400, "8-bit query"),
    ({"bits": {"b64": "***"}}, 400, "unable to base64-decode"),
    ({"image": {"b64": "***"}}, 400, "unable to base64-decode"),
    ({"image": "raw"}, 400, "'image' must be"),
    ({"image": b64(b"not an image")}, 400, "Unknown image file format"),
    ({"image": b64(b"x"), "model": "nope"}, 404, "Latest(nope)"),
    ([1, 2], 400, "must be a JSON object"),
]


@pytest.mark.parametrize("body, status, text", SEARCH_ERRORS)
def test_search_errors_are_4xx_and_the_server_keeps_answering(
    server, body, status, text
):
    got_status, answer = _search(server.rest_port, body)
    assert got_status == status, answer
    assert text in answer["error"]
    assert (
        _search(server.rest_port, {"code": [0.5] * CODE_BITS, "k": 1})[0]
        == 200
    )


def test_malformed_json_search_is_400(server):
    status, answer = http_json(
        server.rest_port, "POST", "/v1/search", raw=b"{'k': 1}"
    )
    assert status == 400
    assert "JSON Parse error" in answer["error"]


def test_database_pages(server, database):
    status, page = http_json(
        server.rest_port, "GET", "/v1/database?offset=10&limit=5"
    )
    assert status == 200
    assert page["count"] == len(database["codes"])
    assert [item["id"] for item in page["items"]] == [10, 11, 12, 13, 14]
    assert page["items"][0]["metadata"]["caption"] == "item 10"
    assert page["indexes"]["binary"]["code_bits"] == CODE_BITS
    assert page["indexes"]["float"]["index_type"] == "scann"
    for mode in ("binary", "float"):
        described = page["indexes"][mode]
        assert described["exact"] is True
        assert described["recall"] is None and described["recall_k"] is None
    for query in ("offset=-1", "limit=0", "limit=x"):
        assert (
            http_json(server.rest_port, "GET", f"/v1/database?{query}")[0]
            == 400
        )


def test_images_are_served_from_image_root_only(server, database):
    status, content_type, body = http_bytes(server.rest_port, "/v1/images/3")
    assert (status, content_type) == (200, "image/png")
    assert body == database["pngs"][3]
    refused = [str(i) for i in sorted(BAD_URIS)] + [
        "999999",
        "abc",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "-1",
    ]
    for id_text in refused:
        status, _, body = http_bytes(server.rest_port, f"/v1/images/{id_text}")
        assert status == 404, (id_text, body)
    assert (
        http_bytes(server.rest_port, "/v1/images/../../etc/passwd")[0] == 404
    )
    assert http_bytes(server.rest_port, "/static/../server.py")[0] == 404


def test_concurrent_searches_are_all_answered(server, database):
    rng = np.random.default_rng(4)
    queries = rng.random((12, CODE_BITS))

    def call(i):
        if i % 3 == 0:
            body = {"image": b64(database["pngs"][i]), "k": 5}
        else:
            body = {"code": queries[i % len(queries)].tolist(), "k": 5}
        return i, _search(server.rest_port, body)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, range(48)))
    for i, (status, answer) in answers:
        assert status == 200, answer
        query_bits = (
            database["codes"][i] > 0.5
            if i % 3 == 0
            else queries[i % len(queries)] > 0.5
        )
        _check_hamming_results(answer, query_bits, database, 5)


def test_encoder_url_forwards_predict_to_a_remote_server(server, database):
    remote = _config(
        database,
        export_root=None,
        encoder_url=f"http://127.0.0.1:{server.rest_port}",
    )
    with Server(remote) as front:
        for mode in ("binary", "float"):
            body = {
                "model": "enc",
                "image": b64(database["pngs"][9]),
                "k": 6,
                "mode": mode,
            }
            local = _search(server.rest_port, body)
            forwarded = _search(front.rest_port, body)
            assert forwarded[0] == 200, forwarded
            local[1]["model_version"] = None  # the remote does not say
            assert forwarded == local
        # The remote's errors come back with their status.
        status, answer = _search(
            front.rest_port, {"model": "nope", "image": b64(b"x")}
        )
        assert status == 404 and "Latest(nope)" in answer["error"]
        status, answer = _search(
            front.rest_port, {"model": "enc", "image": b64(b"x")}
        )
        assert status == 400 and "Unknown image file format" in answer["error"]
        # The front serves no models itself.
        assert http_json(front.rest_port, "GET", "/v1/models/enc")[0] == 404


def test_unreachable_encoder_is_503(database):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(
        database,
        export_root=None,
        encoder_url=f"http://127.0.0.1:{port}",
        encoder_timeout_s=5,
    )
    with Server(config) as front:
        status, answer = _search(
            front.rest_port,
            {"model": "enc", "image": b64(database["pngs"][0])},
        )
        assert status == 503
        assert "did not answer" in answer["error"]


def test_rest_client_search(server, database):
    client = RestClient(f"127.0.0.1:{server.rest_port}", "enc", timeout=30)
    answer = client.search(image=database["pngs"][2], k=4)
    _check_hamming_results(answer, database["codes"][2] > 0.5, database, 4)
    bits = np.packbits(database["codes"][2] > 0.5)
    assert client.search(bits=bits, k=4)["results"] == answer["results"]


def _ivf_index(tmp_path):
    """An ivf index over 2,000 clustered codes, saved with its recall."""
    rng = np.random.default_rng(8)
    centres = rng.integers(0, 2, (12, CODE_BITS))
    bits = centres[rng.integers(0, len(centres), 2000)]
    codes = (bits ^ (rng.random(bits.shape) < 0.03)).astype(np.float32)
    index = BinaryHammingIndex(
        code_bits=CODE_BITS, method="ivf", nlist=24,
        recall_check=RecallCheck(queries=200),
    ).build(codes)
    index.save(str(tmp_path / "ivf"))
    return index, codes


def test_ivf_answers_say_not_exact_with_the_measured_recall(
    database, tmp_path, caplog
):
    index, codes = _ivf_index(tmp_path)
    report = index.recall_report
    assert report.meets_target
    config = _config(database, binary_index=str(tmp_path / "ivf"),
                     float_index=None, export_root=None, image_root=None)
    with caplog.at_level(logging.WARNING), Server(config) as running:
        status, answer = _search(
            running.rest_port, {"code": codes[0].tolist(), "k": 5}
        )
        assert status == 200, answer
        assert answer["exact"] is False
        assert answer["recall"] == report.recall
        assert answer["recall_k"] == report.k == 10
        assert answer["results"][0]["distance"] == 0
        # A wider k reports the recall measured at the wide cut-off.
        assert report.wide_k >= 50 and report.recall_wide is not None
        status, wide = _search(
            running.rest_port, {"code": codes[0].tolist(), "k": 50}
        )
        assert status == 200, wide
        assert (wide["recall"], wide["recall_k"]) == (
            report.recall_wide, report.wide_k
        )
        status, page = http_json(running.rest_port, "GET", "/v1/database")
        described = page["indexes"]["binary"]
        assert described["exact"] is False
        assert described["recall"] == report.recall
        assert described["recall_k"] == report.k == 10
    assert "approximate" not in caplog.text  # recall on record: no warning


def test_ivf_without_recorded_recall_is_served_with_a_warning(
    database, tmp_path, caplog
):
    _, codes = _ivf_index(tmp_path)
    path = tmp_path / "ivf" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["recall"]  # as written before recall was measured
    path.write_text(json.dumps(manifest))
    config = _config(database, binary_index=str(tmp_path / "ivf"),
                     float_index=None, export_root=None, image_root=None)
    with caplog.at_level(logging.WARNING), Server(config) as running:
        status, answer = _search(
            running.rest_port, {"code": codes[0].tolist(), "k": 5}
        )
        assert status == 200, answer
        assert answer["exact"] is False and answer["recall"] is None
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert any(
        "approximate" in text and "recorded recall is missing" in text
        for text in warnings
    ), warnings


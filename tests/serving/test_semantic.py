"""Class similarity of search results (`serving.semantic`, --class-distances)."""

import logging
import json

import grpc
import numpy as np
import pytest

from serving.errors import ServingError
from serving.retrieval import SearchService
from serving.semantic import ClassSimilarity
from serving.semantic import NoClassSimilarity
from serving.semantic import load_class_distances
from serving.server import Server
from serving.server import ServerConfig
from shrewd_tf import cli
from shrewd_tf.retrieval import BinaryHammingIndex
from tests.support import saved_models
from tests.support.http import b64
from tests.support.http import http_json

CODE_BITS = 16
NUM_IMAGES = 40
NUM_CLASSES = 4
# Two super-classes {0, 1} and {2, 3}: near within, far across (as shirt /
# T-shirt against sandal / sneaker in Fashion-MNIST).
DISTANCES = np.array(
    [
        [0.0, 0.3, 0.9, 0.9],
        [0.3, 0.0, 0.9, 0.9],
        [0.9, 0.9, 0.0, 0.2],
        [0.9, 0.9, 0.2, 0.0],
    ]
)
# 1 - d by hand (every d <= 1, so max(0, .) never clips here).
SIMILARITY = {
    (0, 0): 1.0, (0, 1): 0.7, (0, 2): 0.1, (0, 3): 0.1,
    (1, 0): 0.7, (1, 1): 1.0, (1, 2): 0.1, (1, 3): 0.1,
    (2, 0): 0.1, (2, 1): 0.1, (2, 2): 1.0, (2, 3): 0.8,
    (3, 0): 0.1, (3, 1): 0.1, (3, 2): 0.8, (3, 3): 1.0,
}  # fmt: skip
NAMES = ["shirt", "t-shirt", "sandal", "sneaker"]


def _write_matrix(directory, matrix, names=None, stem="class_distances"):
    path = directory / f"{stem}.npy"
    np.save(path, matrix)
    if names is not None:
        (directory / f"{stem}.json").write_text(
            json.dumps({"kind": "wup", "class_names": names})
        )
    return str(path)


# === The matrix and the mapping ===


def test_similarities_match_hand_computed_values(tmp_path):
    semantic = ClassSimilarity.load(_write_matrix(tmp_path, DISTANCES, NAMES))
    assert semantic.num_classes == NUM_CLASSES
    assert semantic.describe() == {
        "num_classes": NUM_CLASSES,
        "class_names": NAMES,
        "min_similarity": pytest.approx(0.1),
    }
    for (query, label), expected in SIMILARITY.items():
        got = semantic.result_similarity(query, {"label": label})
        assert got == pytest.approx(expected, abs=1e-12)
    # Cosine distances beyond 1 (BERT) are unrelated: similarity 0, not < 0.
    bert = ClassSimilarity(np.array([[0.0, 1.4], [1.4, 0.0]]))
    assert bert.result_similarity(0, {"label": 1}) == 0.0
    assert bert.result_similarity(1, {"label": 1}) == 1.0


def test_results_without_a_label_in_range_get_none():
    semantic = ClassSimilarity(DISTANCES)
    for metadata in (None, {}, {"label": None}, {"label": 4}, {"label": -1},
                     {"label": "2"}, {"label": True}):
        assert semantic.result_similarity(0, metadata) is None
    assert semantic.result_similarity(2, {"label": np.int64(3)}) == 0.8


def test_annotate_adds_query_label_and_similarities():
    semantic = ClassSimilarity(DISTANCES)
    answer = {"results": [{"id": 7, "metadata": {"label": 1}},
                          {"id": 8, "metadata": {"label": 3}},
                          {"id": 9, "metadata": {}}]}
    semantic.annotate(answer, 0)
    assert answer["query_label"] == 0
    assert answer["results"][0]["similarity"] == pytest.approx(0.7)
    assert answer["results"][1]["similarity"] == pytest.approx(0.1)
    assert answer["results"][2]["similarity"] is None
    untouched = {"results": [{"id": 7, "metadata": {"label": 1}}]}
    assert semantic.annotate(untouched, None) == {
        "results": [{"id": 7, "metadata": {"label": 1}}]
    }


def test_predicted_label_is_the_argmax_of_the_logits():
    semantic = ClassSimilarity(DISTANCES)
    assert semantic.predicted_label({"logits": [0.1, -2, 3.5, 3.4]}, "m") == 2
    assert semantic.predicted_label({"code": [0.5]}, "m") is None
    assert semantic.predicted_label({"logits": [np.nan] * 4}, "m") is None


def test_a_model_of_another_label_set_gets_no_class_and_one_warning(caplog):
    semantic = ClassSimilarity(DISTANCES)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert semantic.predicted_label(
                {"logits": [0.0] * 3}, "enc"
            ) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "3 logits" in warnings[0] and "4 classes" in warnings[0]


@pytest.mark.parametrize("label", [4, -1, 1.5, "2", True, [1], {"x": 1}])
def test_bad_labels_are_refused_naming_the_field(label):
    with pytest.raises(ServingError) as error:
        ClassSimilarity(DISTANCES).request_label({"label": label})
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'label'" in error.value.message
    assert "[0, 4)" in error.value.message


def test_labels_without_a_matrix_are_refused():
    none = NoClassSimilarity()
    assert none.request_label({}) is None
    assert none.request_label({"label": None}) is None
    with pytest.raises(ServingError) as error:
        none.request_label({"label": 2})
    assert "--class-distances" in error.value.message
    assert none.describe() is None


def _bad(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    return str(path)


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("text.npy", lambda p: p.write_text("0 1\n1 0\n"), "not a .npy"),
        ("row.npy", lambda p: np.save(p, np.zeros(4)), "square"),
        ("wide.npy", lambda p: np.save(p, np.zeros((3, 4))), "square"),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 0))), "square"),
        ("nan.npy", lambda p: np.save(p, np.full((2, 2), np.nan)), "NaN"),
        ("inf.npy", lambda p: np.save(p, np.array([[0, np.inf], [1, 0]])),
         "infinite"),
        ("neg.npy", lambda p: np.save(p, -np.ones((2, 2))), "negative"),
        ("str.npy", lambda p: np.save(p, np.array([["a"]])), "numbers"),
        ("obj.npy", lambda p: np.save(p, np.array([[{}]], dtype=object),
                                      allow_pickle=True), "not a .npy"),
    ],
)
def test_bad_matrix_files_name_the_file(tmp_path, name, write, message):
    path = _bad(tmp_path, name, write)
    with pytest.raises(ValueError) as error:
        load_class_distances(path)
    assert path in str(error.value)
    assert message in str(error.value)


def test_missing_file_and_bad_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_class_distances(str(tmp_path / "absent.npy"))
    path = _write_matrix(tmp_path, DISTANCES, NAMES[:3])
    with pytest.raises(ValueError, match="class_distances.json") as error:
        load_class_distances(path)
    assert "4 strings" in str(error.value)
    (tmp_path / "class_distances.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_class_distances(path)
    (tmp_path / "class_distances.json").write_text('{"kind": "lcs"}')
    assert load_class_distances(path)[1] is None


# === /v1/search over REST ===


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic")
    rng = np.random.default_rng(11)
    pixels = [saved_models.random_image(rng) for _ in range(NUM_IMAGES)]
    codes = np.concatenate(
        [saved_models.reference_encode(p[None], CODE_BITS, 0)[0]
         for p in pixels]
    )
    labels = [i % NUM_CLASSES for i in range(NUM_IMAGES)]
    labels[-1] = None  # one item without a label
    index = BinaryHammingIndex(code_bits=CODE_BITS).build(codes)
    index.set_metadata(np.arange(NUM_IMAGES), label=labels)
    index.save(str(root / "binary_index"))
    saved_models.write_encoder(
        root / "exports" / "enc" / "1", CODE_BITS, 0, NUM_CLASSES
    )
    return {
        "root": root,
        "pixels": pixels,
        "labels": labels,
        "matrix": _write_matrix(root, DISTANCES, NAMES),
    }


def _config(database, **overrides):
    root = database["root"]
    return ServerConfig(
        **{
            "export_root": str(root / "exports"),
            "binary_index": str(root / "binary_index"),
            "rest_port": 0,
            "grpc_port": None,
            "poll_interval_s": 3600,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def server(database):
    config = _config(database, class_distances=database["matrix"])
    with Server(config) as running:
        yield running


def _search(server, body):
    return http_json(server.rest_port, "POST", "/v1/search", body)


def _check_similarities(answer, query_label, database):
    assert answer["query_label"] == query_label
    assert len(answer["results"]) == 10
    for hit in answer["results"]:
        label = database["labels"][hit["id"]]
        if label is None:
            assert hit["similarity"] is None
        else:
            expected = SIMILARITY[query_label, label]
            assert hit["similarity"] == pytest.approx(expected, abs=1e-12)


def test_image_queries_take_the_class_of_the_logits(server, database):
    seen = set()
    for i in range(8):
        pixels = database["pixels"][i]
        logits = saved_models.reference_logits(pixels[None], NUM_CLASSES)[0]
        status, answer = _search(
            server, {"image": b64(saved_models.png_bytes(pixels))}
        )
        assert status == 200, answer
        _check_similarities(answer, int(np.argmax(logits)), database)
        seen.update(hit["similarity"] for hit in answer["results"])
    # The hierarchy's levels show, not only same class / other class.
    assert {1.0, 0.1} <= {round(s, 6) for s in seen if s is not None}
    assert {0.7, 0.8} & {round(s, 6) for s in seen if s is not None}


def test_a_request_label_names_the_query_class(server, database):
    png = saved_models.png_bytes(database["pixels"][0])
    for label in range(NUM_CLASSES):
        status, answer = _search(server, {"image": b64(png), "label": label})
        assert status == 200, answer
        _check_similarities(answer, label, database)
    code = saved_models.reference_encode(
        database["pixels"][5][None], CODE_BITS, 0
    )[0][0]
    status, answer = _search(server, {"code": code.tolist(), "label": 3})
    assert status == 200, answer
    _check_similarities(answer, 3, database)
    # Code queries without a label: no class, no similarities.
    status, answer = _search(server, {"code": code.tolist()})
    assert status == 200
    assert "query_label" not in answer
    assert all("similarity" not in hit for hit in answer["results"])


@pytest.mark.parametrize("label", [4, -1, 2.0, "1", True])
def test_bad_request_labels_get_400_naming_the_field(server, label):
    status, answer = _search(server, {"code": [0.5] * CODE_BITS,
                                      "label": label})
    assert status == 400
    assert "'label'" in answer["error"]


def test_database_page_gives_the_classes(server):
    status, page = http_json(server.rest_port, "GET", "/v1/database?limit=2")
    assert status == 200
    assert page["classes"] == {"num_classes": NUM_CLASSES,
                               "class_names": NAMES,
                               "min_similarity": pytest.approx(0.1)}


def test_without_a_matrix_answers_have_no_similarities(database):
    with Server(_config(database)) as plain:
        png = saved_models.png_bytes(database["pixels"][0])
        status, answer = _search(plain, {"image": b64(png)})
        assert status == 200
        assert "query_label" not in answer
        assert all("similarity" not in hit for hit in answer["results"])
        status, answer = _search(plain, {"image": b64(png), "label": 1})
        assert status == 400
        assert "'label'" in answer["error"]
        assert "--class-distances" in answer["error"]
        _, page = http_json(plain.rest_port, "GET", "/v1/database")
        assert page["classes"] is None


def test_a_matrix_of_other_classes_than_the_logits_still_answers(
    database, tmp_path, caplog
):
    index = BinaryHammingIndex(code_bits=8).build(np.zeros((3, 8)))

    class Encoder:
        def encode(self, model, image_bytes):
            return {"code": np.zeros(8), "logits": np.zeros(6)}, 1

    matrix = _write_matrix(tmp_path, DISTANCES)
    service = SearchService(
        {"binary": index},
        encoder=Encoder(),
        default_model="enc",
        class_similarity=ClassSimilarity.load(matrix),
    )
    with caplog.at_level(logging.WARNING):
        answer = service.search({"image": b64(b"png")})
    assert len(answer["results"]) == 3
    assert "query_label" not in answer
    assert all("similarity" not in r for r in answer["results"])
    assert "6 logits" in caplog.text and matrix in caplog.text


def test_a_bad_matrix_stops_the_server_at_start(database, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="square") as error:
        Server(_config(database, class_distances=str(bad))).start()
    assert str(bad) in str(error.value)
    with pytest.raises(ValueError, match="class_distances"):
        ServerConfig(export_root="x", class_distances=str(bad))


def test_shrewd_serve_reports_a_bad_matrix_in_one_line(
    database, tmp_path, capsys
):
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((2, 2), np.nan))
    root = database["root"]
    code = cli.main([
        "serve", "--binary-index", str(root / "binary_index"),
        "--class-distances", str(bad), "--rest-port", "0",
        "--grpc-port", "-1",
    ])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("shrewd serve: error: --class-distances")
    assert str(bad) in err[0]

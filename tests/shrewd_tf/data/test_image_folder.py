"""Tests for shrewd_tf.data.image_folder: captions files and image checks."""

import json

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import records as data
from shrewd_tf.data import image_folder
from tests.support.image_sources import decode
from tests.support.image_sources import pixels
from tests.support.image_sources import reference_halving


# === Captions files ===


def test_csv_rows_paths_and_defaults(tmp_path):
    (tmp_path / "c.csv").write_text(
        "image,caption,label,extra\n"
        "a.png, a red dress ,dress,x\n"
        "\n"
        "/abs/b.png,\"two\nlines\",coat,y\n"
        "sub/c.png,plain,,z\n",
        encoding="utf-8",
    )
    rows = list(image_folder.read_captions(tmp_path / "c.csv"))
    assert rows == [
        image_folder.CaptionRow("a.png", str(tmp_path / "a.png"),
                                "a red dress", "dress", 2),
        image_folder.CaptionRow("/abs/b.png", "/abs/b.png", "two\nlines",
                                "coat", 4),
        image_folder.CaptionRow("sub/c.png", str(tmp_path / "sub/c.png"),
                                "plain", "", 6),
    ]


def test_tsv_with_id_column_and_no_label(tmp_path):
    (tmp_path / "c.tsv").write_text(
        "id\timage\tcaption\nx1\ta.jpg\tfirst, with comma\n\tb.jpg\tsecond\n",
        encoding="utf-8",
    )
    rows = list(image_folder.read_captions(str(tmp_path / "c.tsv")))
    assert [(r.id, r.caption, r.label_name) for r in rows] == [
        ("x1", "first, with comma", None),
        ("b.jpg", "second", None),  # empty id -> the image path
    ]


def test_jsonl_rows_and_row_problems_not_raised(tmp_path):
    lines = [
        json.dumps({"image": "a.png", "caption": "one", "label": "cat"}),
        "{not json",
        json.dumps({"caption": "no image"}),
        json.dumps({"image": "c.png", "caption": 7, "label": "dog"}),
        "",
        json.dumps({"image": "d.png", "caption": "four", "label": "dog",
                    "id": "d"}),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = list(image_folder.read_captions(str(path)))
    assert [r.line for r in rows] == [1, 2, 3, 4, 6]
    assert [bool(r.problem) for r in rows] == [False, True, True, True, False]
    assert "invalid JSON" in rows[1].problem
    assert "image" in rows[2].problem
    assert "caption" in rows[3].problem and "7" in rows[3].problem
    assert (rows[4].id, rows[4].label_name) == ("d", "dog")
    assert image_folder.label_names(str(path)) == ("cat", "dog")


def test_csv_wrong_field_count_is_a_row_problem(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image,caption\na.png,ok\nb.png,too,many\n")
    rows = list(image_folder.read_captions(str(path)))
    assert rows[0].problem == ""
    assert rows[1].line == 3 and "3 fields" in rows[1].problem


@pytest.mark.parametrize("name, text, missing", [
    ("c.csv", "image,label\na.png,x\n", "caption"),
    ("c.tsv", "caption\tlabel\nhi\tx\n", "image"),
    ("c.jsonl", '{"image": "a.png"}\n', "caption"),
])
def test_missing_column_names_file_and_columns(tmp_path, name, text, missing):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        list(image_folder.read_captions(str(path)))
    message = str(info.value)
    assert str(path) in message and repr(missing) in message
    assert "Received: columns=" in message
    with pytest.raises(ValueError):
        image_folder.read_columns(str(path))


def test_header_problems(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        image_folder.read_columns(str(tmp_path / "empty.csv"))
    (tmp_path / "dup.csv").write_text("image,caption,image\n")
    with pytest.raises(ValueError, match="repeats"):
        image_folder.read_columns(str(tmp_path / "dup.csv"))
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="JSON object"):
        image_folder.read_columns(str(tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError):
        image_folder.read_columns(str(tmp_path / "absent.csv"))


def test_format_by_extension_or_explicit(tmp_path):
    assert image_folder.captions_format("x/a.TSV") == "tsv"
    assert image_folder.captions_format("a.ndjson") == "jsonl"
    with pytest.raises(ValueError, match="extension"):
        image_folder.captions_format("a.txt")
    with pytest.raises(ValueError, match="format='xml'"):
        image_folder.captions_format("a.csv", "xml")
    path = tmp_path / "captions.txt"
    path.write_text("image\tcaption\na.png\thello\n")
    rows = list(image_folder.read_captions(str(path), format="tsv"))
    assert rows[0].caption == "hello"


def test_utf8_bom_header(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("image,caption\na.png,caf\u00e9\n".encode("utf-8-sig"))
    assert list(image_folder.read_captions(str(path)))[0].caption == "caf\u00e9"


# === Image checks ===


def test_read_image_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"abc")
    assert image_folder.read_image_file(str(tmp_path / "x.bin")) == b"abc"
    with pytest.raises(image_folder.ImageProblem) as info:
        image_folder.read_image_file(str(tmp_path / "absent.png"))
    assert info.value.stage == "read_image"
    assert "absent.png" in info.value.reason


def test_keep_bytes_returns_the_file_unchanged():
    encoded = tf.io.encode_jpeg(pixels(9, 8, 3)).numpy()
    kept, shape = image_folder.prepare_image(encoded, 3)
    assert kept == encoded and shape == (9, 8, 3)


def test_keep_bytes_rejects_other_channel_count():
    encoded = data.encode_png(pixels(8, 8, 1))
    with pytest.raises(image_folder.ImageProblem) as info:
        image_folder.prepare_image(encoded, 3)
    assert info.value.stage == "check_image"
    assert "1 channels, expected 3" in info.value.reason


def test_undecodable_and_too_small():
    with pytest.raises(image_folder.ImageProblem) as info:
        image_folder.prepare_image(b"not an image at all", 3, (8, 8))
    assert info.value.stage == "decode_image"
    with pytest.raises(image_folder.ImageProblem) as info:
        image_folder.prepare_image(b"", 3, (8, 8))
    assert info.value.stage == "decode_image"
    small = data.encode_png(pixels(4, 9, 3))
    with pytest.raises(image_folder.ImageProblem) as info:
        image_folder.prepare_image(small, 3, (8, 8), min_size=(5, 5))
    assert info.value.stage == "check_image"
    assert "4x9" in info.value.reason and "5x5" in info.value.reason


def test_right_size_and_channels_is_kept_as_is():
    encoded = data.encode_png(pixels(8, 8, 3))
    assert image_folder.prepare_image(encoded, 3, (8, 8))[0] == encoded


def test_channel_conversions_match_numpy():
    grey = pixels(8, 8, 1, seed=1)
    out, shape = image_folder.prepare_image(data.encode_png(grey), 3, (8, 8))
    assert shape == (8, 8, 3)
    np.testing.assert_array_equal(decode(out), np.repeat(grey, 3, axis=-1))

    rgba = pixels(8, 8, 4, seed=2)
    out, _ = image_folder.prepare_image(data.encode_png(rgba), 3, (8, 8))
    np.testing.assert_array_equal(decode(out), rgba[..., :3])

    rgb = pixels(8, 8, 3, seed=3).astype(np.float64)
    expected = np.round(rgb @ np.array([0.2989, 0.5870, 0.1140]))[..., None]
    out, _ = image_folder.prepare_image(
        data.encode_png(rgb.astype(np.uint8)), 1, (8, 8))
    assert np.abs(decode(out).astype(int) - expected).max() <= 1

    out, _ = image_folder.prepare_image(data.encode_png(grey), 4, (8, 8))
    np.testing.assert_array_equal(decode(out)[..., :3], np.repeat(grey, 3, -1))
    assert np.all(decode(out)[..., 3] == 255)


def test_downscale_matches_triangle_kernel_reference():
    image = pixels(16, 12, 3, seed=4)
    out, shape = image_folder.prepare_image(data.encode_png(image), 3, (8, 6))
    assert shape == (8, 6, 3)
    got = decode(out).astype(np.int64)
    assert np.abs(got - reference_halving(image)).max() <= 1


def test_upscale_of_constant_image_is_constant():
    image = np.full((8, 8, 3), 77, np.uint8)
    out, _ = image_folder.prepare_image(data.encode_png(image), 3, (20, 13))
    decoded = decode(out)
    assert decoded.shape == (20, 13, 3) and np.all(decoded == 77)

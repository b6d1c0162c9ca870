"""Tests for shrewd_tf.data.records: the TFRecord feature spec and DatasetInfo."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import records as data


def pixels(height, width, channels, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def make_record(index, embedding=None, shape=(8, 8, 3), label=None):
    return data.ImageRecord(
        id=f"img/{index}",
        image=data.encode_png(pixels(*shape, seed=index)),
        label=index % 3 if label is None else label,
        label_name=f"class {index % 3}",
        caption=f"caption \u00e9 {index}",
        caption_embedding=embedding,
    )


def write_shards(directory, split, records, num_shards):
    """Writes records round-robin into shards named like the Beam job's."""
    paths = [
        os.path.join(directory,
                     f"{split}-{s:05d}-of-{num_shards:05d}{data.SHARD_SUFFIX}")
        for s in range(num_shards)
    ]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i, record in enumerate(records):
        writers[i % num_shards].write(data.serialize(record))
    for writer in writers:
        writer.close()
    return paths


# === Records ===


def test_serialize_from_example_round_trip():
    embedding = np.array([0.6, -0.8, 0.0], np.float32)
    record = make_record(4, embedding=embedding)
    back = data.from_example(data.serialize(record))
    assert (back.id, back.image, back.label, back.label_name, back.caption) == (
        record.id, record.image, record.label, record.label_name,
        record.caption)
    np.testing.assert_array_equal(back.caption_embedding, embedding)
    unembedded = data.from_example(data.serialize(make_record(1)))
    assert unembedded.caption_embedding is None


def test_example_features_are_the_documented_spec():
    example = data.to_example(make_record(2))
    assert sorted(example.features.feature) == sorted(data.FEATURES)
    assert list(example.features.feature["label"].int64_list.value) == [2]


def test_unlabelled_record_round_trips_no_label():
    record = data.ImageRecord(id="x", image=b"\x89PNG", caption="hi")
    back = data.from_example(data.serialize(record))
    assert (back.label, back.label_name) == (data.NO_LABEL, "")


@pytest.mark.parametrize("record, match", [
    (data.ImageRecord(id="", image=b"x"), "empty id"),
    (data.ImageRecord(id="a", image=b""), "'image' is empty"),
    (data.ImageRecord(id="a", image=b"x", label=-2), "label=-2"),
    (data.ImageRecord(id="a", image=b"x",
                      caption_embedding=np.array([0.1, np.nan])), "nan"),
    (data.ImageRecord(id="a", image=b"x",
                      caption_embedding=np.zeros((2, 2))), r"shape=\(2, 2\)"),
])
def test_invalid_records_are_refused(record, match):
    with pytest.raises(data.RecordError, match=match):
        data.serialize(record)


def test_from_example_missing_feature():
    example = tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"]))
    }))
    with pytest.raises(data.RecordError, match="image"):
        data.from_example(example.SerializeToString())
    example.features.feature["image"].bytes_list.value.append(b"png")
    example.features.feature["label"].int64_list.SetInParent()
    with pytest.raises(data.RecordError, match="label"):
        data.from_example(example.SerializeToString())


def test_encode_png_round_trip_and_dtype_check():
    image = pixels(5, 7, 1)
    decoded = tf.io.decode_png(data.encode_png(image[..., 0])).numpy()
    np.testing.assert_array_equal(decoded, image)
    with pytest.raises(ValueError, match="float32"):
        data.encode_png(image.astype(np.float32))


# === Parsing ===


def test_parse_example_decodes_and_resizes():
    record = make_record(3, embedding=np.ones(4, np.float32) / 2)
    parsed = data.parse_example(
        tf.constant(data.serialize(record)), (8, 8, 3), embedding_dim=4)
    np.testing.assert_array_equal(parsed["image"].numpy(),
                                  pixels(8, 8, 3, seed=3))
    assert parsed["id"].numpy() == b"img/3"
    np.testing.assert_allclose(parsed["caption_embedding"].numpy(), 0.5)

    flat = data.ImageRecord(id="c", image=data.encode_png(
        np.full((4, 6, 3), 200, np.uint8)))
    parsed = data.parse_example(tf.constant(data.serialize(flat)), (8, 8, 1))
    assert parsed["image"].shape == (8, 8, 1)
    # A constant RGB colour stays constant; grey = the colour itself.
    assert np.all(parsed["image"].numpy() == 200)


def test_make_dataset_reads_every_shard(tmp_path):
    records = [make_record(i) for i in range(7)]
    write_shards(str(tmp_path), "train", records, num_shards=3)
    dataset = data.make_dataset(
        data.DatasetInfo.file_pattern_for(str(tmp_path), "train"), (8, 8, 3))
    ids = sorted(x["id"].decode() for x in dataset.as_numpy_iterator())
    assert ids == sorted(r.id for r in records)
    with pytest.raises(FileNotFoundError, match="make_tfrecords"):
        data.make_dataset(str(tmp_path / "nothing-*"), (8, 8, 3))


def test_file_pattern_does_not_match_a_longer_split_name(tmp_path):
    write_shards(str(tmp_path), "train", [make_record(0)], 1)
    write_shards(str(tmp_path), "train_small", [make_record(1)], 1)
    write_shards(str(tmp_path), "train-extra", [make_record(2)], 1)
    pattern = data.DatasetInfo.file_pattern_for(str(tmp_path), "train")
    ids = [x["id"].decode() for x in
           data.make_dataset(pattern, (8, 8, 3)).as_numpy_iterator()]
    assert ids == ["img/0"]


def test_load_split_arrays(tmp_path):
    embeddings = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    records = [make_record(i, embedding=embeddings[i]) for i in range(5)]
    paths = write_shards(str(tmp_path), "test", records, num_shards=2)
    info = data.DatasetInfo(image_shape=(8, 8, 3), class_names=("a", "b", "c"),
                            splits={"test": 5}, embedding_dim=3)
    info.save(str(tmp_path))
    arrays = data.load_split_arrays(str(tmp_path), "test")
    # Shard order: shard 0 holds records 0, 2, 4; shard 1 holds 1, 3.
    order = [0, 2, 4, 1, 3]
    assert len(paths) == 2
    assert list(arrays["ids"]) == [f"img/{i}" for i in order]
    np.testing.assert_array_equal(
        arrays["images"], np.stack([pixels(8, 8, 3, seed=i) for i in order]))
    np.testing.assert_array_equal(arrays["labels"], [i % 3 for i in order])
    assert arrays["labels"].dtype == np.int64
    np.testing.assert_array_equal(arrays["embeddings"], embeddings[order])
    assert arrays["captions"][0] == "caption \u00e9 0"


def test_load_split_arrays_without_embeddings(tmp_path):
    write_shards(str(tmp_path), "train", [make_record(0)], 1)
    data.DatasetInfo(image_shape=(8, 8, 3), splits={"train": 1}).save(
        str(tmp_path))
    assert data.load_split_arrays(str(tmp_path), "train")["embeddings"] is None
    with pytest.raises(KeyError, match="'validation'"):
        data.load_split_arrays(str(tmp_path), "validation")


# === DatasetInfo ===


def test_dataset_info_round_trip(tmp_path):
    info = data.DatasetInfo(image_shape=(28, 28, 1), class_names=("a", "b"),
                            splits={"train": 3, "test": 1}, embedding_dim=384,
                            text_encoder="minilm", source="captions")
    info.save(str(tmp_path))
    assert data.DatasetInfo.load(str(tmp_path)) == info
    payload = json.loads((tmp_path / data.INFO_FILE).read_text())
    assert payload["format_version"] == data.FORMAT_VERSION
    assert payload["image_shape"] == [28, 28, 1]


def test_dataset_info_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_tfrecords"):
        data.DatasetInfo.load(str(tmp_path))
    (tmp_path / data.INFO_FILE).write_text(
        json.dumps({"image_shape": [8, 8, 3], "format_version": 99}))
    with pytest.raises(ValueError, match="format_version=99"):
        data.DatasetInfo.load(str(tmp_path))


def test_dataset_info_ignores_unknown_keys(tmp_path):
    (tmp_path / data.INFO_FILE).write_text(json.dumps({
        "image_shape": [8, 8, 3], "format_version": data.FORMAT_VERSION,
        "written_by": "a newer writer"}))
    assert data.DatasetInfo.load(str(tmp_path)).image_shape == (8, 8, 3)


@pytest.mark.parametrize("count, per_shard, expected", [
    (0, 10, 1), (1, 10, 1), (10, 10, 1), (11, 10, 2), (60_000, 10_000, 6),
])
def test_shard_count(count, per_shard, expected):
    assert data.shard_count(count, per_shard) == expected

"""End-to-end tests of the make_tfrecords job on small generated sources."""

import json
import os

import numpy as np
import pytest

from pipeline import make_tfrecords
from pipeline.dead_letters import read_dead_letters
from pipeline.make_tfrecords import MakeTFRecordsOptions
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets
from tests.support.image_sources import CLASS_NAMES
from tests.support.image_sources import reference_halving
from tests.support.image_sources import write_captions_folder
from tests.support.image_sources import write_fake_fashion_mnist


def shard_names(directory, split):
    return sorted(n for n in os.listdir(directory) if n.startswith(split + "-"))


def by_id(arrays):
    """load_split_arrays output -> {id: (image, label, caption)}."""
    return {
        i: (arrays["images"][k], int(arrays["labels"][k]),
            arrays["captions"][k])
        for k, i in enumerate(arrays["ids"])
    }


def assert_statistics_match_records(info, directory, split):
    """`info.statistics[split]` against numpy on the written records."""
    arrays = data.load_split_arrays(directory, split, info=info)
    pixels = arrays["images"].astype(np.float64).reshape(
        -1, info.image_shape[2])
    mean, std = info.channel_statistics(split)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-5)
    labels, counts = np.unique(arrays["labels"], return_counts=True)
    assert info.label_counts(split) == {
        int(k): int(n) for k, n in zip(labels, counts)}


def test_fashion_mnist_job(tmp_path):
    arrays = write_fake_fashion_mnist(str(tmp_path / "idx"))
    out = tmp_path / "out"
    assert make_tfrecords.main([
        "--source", "fashion_mnist", "--data-dir", str(tmp_path / "idx"),
        "--output-dir", str(out), "--records-per-shard", "4",
    ]) == 0
    info = data.DatasetInfo.load(str(out))
    assert info == data.DatasetInfo(
        image_shape=(28, 28, 1),
        class_names=datasets.FASHION_MNIST_CLASS_NAMES,
        splits={"train": 10, "test": 4}, source="fashion_mnist",
        statistics=info.statistics)
    assert sorted(info.statistics) == ["test", "train"]
    for split in info.statistics:
        assert_statistics_match_records(info, str(out), split)
    assert shard_names(out, "train") == [
        f"train-0000{s}-of-00003.tfrecord" for s in range(3)]
    assert shard_names(out, "test") == ["test-00000-of-00001.tfrecord"]
    for split, (images, labels) in arrays.items():
        records = by_id(data.load_split_arrays(str(out), split))
        assert sorted(records) == [
            f"{split}/{i:05d}" for i in range(len(labels))]
        for i, label in enumerate(labels):
            image, got_label, caption = records[f"{split}/{i:05d}"]
            np.testing.assert_array_equal(image[..., 0], images[i])
            assert (got_label, caption) == (label, "")
    assert read_dead_letters(
        [str(out / "dead_letters-00000-of-00001.jsonl")]) == []


def test_fashion_mnist_job_limit_keeps_the_first_records(tmp_path):
    arrays = write_fake_fashion_mnist(str(tmp_path / "idx"))
    out = tmp_path / "out"
    result = make_tfrecords.run(MakeTFRecordsOptions(
        "fashion_mnist", str(out), data_dir=str(tmp_path / "idx"), limit=3))
    assert result.splits == {"train": 3, "test": 3}
    train = data.load_split_arrays(str(out), "train")
    assert sorted(train["ids"]) == ["train/00000", "train/00001", "train/00002"]
    order = np.argsort(train["ids"])
    np.testing.assert_array_equal(
        train["labels"][order], arrays["train"][1][:3])


def test_limit_is_refused_for_other_sources(tmp_path):
    with pytest.raises(ValueError, match="--limit is for --source fashion_mnist"):
        make_tfrecords.run(MakeTFRecordsOptions(
            "tfds:cifar100", str(tmp_path / "out"), data_dir=str(tmp_path),
            limit=3))


def test_fashion_mnist_job_multi_processing_with_resize(tmp_path):
    """The real DirectRunner engine with 2 worker processes; 28 -> 14 RGB."""
    arrays = write_fake_fashion_mnist(str(tmp_path / "idx"),
                                      counts=(("test", 6),))
    result = make_tfrecords.run(MakeTFRecordsOptions(
        "fashion_mnist", str(tmp_path / "out"),
        data_dir=str(tmp_path / "idx"), splits="test", image_size=(14, 14),
        channels=3, records_per_shard=2,
        beam_args=("--direct_num_workers=2",
                   "--direct_running_mode=multi_processing"),
    ))
    assert result.splits == {"test": 6} and result.dead_letters == {}
    assert result.info.image_shape == (14, 14, 3)
    assert len(shard_names(result.output_dir, "test")) == 3
    records = by_id(data.load_split_arrays(result.output_dir, "test"))
    images, _ = arrays["test"]
    for i in range(6):
        expected = reference_halving(np.repeat(images[i][..., None], 3, -1))
        got = records[f"test/{i:05d}"][0].astype(np.int64)
        assert np.abs(got - expected).max() <= 1
    # Partial sums from two worker processes, merged by the combine.
    assert_statistics_match_records(result.info, result.output_dir, "test")


def hash_fraction(record_id):
    import hashlib

    return int(hashlib.sha256(record_id.encode()).hexdigest()[:16], 16) / 16**16


def test_captions_job_with_dead_letters(tmp_path):
    path, good, bad = write_captions_folder(str(tmp_path / "folder"))
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(CLASS_NAMES) + "\n")
    # A test fraction between the two smallest hashes: one good id in test.
    fractions = sorted(hash_fraction(i) for i in good)
    test_fraction = (fractions[0] + fractions[1]) / 2
    result = make_tfrecords.run(MakeTFRecordsOptions(
        f"captions:{path}", str(tmp_path / "out"), image_size=(8, 8),
        class_names_file=str(classes_file), test_fraction=test_fraction,
    ))
    expected_test = {i for i in good if hash_fraction(i) < test_fraction}
    assert len(expected_test) == 1
    assert result.splits == {"train": 2, "test": 1}
    info = data.DatasetInfo.load(result.output_dir)
    assert (info.source, info.class_names, info.image_shape) == (
        "captions", CLASS_NAMES, (8, 8, 3))
    for split in ("train", "test"):
        assert_statistics_match_records(info, result.output_dir, split)

    found = {}
    for split in ("train", "test"):
        records = by_id(data.load_split_arrays(result.output_dir, split))
        assert (set(records) == expected_test) == (split == "test")
        found.update(records)
    assert sorted(found) == sorted(good)
    for record_id, (label, caption, original) in good.items():
        image, got_label, got_caption = found[record_id]
        assert (got_label, got_caption) == (label, caption)
        # 8x8 RGB files are stored as they are: same pixels as the file.
        np.testing.assert_array_equal(image, original)

    letters = read_dead_letters(result.dead_letter_files)
    assert sorted(d.stage for d in letters) == sorted(bad.values())
    assert all(d.reason.startswith("line ") for d in letters)
    reasons = {d.id: d.reason for d in letters}
    assert "not found" in reasons["missing"]
    assert "label='zebra'" in reasons["zebra"]
    assert "'caption' is empty" in reasons["nocaption"]
    expected_counts = {}
    for stage in bad.values():
        expected_counts[stage] = expected_counts.get(stage, 0) + 1
    assert result.dead_letters == expected_counts


def test_tfds_job_mocked(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        result = make_tfrecords.run(MakeTFRecordsOptions(
            "tfds:cifar100", str(tmp_path / "out"), data_dir=str(tmp_path),
            splits="train"))
    assert result.splits == {"train": 4}
    assert result.info.image_shape == (32, 32, 3)
    assert len(result.info.class_names) == 100
    arrays = data.load_split_arrays(result.output_dir, "train")
    assert sorted(arrays["ids"]) == [f"train/{i:05d}" for i in range(4)]


@pytest.mark.parametrize("values, match", [
    ({"source": "mnist"}, "Received: --source='mnist'"),
    ({"source": "fashion_mnist", "splits": "train,train"}, "distinct"),
    ({"source": "fashion_mnist", "splits": "a-b"}, "split='a-b'"),
    ({"source": "fashion_mnist", "splits": "validation"},
     "split='validation'"),
    ({"source": "fashion_mnist", "records_per_shard": 0},
     "records-per-shard=0"),
])
def test_bad_arguments(tmp_path, values, match):
    values = {"output_dir": str(tmp_path / "out"), **values}
    with pytest.raises(ValueError, match=match):
        make_tfrecords.run(MakeTFRecordsOptions(**values))
    assert not (tmp_path / "out").exists()


def test_run_takes_options_and_main_takes_a_command_line(tmp_path):
    argv = ["--source", "fashion_mnist", "--output-dir", str(tmp_path)]
    with pytest.raises(TypeError, match="MakeTFRecordsOptions"):
        make_tfrecords.run(argv)
    assert make_tfrecords.parse_options(
        argv + ["--image-size", "14,14", "--runner=FnApiRunner"]
    ) == MakeTFRecordsOptions("fashion_mnist", str(tmp_path),
                              image_size=(14, 14),
                              beam_args=("--runner=FnApiRunner",))


def test_captions_argument_errors(tmp_path):
    path, _, _ = write_captions_folder(str(tmp_path / "folder"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="--image-size"):
        make_tfrecords.run(MakeTFRecordsOptions(f"captions:{path}", out))
    with pytest.raises(ValueError, match="one or two"):
        make_tfrecords.run(MakeTFRecordsOptions(
            f"captions:{path}", out, image_size=(8, 8), splits="a,b,c"))
    header_only = tmp_path / "bad.csv"
    header_only.write_text("image,label\n")
    with pytest.raises(ValueError, match="caption"):
        make_tfrecords.run(MakeTFRecordsOptions(
            f"captions:{header_only}", out, image_size=(8, 8)))
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "folder"]
    # The command line: a missing captions file is exit code 2.
    assert make_tfrecords.main(["--source", f"captions:{tmp_path / 'no.csv'}",
                                "--image-size", "8,8", "--output-dir",
                                out]) == 2


def test_summary_line_lists_splits_and_stages():
    info = data.DatasetInfo(image_shape=(8, 8, 3), source="captions")
    result = make_tfrecords.MakeTFRecordsResult(
        "/o", {"train": 5, "test": 2}, {"read_image": 1, "check_row": 2}, info)
    line = make_tfrecords._summary(result)
    assert "train=5 test=2" in line and "check_row=2 read_image=1" in line
    assert "\n" not in line
    payload = json.dumps(result.splits)  # plain dict, JSON-able
    assert json.loads(payload) == {"train": 5, "test": 2}

"""Streaming splits (`sources`): order, sharding, shuffling, metadata,
statistics, and any file system."""

import dataclasses
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import records as data_lib
from shrewd_tf.data import sources
from shrewd_tf.data import tfds_sources
from shrewd_tf.data import tfrecord_splits
from tests.support import sources as helpers


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 4-shard captioned directory: (path, info, written arrays)."""
    directory = str(tmp_path_factory.mktemp("streamed"))
    arrays = helpers.write_tfrecord_dir(directory, train=60, test=24,
                                        shards=4)
    return directory, data_lib.DatasetInfo.load(directory), arrays


def collect(dataset):
    images, labels, embeddings = [], [], []
    for example in dataset.as_numpy_iterator():
        images.append(example["image"])
        labels.append(example["label"])
        if "embedding" in example:
            embeddings.append(example["embedding"])
    return np.stack(images), np.asarray(labels), embeddings


def keys(images):
    return [image.tobytes() for image in images]


def test_unshuffled_stream_is_the_written_order(written):
    directory, info, arrays = written
    source = tfrecord_splits.RecordSource(directory, "train", info)
    images, labels, embeddings = collect(source.examples())
    np.testing.assert_array_equal(images, arrays["train"]["images"])
    np.testing.assert_array_equal(labels, arrays["train"]["labels"])
    np.testing.assert_allclose(np.stack(embeddings),
                               arrays["train"]["embeddings"])
    assert source.num_records() == 60


def test_metadata_and_images_at_follow_the_stream(written):
    directory, info, arrays = written
    source = tfrecord_splits.RecordSource(directory, "test", info, limit=20)
    metadata = source.metadata()
    test = arrays["test"]
    np.testing.assert_array_equal(metadata["labels"], test["labels"][:20])
    assert list(metadata["ids"]) == list(test["ids"][:20])
    assert list(metadata["captions"]) == list(test["captions"][:20])
    np.testing.assert_allclose(metadata["embeddings"],
                               test["embeddings"][:20])
    picked = source.images_at([7, 2, 19, 2])
    np.testing.assert_array_equal(picked, test["images"][[7, 2, 19, 2]])
    assert source.num_records() == 20


def test_shuffle_is_a_function_of_the_seed_only(written):
    directory, info, arrays = written
    source = tfrecord_splits.RecordSource(directory, "train", info)

    def first(seed, count=120):
        tf.random.set_seed(int(uuid.uuid4().int % 1000))  # must not matter
        stream = source.examples(shuffle=True, seed=seed, shuffle_buffer=16)
        return collect(stream.take(count))[0]

    one, again, other = first(3), first(3), first(4)
    np.testing.assert_array_equal(one, again)
    assert keys(one) != keys(other)
    # Endless: each epoch is a permutation of the split, a new one.
    epochs = keys(one[:60]), keys(one[60:])
    whole = sorted(keys(arrays["train"]["images"]))
    assert sorted(epochs[0]) == whole and sorted(epochs[1]) == whole
    assert epochs[0] != epochs[1]
    assert epochs[0] != keys(arrays["train"]["images"])


@pytest.mark.parametrize("shards", [4, 1])
def test_pipelines_read_disjoint_shards_of_the_split(tmp_path, shards):
    arrays = helpers.write_tfrecord_dir(str(tmp_path), train=40, test=8,
                                        shards=shards)
    info = data_lib.DatasetInfo.load(str(tmp_path))
    source = tfrecord_splits.RecordSource(str(tmp_path), "train", info)
    parts = []
    for index in range(2):
        context = tf.distribute.InputContext(2, index, 2)
        parts.append(keys(collect(source.examples(
            input_context=context, shard_batch=4))[0]))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(
        keys(arrays["train"]["images"]))
    if shards == 1:  # by records: pipeline i takes every other group of 4
        order = keys(arrays["train"]["images"])
        groups = [order[i:i + 4] for i in range(0, 40, 4)]
        assert parts[0] == sum(groups[0::2], [])
        assert parts[1] == sum(groups[1::2], [])


def test_record_sharded_replicas_see_the_single_process_batches(written):
    """Two pipelines' per-replica batches, step by step, are the halves of
    one pipeline's global batches (what one process with 2 replicas gets)."""
    directory, info, _ = written
    source = tfrecord_splits.RecordSource(directory, "train", info, limit=48)
    kwargs = dict(shuffle=True, seed=5, shard_batch=6, shuffle_buffer=20)
    single = keys(collect(source.examples(**kwargs).take(36))[0])
    halves = [
        keys(collect(source.examples(
            input_context=tf.distribute.InputContext(2, i, 2), **kwargs
        ).take(18))[0])
        for i in range(2)
    ]
    for step in range(3):
        together = single[12 * step:12 * step + 12]
        assert halves[0][6 * step:6 * step + 6] == together[:6]
        assert halves[1][6 * step:6 * step + 6] == together[6:]


def test_excluded_labels_never_reach_the_stream(written):
    directory, info, arrays = written
    source = tfrecord_splits.RecordSource(directory, "train", info)
    _, labels, _ = collect(source.examples(exclude_labels=(1, 3)))
    expected = arrays["train"]["labels"]
    np.testing.assert_array_equal(labels, expected[~np.isin(expected, [1, 3])])


def test_channel_statistics_stream_and_use_stored_ones(written, monkeypatch):
    directory, info, arrays = written
    pixels = arrays["train"]["images"].reshape(-1, 1).astype(np.float64)
    source = tfrecord_splits.RecordSource(directory, "train", info)
    mean, std = source.channel_statistics()
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-5)
    counts = source.label_counts()
    values, expected = np.unique(arrays["train"]["labels"], return_counts=True)
    assert counts == dict(zip(values.tolist(), expected.tolist()))

    stored = dataclasses.replace(info, statistics={"train": {
        "mean": [1.5], "std": [2.5], "label_counts": {"0": 7, "-1": 1}}})

    def no_pass(examples):
        raise AssertionError("stored statistics need no pass")

    monkeypatch.setattr(sources, "streaming_channel_statistics", no_pass)
    source = tfrecord_splits.RecordSource(directory, "train", stored)
    mean, std = source.channel_statistics()
    assert mean.tolist() == [1.5] and std.tolist() == [2.5]
    assert source.label_counts() == {0: 7, -1: 1}
    # A subset is not what the stored statistics describe.
    with pytest.raises(AssertionError, match="no pass"):
        tfrecord_splits.RecordSource(directory, "train", stored,
                             limit=10).channel_statistics()


def test_records_stream_from_a_non_local_file_system(written):
    directory, info, arrays = written
    remote = f"ram://streamed-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(remote)
    for name in os.listdir(directory):
        tf.io.gfile.copy(os.path.join(directory, name),
                         os.path.join(remote, name))
    remote_info = data_lib.DatasetInfo.load(remote)
    assert remote_info == info
    source = tfrecord_splits.RecordSource(remote, "test", remote_info)
    images, labels, _ = collect(source.examples())
    np.testing.assert_array_equal(images, arrays["test"]["images"])
    np.testing.assert_array_equal(labels, arrays["test"]["labels"])


def test_array_source_resizes_in_the_stream():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1) * 7
    source = sources.ArraySource(images, [0, 1], image_shape=(8, 8, 1))
    streamed, labels, _ = collect(source.examples())
    assert streamed.shape == (2, 8, 8, 1) and labels.tolist() == [0, 1]
    np.testing.assert_array_equal(source.images_at([1]), streamed[1:])
    mean, _ = source.channel_statistics()
    np.testing.assert_allclose(mean, streamed.reshape(-1, 1).mean(0),
                               rtol=1e-6)


def test_block_shuffle_permutes_each_block_by_the_seed():
    stream = tf.data.Dataset.range(10)
    seed = tf.constant([1, 2], tf.int64)
    once = list(sources.block_shuffle(stream, 4, seed).as_numpy_iterator())
    again = list(sources.block_shuffle(stream, 4, seed).as_numpy_iterator())
    assert once == again
    assert sorted(once[:4]) == [0, 1, 2, 3] and sorted(once[4:8]) == [4, 5, 6, 7]
    assert sorted(once[8:]) == [8, 9]
    assert once != list(range(10))


def test_tfds_source_streams_and_caches_its_statistics(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        source = tfds_sources.TfdsSource("cifar100", "train", str(tmp_path),
                                    (16, 16, 3))
        images, labels, _ = collect(source.examples())
        assert images.shape == (6, 16, 16, 3) and len(labels) == 6
        mean, std = source.channel_statistics()
        assert source.num_records() == 6  # a label pass (mocks lack info)
        cache = tmp_path / tfds_sources.TFDS_STATISTICS_DIR
        assert sorted(p.name for p in cache.iterdir()) == [
            "cifar100-train-16x16x3-channels.json",
            "cifar100-train-16x16x3-label_counts.json"]
        assert tfds_sources.TfdsSource(
            "cifar100", "train", str(tmp_path), (16, 16, 3)
        ).channel_statistics()[0].tolist() == mean.tolist()  # cached
        np.testing.assert_allclose(
            mean, images.reshape(-1, 3).astype(np.float64).mean(0), rtol=1e-5)
        halves = [
            collect(source.examples(
                input_context=tf.distribute.InputContext(2, i, 2),
                shard_batch=1))[1]
            for i in range(2)
        ]
        np.testing.assert_array_equal(halves[0], labels[0::2])
        np.testing.assert_array_equal(halves[1], labels[1::2])

"""Reading make_tfrecords directories (dataset="tfrecords")."""

import json

import numpy as np
import pytest

from shrewd_tf import config as config_lib
from shrewd_tf.data import records as data_lib
from shrewd_tf.data import pipelines as inputs
from shrewd_tf.semantics import distances as semantics
from tests.support import sources as helpers


def tfrecord_config(directory, **values):
    return config_lib.DataConfig(
        dataset="tfrecords", data_dir=str(directory), **values
    )


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """A labelled, captioned directory: (path, written arrays)."""
    directory = tmp_path_factory.mktemp("captioned")
    return directory, helpers.write_tfrecord_dir(directory)


@pytest.fixture
def recorded_wup(monkeypatch):
    """Replaces the WordNet computation; records the synsets it gets."""
    calls = []

    def fake_wup(synsets, wordnet=None):
        calls.append(list(synsets))
        return 1.0 - np.eye(len(synsets))

    monkeypatch.setattr(semantics, "wup_distance_matrix", fake_wup)
    return calls


def test_tfrecords_load_as_written(captioned):
    directory, written = captioned
    data = inputs.load_experiment_data(
        tfrecord_config(directory, semantics="captions")
    )
    train, test = written["train"], written["test"]
    streamed = helpers.train_arrays(data)
    np.testing.assert_array_equal(streamed["images"], train["images"])
    np.testing.assert_array_equal(streamed["labels"], train["labels"])
    np.testing.assert_array_equal(helpers.split_test_images(data), test["images"])
    np.testing.assert_array_equal(data.test_labels, test["labels"])
    np.testing.assert_allclose(streamed["embeddings"], train["embeddings"])
    np.testing.assert_allclose(data.test_embeddings, test["embeddings"])
    assert data.train_count == len(train["labels"])
    assert list(data.test_ids) == list(test["ids"])
    assert list(data.test_captions) == list(test["captions"])
    assert data.class_names == ["a", "b", "c", "d"]
    assert data.labelled and data.caption_targets
    assert data.class_distances is None
    assert data.embedding_dim == 16
    pixels = train["images"].reshape(-1, 1).astype(np.float64)
    np.testing.assert_allclose(data.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(0), rtol=1e-5)


def test_subsets_and_holdout_cut_every_array(captioned):
    directory, written = captioned
    data = inputs.load_experiment_data(
        tfrecord_config(
            directory, semantics="captions", train_subset=50, test_subset=20,
            holdout_classes=(1,),
        )
    )
    train = written["train"]
    keep = train["labels"][:50] != 1
    streamed = helpers.train_arrays(data)
    np.testing.assert_array_equal(streamed["labels"], train["labels"][:50][keep])
    np.testing.assert_array_equal(streamed["images"], train["images"][:50][keep])
    np.testing.assert_allclose(
        streamed["embeddings"], train["embeddings"][:50][keep]
    )
    assert data.train_count == int(keep.sum())
    # The test split keeps the held-out class.
    np.testing.assert_array_equal(data.test_labels, written["test"]["labels"][:20])
    assert len(data.test_embeddings) == len(data.test_ids) == 20


def _rows_of(images, data, train_images):
    """Indices of standardised (unaugmented) batch images in train_images."""
    pixels = np.round(images * data.std + data.mean).astype(np.int64)
    flat = train_images.reshape(len(train_images), -1).astype(np.int64)
    rows = []
    for image in pixels.reshape(len(pixels), -1):
        matches = np.flatnonzero(np.all(flat == image, axis=1))
        assert matches.size == 1
        rows.append(matches[0])
    return np.asarray(rows)


def test_caption_train_dataset_keeps_targets_aligned(captioned):
    directory, _ = captioned
    data = inputs.load_experiment_data(
        tfrecord_config(directory, semantics="captions")
    )
    batches = list(data.train_dataset(32, seed=3).take(2).as_numpy_iterator())
    streamed = helpers.train_arrays(data)
    assert len(batches) == 2
    for images, targets in batches:
        assert set(targets) == {"labels", "embeddings"}
        assert targets["embeddings"].shape == (32, 16)
        assert targets["embeddings"].dtype == np.float32
        rows = _rows_of(images, data, streamed["images"])
        np.testing.assert_array_equal(targets["labels"], streamed["labels"][rows])
        np.testing.assert_allclose(
            targets["embeddings"], streamed["embeddings"][rows]
        )
    # Shuffled: the first batch is not the first 32 records.
    assert not np.array_equal(
        _rows_of(batches[0][0], data, streamed["images"]), np.arange(32))


def test_without_captions_the_label_path_is_unchanged(tmp_path, recorded_wup):
    helpers.write_tfrecord_dir(
        tmp_path, embedding_dim=None,
        class_names=("dog.n.01", "cat.n.01", "car.n.01", "bus.n.01"),
    )
    data = inputs.load_experiment_data(tfrecord_config(tmp_path))
    assert data.embedding_dim is None and data.test_embeddings is None
    assert not data.caption_targets
    images, labels = next(iter(data.train_dataset(16)))
    assert labels.dtype == np.int64 and labels.shape == (16,)
    np.testing.assert_array_equal(data.class_distances, 1.0 - np.eye(4))
    with pytest.raises(ValueError, match="semantics='captions' needs caption"):
        inputs.load_experiment_data(
            tfrecord_config(tmp_path, semantics="captions")
        )


def test_unlabelled_records(tmp_path):
    helpers.write_tfrecord_dir(tmp_path, labelled=False, train=64, test=32)
    data = inputs.load_experiment_data(
        tfrecord_config(tmp_path, semantics="captions")
    )
    assert not data.labelled
    assert data.class_names == [] and data.num_classes == 0
    assert np.all(data.test_labels == data_lib.NO_LABEL)
    _, targets = next(iter(data.train_dataset(16)))
    assert set(targets) == {"embeddings"}
    for kind in ("wup", "bert", "lcs"):
        with pytest.raises(ValueError, match="unlabelled.*semantics='captions'"):
            inputs.load_experiment_data(tfrecord_config(tmp_path, semantics=kind))
    with pytest.raises(ValueError, match=r"holdout_classes=\(0,\)"):
        inputs.load_experiment_data(
            tfrecord_config(tmp_path, semantics="captions", holdout_classes=(0,))
        )


def test_partly_unlabelled_records_count_as_unlabelled(tmp_path):
    helpers.write_tfrecord_dir(tmp_path, train=32, test=16)
    # The same directory, its test split rewritten without labels.
    unlabelled = helpers.write_tfrecord_dir(
        tmp_path / "u", train=32, test=16, labelled=False
    )
    for path in (tmp_path / "u").glob("test-*"):
        path.rename(tmp_path / path.name)
    data = inputs.load_experiment_data(
        tfrecord_config(tmp_path, semantics="captions")
    )
    assert not data.labelled and data.class_names == []
    assert np.all(data.test_labels == -1)
    _, targets = next(iter(data.train_dataset(8)))
    assert set(targets) == {"embeddings"}
    assert len(data.test_labels) == len(unlabelled["test"]["labels"])


def test_labels_beyond_the_class_names_are_refused(tmp_path):
    helpers.write_tfrecord_dir(tmp_path, train=32, test=16)
    info_path = tmp_path / data_lib.INFO_FILE
    info = json.loads(info_path.read_text())
    info["class_names"] = ["a", "b"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 2\)"):
        inputs.load_experiment_data(tfrecord_config(tmp_path, semantics="captions"))


def test_image_size_resizes(captioned):
    directory, _ = captioned
    data = inputs.load_experiment_data(
        tfrecord_config(directory, semantics="captions", image_size=(4, 4),
                        train_subset=8, test_subset=8)
    )
    assert helpers.train_arrays(data)["images"].shape == (8, 4, 4, 1)
    assert helpers.split_test_images(data).shape == (8, 4, 4, 1)
    assert data.input_shape == (4, 4, 1)


def test_configuration_errors(tmp_path, captioned):
    directory, _ = captioned
    with pytest.raises(ValueError, match="needs data.data_dir"):
        inputs.load_experiment_data(
            config_lib.DataConfig(dataset="tfrecords", semantics="captions")
        )
    with pytest.raises(ValueError, match="tfrecord_pattern='x-\\*'"):
        inputs.load_experiment_data(
            tfrecord_config(directory, tfrecord_pattern="x-*")
        )
    with pytest.raises(FileNotFoundError, match="make_tfrecords"):
        inputs.load_experiment_data(tfrecord_config(tmp_path / "absent"))
    with pytest.raises(ValueError, match="semantics='bogus'"):
        inputs.load_experiment_data(tfrecord_config(directory, semantics="bogus"))


def test_wup_on_tfrecords_uses_the_source(tmp_path, recorded_wup):
    names = ("Trouser", "Dress", "Sandal", "Bag")
    helpers.write_tfrecord_dir(
        tmp_path, class_names=names, source="fashion_mnist", train=32, test=16
    )
    data = inputs.load_experiment_data(tfrecord_config(tmp_path))
    assert recorded_wup == [["trouser.n.01", "dress.n.01", "sandal.n.01", "bag.n.04"]]
    assert data.class_distances.shape == (4, 4)
    # Captions are loaded too (for REG and the caption metrics).
    assert data.embedding_dim == 16 and not data.caption_targets

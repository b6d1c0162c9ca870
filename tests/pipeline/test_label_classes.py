"""Tests for pipeline.label_classes: the classes of a matrix and their synsets.

Nothing here loads WordNet (`check_synsets` is tested through the job in
test_label_distances): classes come from a known dataset's curated list or
from a generated `dataset_info.json` with a `name synset` file.
"""

import pytest

from pipeline import label_classes
from shrewd_tf.data import records as data
from shrewd_tf.data import tfds_sources as datasets
from shrewd_tf.semantics import class_synsets


def write_info(directory, class_names, source=""):
    directory.mkdir(exist_ok=True)
    data.DatasetInfo(image_shape=(4, 4, 1), class_names=tuple(class_names),
                     splits={"train": 0}, source=source).save(str(directory))
    return str(directory)


def test_synsets_file_names_may_hold_spaces(tmp_path):
    path = tmp_path / "synsets.txt"
    path.write_text("# name synset\nAnkle boot boot.n.01\n\n"
                    "house cat   domestic_cat.n.01\nkitty domestic_cat.n.01\n"
                    "kitty domestic_cat.n.01\n")
    assert label_classes.read_synsets_file(path) == {
        "Ankle boot": "boot.n.01", "house cat": "domestic_cat.n.01",
        "kitty": "domestic_cat.n.01"}
    path.write_text("kitty domestic_cat.n.01\nkitty dog.n.01\n")
    with pytest.raises(ValueError, match=":2: class 'kitty' has two"):
        label_classes.read_synsets_file(path)
    path.write_text("lonely\n")
    with pytest.raises(ValueError, match=":1: expected 'name synset'"):
        label_classes.read_synsets_file(path)


def test_dataset_classes_come_with_their_curated_synsets():
    classes = label_classes.resolve_classes(dataset="fashion_mnist")
    assert classes.names == tuple(class_synsets.FASHION_MNIST_CLASSES)
    assert classes.synsets == tuple(class_synsets.FASHION_MNIST_SYNSETS)
    assert classes.source == "dataset:fashion_mnist"
    unmapped = label_classes.resolve_classes(dataset="cifar100",
                                             need_synsets=False)
    assert unmapped.names == tuple(class_synsets.CIFAR100_CLASSES)
    assert unmapped.synsets is None
    with pytest.raises(ValueError, match="dataset='mnist'"):
        label_classes.dataset_class_names("mnist")


def test_tfrecord_dir_classes_map_through_the_synsets_file(tmp_path):
    names = ["Ankle boot", "dog.n.01", "house cat"]
    tfrecord_dir = write_info(tmp_path / "records", names)
    synsets_file = tmp_path / "synsets.txt"
    synsets_file.write_text("Ankle boot boot.n.01\n"
                            "house cat domestic_cat.n.01\n")
    classes = label_classes.resolve_classes(
        tfrecord_dir=tfrecord_dir, synsets_file=str(synsets_file))
    assert classes == label_classes.ClassList(
        tuple(names), ("boot.n.01", "dog.n.01", "domestic_cat.n.01"),
        tfrecord_dir)
    with pytest.raises(ValueError, match=r"\['Ankle boot', 'house cat'\]"):
        label_classes.resolve_classes(tfrecord_dir=tfrecord_dir)
    assert label_classes.resolve_classes(
        tfrecord_dir=tfrecord_dir, need_synsets=False).synsets is None


def test_tfrecord_dir_from_a_known_source_uses_its_curated_synsets(tmp_path):
    names = tuple(datasets.FASHION_MNIST_CLASS_NAMES)
    tfrecord_dir = write_info(tmp_path / "records", names[::-1],
                              source="fashion_mnist")
    classes = label_classes.resolve_classes(tfrecord_dir=tfrecord_dir)
    curated = class_synsets.synsets_for("fashion_mnist")
    assert classes.synsets == tuple(curated[::-1])


def test_exactly_one_source_with_class_names(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        label_classes.resolve_classes()
    with pytest.raises(ValueError, match="exactly one"):
        label_classes.resolve_classes(dataset="cifar100",
                                      tfrecord_dir=str(tmp_path))
    captions_only = write_info(tmp_path / "captions", [])
    with pytest.raises(ValueError, match="no class names"):
        label_classes.resolve_classes(tfrecord_dir=captions_only)

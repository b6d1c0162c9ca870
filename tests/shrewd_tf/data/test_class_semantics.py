"""Tests for shrewd_tf.data.class_semantics: class synsets for "wup" and
"bert"."""

import pytest

from shrewd_tf import config as config_lib
from shrewd_tf.data import class_semantics
from shrewd_tf.semantics import class_synsets


@pytest.mark.parametrize(
    "source, expected",
    [
        ("fashion_mnist", "fashion_mnist"),
        ("tfds:cifar100", "cifar100"),
        ("/usr/share/datasets/fashion-mnist", "fashion_mnist"),
        ("idx:/data/imagenet2012/train", "imagenet2012"),
        ("my_photos", None),
        ("", None),
        ("mnist", None),
    ],
)
def test_known_dataset(source, expected):
    assert class_semantics.known_dataset(source) == expected


def test_synsets_from_a_known_source_by_class_name():
    cfg = config_lib.DataConfig(dataset="tfrecords", semantics="wup")
    # A reordered subset of Fashion-MNIST's classes.
    names = ["Bag", "Trouser", "Ankle boot"]
    synsets = class_semantics.class_synsets_for(cfg, names, source="fashion_mnist")
    by_name = dict(
        zip(class_synsets.FASHION_MNIST_CLASSES, class_synsets.FASHION_MNIST_SYNSETS)
    )
    assert synsets == [by_name[n] for n in names]
    with pytest.raises(ValueError, match="'Hat'.*class_synsets_file"):
        class_semantics.class_synsets_for(cfg, ["Bag", "Hat"], source="fashion_mnist")


def test_synsets_from_names_file_or_error(tmp_path):
    cfg = config_lib.DataConfig(dataset="tfrecords", semantics="wup")
    assert class_semantics.class_synsets_for(cfg, ["dog.n.01", "gym_shoe.n.01"]) == [
        "dog.n.01", "gym_shoe.n.01"
    ]
    with pytest.raises(ValueError) as error:
        class_semantics.class_synsets_for(cfg, ["dog", "cat"], source="photos")
    for part in ("class_synsets_file", "semantics='captions'", "'dog'", "photos"):
        assert part in str(error.value)
    path = tmp_path / "synsets.txt"
    path.write_text("# label order\ndog.n.01\n\ncat.n.01\n")
    with_file = config_lib.DataConfig(
        dataset="tfrecords", semantics="wup", class_synsets_file=str(path)
    )
    # The file wins over names and source.
    assert class_semantics.class_synsets_for(with_file, ["x", "y"], "fashion_mnist") == [
        "dog.n.01", "cat.n.01"
    ]
    with pytest.raises(ValueError, match="one synset per class \\(3\\)"):
        class_semantics.class_synsets_for(with_file, ["x", "y", "z"])

"""Tests for the dataset class -> WordNet synset tables."""


import pytest

from shrewd_tf.semantics import class_synsets
from tests.paths import SHARED_REFERENCE

CIFAR_CLASS_NAMES = SHARED_REFERENCE / "cifar100-hierarchy" / "class_names.txt"


def ancestors(synset):
    """Names of all (instance) hypernyms, transitively."""

    def parents(node):
        return node.hypernyms() + node.instance_hypernyms()

    return {a.name() for a in synset.closure(parents)}


def test_fashion_mnist_table():
    assert class_synsets.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert class_synsets.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert len(class_synsets.FASHION_MNIST_CLASSES) == 10
    assert len(class_synsets.FASHION_MNIST_SYNSETS) == 10


def test_cifar100_classes_in_label_order():
    classes = class_synsets.CIFAR100_CLASSES
    assert len(classes) == len(set(classes)) == 100
    assert list(classes) == sorted(classes)
    assert classes[:8] == (
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee",
        "beetle",
    )  # fmt: skip
    assert classes[99] == "worm"
    assert len(class_synsets.CIFAR100_SYNSETS) == 100


@pytest.mark.skipif(
    not CIFAR_CLASS_NAMES.is_file(), reason="CIFAR-100 reference missing"
)
def test_cifar100_classes_match_reference_names():
    rows = [line.split() for line in CIFAR_CLASS_NAMES.read_text().splitlines()]
    names = {int(i): name for i, name in rows}
    assert [names[i] for i in range(100)] == list(
        class_synsets.CIFAR100_CLASSES
    )


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar100"])
def test_synsets_exist_are_distinct_nouns(wordnet, dataset):
    names = class_synsets.synsets_for(dataset)
    assert len(set(names)) == len(names)
    for name in names:
        synset = wordnet.synset(name)
        assert synset.pos() == "n", name
        assert synset.name() == name


# Curated expectations: the chosen sense sits under the right branch.
HYPERNYM_EXPECTATIONS = {
    "seal": ["animal.n.01", "mammal.n.01"],
    "table": ["furniture.n.01"],
    "ray": ["fish.n.01"],
    "whale": ["mammal.n.01"],
    "dolphin": ["cetacean.n.01"],
    "maple_tree": ["tree.n.01"],
    "oak_tree": ["tree.n.01"],
    "pine_tree": ["tree.n.01"],
    "willow_tree": ["tree.n.01"],
    "palm_tree": ["tree.n.01"],
    "orange": ["fruit.n.01"],
    "apple": ["fruit.n.01"],
    "pear": ["fruit.n.01"],
    "mouse": ["rodent.n.01"],
    "beaver": ["rodent.n.01"],
    "turtle": ["reptile.n.01"],
    "crab": ["crustacean.n.01"],
    "lobster": ["crustacean.n.01"],
    "bus": ["conveyance.n.03"],
    "train": ["conveyance.n.03"],
    "tank": ["military_vehicle.n.01"],
    "rocket": ["vehicle.n.01"],
    "keyboard": ["device.n.01"],
    "lamp": ["furniture.n.01"],
    "castle": ["structure.n.01"],
    "bridge": ["structure.n.01"],
    "cloud": ["atmospheric_phenomenon.n.01"],
    "orchid": ["flower.n.01"],
    "poppy": ["flower.n.01"],
    "sunflower": ["flower.n.01"],
    "tulip": ["plant.n.02"],
    "rose": ["plant.n.02"],
    "sweet_pepper": ["vegetable.n.01"],
    "mushroom": ["vegetable.n.01"],
    "forest": ["land.n.04"],
    "plain": ["land.n.04"],
    "tiger": ["big_cat.n.01"],
    "leopard": ["big_cat.n.01"],
    "aquarium_fish": ["fish.n.01"],
    "flatfish": ["fish.n.01"],
    "trout": ["fish.n.01"],
    "otter": ["musteline_mammal.n.01"],
    "skunk": ["musteline_mammal.n.01"],
    "shrew": ["mammal.n.01"],
    "possum": ["marsupial.n.01"],
    "raccoon": ["procyonid.n.01"],
    "boy": ["person.n.01"],
    "girl": ["person.n.01"],
    "couch": ["furniture.n.01"],
    "plate": ["tableware.n.01"],
    "television": ["electronic_equipment.n.01"],
    "caterpillar": ["animal.n.01"],
}

FASHION_HYPERNYM_EXPECTATIONS = {
    "T-shirt/top": ["clothing.n.01"],
    "Trouser": ["clothing.n.01"],
    "Pullover": ["clothing.n.01"],
    "Dress": ["clothing.n.01"],
    "Coat": ["clothing.n.01"],
    "Shirt": ["clothing.n.01"],
    "Sandal": ["footwear.n.02"],
    "Sneaker": ["footwear.n.02"],
    "Ankle boot": ["footwear.n.02"],
    "Bag": ["container.n.01"],
}


@pytest.mark.parametrize(
    "classes, synsets, expectations",
    [
        (
            class_synsets.CIFAR100_CLASSES,
            class_synsets.CIFAR100_SYNSETS,
            HYPERNYM_EXPECTATIONS,
        ),
        (
            class_synsets.FASHION_MNIST_CLASSES,
            class_synsets.FASHION_MNIST_SYNSETS,
            FASHION_HYPERNYM_EXPECTATIONS,
        ),
    ],
    ids=["cifar100", "fashion_mnist"],
)
def test_curated_senses_have_expected_hypernyms(
    wordnet, classes, synsets, expectations
):
    synset_of = dict(zip(classes, synsets))
    failures = []
    for class_name, expected in expectations.items():
        found = ancestors(wordnet.synset(synset_of[class_name]))
        missing = [name for name in expected if name not in found]
        if missing:
            failures.append((class_name, synset_of[class_name], missing))
    assert not failures


def test_imagenet_wnids_from_installed_tfds():
    wnids = class_synsets.imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000
    assert wnids[0] == "n01440764"  # tench, label 0
    assert wnids == sorted(wnids)


def test_all_imagenet_wnids_resolve(wordnet):
    names = class_synsets.synsets_for("imagenet2012", wordnet=wordnet)
    assert len(set(names)) == 1000
    assert names[0] == "tench.n.01"
    wnids = class_synsets.imagenet_wnids()
    for wnid, name in zip(wnids, names):
        synset = wordnet.synset(name)
        assert synset.pos() == "n"
        assert f"n{synset.offset():08d}" == wnid


def test_wnid_to_synset_name_errors(wordnet):
    assert class_synsets.wnid_to_synset_name("n02084071", wordnet) == (
        "dog.n.01"
    )
    with pytest.raises(ValueError, match="n2084071"):
        class_synsets.wnid_to_synset_name("n2084071", wordnet)
    with pytest.raises(ValueError, match="n02084072"):  # inside a line
        class_synsets.wnid_to_synset_name("n02084072", wordnet)


def test_synsets_for_unknown_dataset():
    with pytest.raises(ValueError, match="dataset_name='mnist'"):
        class_synsets.synsets_for("mnist")

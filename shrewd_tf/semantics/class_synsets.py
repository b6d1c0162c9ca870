"""Class names and their WordNet noun synsets, per dataset, in label order.

The synsets are curated by reading each gloss: the first noun sense is the
wrong one for about a quarter of the CIFAR-100 names (seal the stamp, ray
the beam of light, table the data array, ...). Synsets are keyed by name;
ImageNet wnids resolve through noun byte offsets, which the Debian WordNet
files share with Princeton WordNet 3.0.
"""

import importlib.util
import warnings
from pathlib import Path

# Fashion-MNIST labels 0..9 (Xiao et al., 2017).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FASHION_MNIST_SYNSETS = (
    "jersey.n.03",  # a close-fitting pullover shirt (T-shirt, tee shirt)
    "trouser.n.01",  # garment extending from the waist to the knee or ankle
    "pullover.n.01",  # a sweater put on by pulling it over the head
    "dress.n.01",  # a one-piece garment for a woman; skirt and bodice
    "coat.n.01",  # an outer garment that has sleeves; worn outdoors
    "sandal.n.01",  # a shoe: a sole fastened by straps to the foot
    "shirt.n.01",  # a garment worn on the upper half of the body
    "gym_shoe.n.01",  # a canvas shoe with a pliable rubber sole (sneaker)
    "bag.n.04",  # container for money and personal items (handbag, purse)
    "boot.n.01",  # footwear covering the whole foot and lower leg
)

# CIFAR-100 fine labels 0..99 (Krizhevsky, 2009; the order of tfds and of
# `fine_label_names.txt`, which is alphabetical).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee",
    "beetle", "bicycle", "bottle", "bowl", "boy", "bridge", "bus",
    "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab",
    "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree",
    "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit",
    "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark",
    "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel",
    "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# One synset per CIFAR-100 class; the comment says why when the first noun
# sense of the name is not the one chosen.
CIFAR100_SYNSETS = (
    "apple.n.01",  # the fruit (CIFAR superclass "fruit and vegetables")
    "goldfish.n.01",  # no "aquarium fish" synset; a pond/aquarium fish
    "baby.n.01",
    "bear.n.01",
    "beaver.n.07",  # the rodent, not its fur or a beard
    "bed.n.01",
    "bee.n.01",
    "beetle.n.01",
    "bicycle.n.01",
    "bottle.n.01",
    "bowl.n.01",
    "male_child.n.01",  # a youthful male person
    "bridge.n.01",
    "bus.n.01",
    "butterfly.n.01",
    "camel.n.01",
    "can.n.01",
    "castle.n.02",  # the fortified building, not a stately mansion
    "caterpillar.n.01",
    "cattle.n.01",
    "chair.n.01",
    "chimpanzee.n.01",
    "clock.n.01",
    "cloud.n.02",  # water or ice particles in the sky, not smoke or dust
    "cockroach.n.01",
    "sofa.n.01",  # couch: an upholstered seat for more than one person
    "crab.n.01",
    "crocodile.n.01",
    "cup.n.01",
    "dinosaur.n.01",
    "dolphin.n.02",  # the toothed whale, not the dolphinfish
    "elephant.n.01",
    "flatfish.n.02",  # the fish, not its flesh
    "forest.n.02",  # land covered with trees (scene, like plain, mountain)
    "fox.n.01",
    "female_child.n.01",  # a youthful female person, like boy
    "hamster.n.01",
    "house.n.01",
    "kangaroo.n.01",
    "keyboard.n.01",
    "lamp.n.02",  # the piece of furniture holding light bulbs
    "lawn_mower.n.01",
    "leopard.n.02",  # the big cat, not its pelt
    "lion.n.01",
    "lizard.n.01",
    "lobster.n.02",  # the crustacean, not its flesh
    "man.n.01",
    "maple.n.02",  # the tree, not its wood
    "motorcycle.n.01",
    "mountain.n.01",
    "mouse.n.01",
    "mushroom.n.05",  # the edible fungus (superclass "fruit and vegetables")
    "oak.n.02",  # the tree, not its wood
    "orange.n.01",  # the fruit, not the colour or the tree
    "orchid.n.01",
    "otter.n.02",  # the mammal, not its fur
    "palm.n.03",  # the tree, not the inside of the hand
    "pear.n.01",  # the fruit, not the tree
    "pickup.n.01",
    "pine.n.01",
    "plain.n.01",
    "plate.n.04",  # dish for food, not home plate
    "poppy.n.01",
    "porcupine.n.01",
    "opossum.n.02",  # possum: the American opossum
    "rabbit.n.01",
    "raccoon.n.02",  # the mammal, not its fur
    "ray.n.07",  # the flattened cartilaginous fish, not a beam of light
    "road.n.01",
    "rocket.n.01",  # the vehicle, not the engine
    "rose.n.01",
    "sea.n.01",
    "seal.n.09",  # the marine mammal, not sealing wax or a stamp
    "shark.n.01",
    "shrew.n.02",  # the small mammal, not a scolding woman
    "skunk.n.04",  # the mammal, not a despicable person
    "skyscraper.n.01",
    "snail.n.01",
    "snake.n.01",
    "spider.n.01",
    "squirrel.n.01",
    "streetcar.n.01",
    "sunflower.n.01",
    "sweet_pepper.n.02",  # the vegetable, not the plant
    "table.n.02",  # the furniture, not a table of data
    "tank.n.01",  # the military vehicle, not a storage tank
    "telephone.n.01",
    "television_receiver.n.01",  # the set, not broadcasting
    "tiger.n.02",  # the big cat, not a fierce person
    "tractor.n.01",
    "train.n.01",
    "trout.n.02",  # the fish, not its flesh
    "tulip.n.01",
    "turtle.n.02",  # the reptile, not a turtleneck
    "wardrobe.n.01",
    "whale.n.02",  # the cetacean, not a very large person
    "willow.n.01",
    "wolf.n.01",
    "woman.n.01",
    "worm.n.01",
)

DATASET_NAMES = ("fashion_mnist", "cifar100", "imagenet2012")

# tensorflow_datasets ships the ImageNet-1k wnids, in label order.
_IMAGENET_LABELS_FILE = Path("datasets") / "imagenet2012" / "labels.txt"


def imagenet_wnids():
    """Returns the 1000 ImageNet-1k (ILSVRC 2012) wnids in label order.

    Read from the installed `tensorflow_datasets` package (the file its
    `imagenet2012` builder uses), located without importing the package.

    Returns:
        A list of 1000 strings such as `"n01440764"`.

    Raises:
        FileNotFoundError: tensorflow_datasets or its label file is missing.
    """
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "imagenet_wnids() reads tensorflow_datasets' label file; "
            "install tensorflow-datasets."
        )
    path = Path(spec.submodule_search_locations[0]) / _IMAGENET_LABELS_FILE
    wnids = path.read_text(encoding="utf-8").split()
    if len(wnids) != 1000:
        raise ValueError(
            f"Expected 1000 wnids in {path}. Received: {len(wnids)} wnids"
        )
    return wnids


def wnid_to_synset_name(wnid, wordnet=None):
    """Returns the synset name of an ImageNet wnid, e.g. `"n02084071"`.

    Args:
        wnid: `"n"` followed by the 8-digit WordNet 3.0 noun offset.
        wordnet: a WordNet reader; default `semantics.load_wordnet()`.

    Returns:
        A synset name such as `"dog.n.01"`.

    Raises:
        ValueError: a malformed wnid or one with no noun synset.
    """
    if not (
        isinstance(wnid, str)
        and len(wnid) == 9
        and wnid[0] == "n"
        and wnid[1:].isdigit()
    ):
        raise ValueError(
            f"A wnid is 'n' and 8 digits. Received: wnid={wnid!r}"
        )
    if wordnet is None:
        from shrewd_tf.semantics import distances as semantics

        wordnet = semantics.load_wordnet()
    offset = int(wnid[1:])
    with warnings.catch_warnings():
        # NLTK warns and returns None for an offset that starts no synset.
        warnings.simplefilter("ignore")
        synset = wordnet.synset_from_pos_and_offset("n", offset)
    if synset is None:
        raise ValueError(
            f"No noun synset at this wnid's offset. Received: wnid={wnid!r}"
        )
    return synset.name()


def synsets_for(dataset_name, wordnet=None):
    """Returns the class synset names of a dataset, in label order.

    Args:
        dataset_name: one of `DATASET_NAMES`.
        wordnet: a WordNet reader, used for `"imagenet2012"` only; default
            `semantics.load_wordnet()`.

    Returns:
        A list of synset names, one per class.

    Raises:
        ValueError: an unknown dataset name.
    """
    if dataset_name == "fashion_mnist":
        return list(FASHION_MNIST_SYNSETS)
    if dataset_name == "cifar100":
        return list(CIFAR100_SYNSETS)
    if dataset_name == "imagenet2012":
        if wordnet is None:
            from shrewd_tf.semantics import distances as semantics

            wordnet = semantics.load_wordnet()
        return [wnid_to_synset_name(w, wordnet) for w in imagenet_wnids()]
    raise ValueError(
        f"dataset_name must be one of {DATASET_NAMES}. Received: "
        f"dataset_name={dataset_name!r}"
    )

"""The classes of a class-distance matrix, in label order, and their synsets.

Classes come from a known dataset (`dataset_class_names`: fashion_mnist,
cifar100, imagenet2012, with the curated synsets of
`shrewd_tf.semantics.class_synsets`; ImageNet class names are wnids) or from
a TFRecord directory (`dataset_info.json` class names, mapped to synsets by
a `name synset` file, by the curated synsets when the records were made
from a known dataset, or taken as synset names such as `dog.n.01`).
`resolve_classes` returns them as a `ClassList`; `check_synsets` checks the
synsets against WordNet before any pipeline is built. The directory and the
synsets file may be local or on any file system Beam's `FileSystems`
knows (`gs://`, ...).
"""

import dataclasses

from pipeline import outputs
from shrewd_tf.data import class_semantics
from shrewd_tf.semantics import class_synsets


@dataclasses.dataclass(frozen=True)
class ClassList:
    """The classes of a matrix, in label order.

    Attributes:
        names: C class names.
        synsets: C WordNet synset names, or None (only `lcs` needs none).
        source: where they came from ("dataset:cifar100", a directory).
    """

    names: tuple
    synsets: tuple | None
    source: str


def dataset_class_names(dataset):
    """Class names of a known dataset in label order (ImageNet: wnids)."""
    if dataset == "fashion_mnist":
        return list(class_synsets.FASHION_MNIST_CLASSES)
    if dataset == "cifar100":
        return list(class_synsets.CIFAR100_CLASSES)
    if dataset == "imagenet2012":
        return class_synsets.imagenet_wnids()
    raise ValueError(
        f"dataset must be one of {class_synsets.DATASET_NAMES}. Received: "
        f"dataset={dataset!r}"
    )


def read_synsets_file(path):
    """`name synset` lines -> {name: synset}; the name may hold spaces.

    Blank lines and lines starting with `#` are skipped.

    Raises:
        ValueError: a line with one field or a name given twice.
    """
    by_name = {}
    lines = outputs.read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise ValueError(
                f"{path}:{number}: expected 'name synset'. Received: "
                f"{line.rstrip()!r}"
            )
        name, synset = fields[0].strip(), fields[1]
        if name in by_name and by_name[name] != synset:
            raise ValueError(
                f"{path}:{number}: class {name!r} has two synsets. "
                f"Received: {by_name[name]!r} and {synset!r}"
            )
        by_name[name] = synset
    return by_name


def resolve_classes(dataset=None, tfrecord_dir=None, synsets_file=None,
                    need_synsets=True, wordnet=None):
    """The class list of a `--dataset` or a `--tfrecord-dir`.

    Args:
        dataset: one of `class_synsets.DATASET_NAMES`, or None.
        tfrecord_dir: a directory with `dataset_info.json`, or None.
        synsets_file: `name synset` lines for `tfrecord_dir`'s classes.
        need_synsets: map the classes to synsets (False for `lcs`).
        wordnet: a WordNet reader (ImageNet wnids, validation).

    Returns:
        A `ClassList`.

    Raises:
        ValueError: not exactly one of dataset/tfrecord_dir, no classes,
            a class without a synset, or an unknown synset.
    """
    if (dataset is None) == (tfrecord_dir is None):
        raise ValueError(
            "Pass exactly one of dataset and tfrecord_dir. Received: "
            f"dataset={dataset!r}, tfrecord_dir={tfrecord_dir!r}"
        )
    if dataset is not None:
        names = dataset_class_names(dataset)
        synsets = (class_synsets.synsets_for(dataset, wordnet)
                   if need_synsets else None)
        return ClassList(tuple(names), synsets and tuple(synsets),
                         f"dataset:{dataset}")
    info = outputs.load_dataset_info(tfrecord_dir)
    names = list(info.class_names)
    if not names:
        raise ValueError(
            f"{tfrecord_dir} has no class names (caption-only data?). "
            f"Received: class_names={names}"
        )
    synsets = None
    if need_synsets:
        by_name = read_synsets_file(synsets_file) if synsets_file else {}
        dataset = (None if synsets_file
                   else class_semantics.known_dataset(info.source))
        if dataset is not None:
            # Records made from a known dataset (source "fashion_mnist",
            # "tfds:cifar100"): its curated synsets, matched by class name.
            known = dataset_class_names(dataset)
            curated = class_synsets.synsets_for(dataset, wordnet)
            by_name = {n: s for n, s in zip(known, curated)}
        synsets = [
            by_name.get(n, n if class_semantics.SYNSET_NAME.match(n) else None)
            for n in names
        ]
        missing = [n for n, s in zip(names, synsets) if s is None]
        if missing:
            raise ValueError(
                f"No synset for classes {missing[:5]} of {tfrecord_dir}: "
                "give --synsets-file with 'name synset' lines. Received: "
                f"synsets_file={synsets_file!r}"
            )
        synsets = tuple(synsets)
    return ClassList(tuple(names), synsets, outputs.output_path(tfrecord_dir))


def check_synsets(synsets, wordnet, nouns_only):
    """Raises ValueError naming an unknown (or, for WUP, non-noun) synset."""
    from nltk.corpus.reader.wordnet import WordNetError

    for name in dict.fromkeys(synsets):
        try:
            synset = wordnet.synset(name)
        except (WordNetError, ValueError) as error:
            raise ValueError(
                f"Unknown WordNet synset. Received: name={name!r} ({error})"
            ) from None
        if nouns_only and synset.pos() != "n":
            raise ValueError(
                f"WUP distances need noun synsets. Received: name={name!r}"
            )

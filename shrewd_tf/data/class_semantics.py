"""Class semantics: the WordNet synsets and the C x C target distances.

`class_distance_matrix(data_config, class_names, source)` gives the target
distances the similarity loss (eq. 2) and mAHP compare codes with, as
`data_config.semantics` names them: "wup" (1 - Wu-Palmer similarity of
each class's synset), "lcs" (LCS height on a given hierarchy), "bert"
(cosine distance of the synsets' definitions, embedded) or "captions"
(None: the loss compares caption embeddings instead). `class_synsets_for`
resolves each class to its synset, from a file, a known dataset or
synset-shaped class names.

Example:
    synsets = class_synsets_for(config.data, ["Bag", "Trouser"],
                                source="fashion_mnist")
    distances = class_distance_matrix(config.data, names)  # [C, C]
"""

import re

import numpy as np

CAPTIONS = "captions"
# A WordNet synset name: lemma.pos.nn, e.g. "dog.n.01", "gym_shoe.n.01".
SYNSET_NAME = re.compile(r"^\S+\.[nvasr]\.\d+$")


def _read_synsets_file(path, class_names):
    with open(path) as f:
        synsets = [
            line.strip() for line in f
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if len(synsets) != len(class_names):
        raise ValueError(
            f"{path}: expected one synset per class ({len(class_names)}). "
            f"Received: {len(synsets)} synsets"
        )
    return synsets


def known_dataset(source):
    """The `class_synsets.DATASET_NAMES` entry a source string names.

    Matches whole words, "-" read as "_": "fashion_mnist",
    "tfds:cifar100", "/usr/share/datasets/fashion-mnist" all name a
    dataset. Returns None if none does.
    """
    from shrewd_tf.semantics import class_synsets

    words = re.split(r"[^a-z0-9_]+", str(source).lower().replace("-", "_"))
    return next((w for w in words if w in class_synsets.DATASET_NAMES), None)


def _known_class_names(dataset):
    from shrewd_tf.semantics import class_synsets

    if dataset == "fashion_mnist":
        return list(class_synsets.FASHION_MNIST_CLASSES)
    if dataset == "cifar100":
        return list(class_synsets.CIFAR100_CLASSES)
    return class_synsets.imagenet_wnids()


def class_synsets_for(data_config, class_names, source=""):
    """One WordNet synset name per class, in label order.

    Resolution, first match wins:

    1. `data_config.class_synsets_file` (one synset per line);
    2. `data_config.dataset` is a known dataset (fashion_mnist, cifar100,
       imagenet2012): its curated synsets;
    3. `source` (a TFRecord directory's `DatasetInfo.source`) names a known
       dataset: its synsets, looked up by class name (so a subset or
       reordering of its classes works; an unknown name is an error);
    4. every class name is a synset name ("dog.n.01"): the names.

    Raises:
        ValueError: nothing matches (the message says what to give).
    """
    from shrewd_tf.semantics import class_synsets

    if data_config.class_synsets_file:
        return _read_synsets_file(data_config.class_synsets_file, class_names)
    if data_config.dataset in class_synsets.DATASET_NAMES:
        return class_synsets.synsets_for(data_config.dataset)
    dataset = known_dataset(source)
    if dataset is not None:
        known = _known_class_names(dataset)
        unknown = [n for n in class_names if n not in known]
        if unknown:
            raise ValueError(
                f"dataset_info.json source {source!r} names {dataset!r}, but "
                f"classes {unknown[:5]} are not among its class names; give "
                "data.class_synsets_file (one synset per line, label order). "
                f"Received: class_names={list(class_names)[:5]}"
            )
        synsets = class_synsets.synsets_for(dataset)
        return [synsets[known.index(n)] for n in class_names]
    if class_names and all(SYNSET_NAME.match(n) for n in class_names):
        return list(class_names)
    raise ValueError(
        f"semantics={data_config.semantics!r} needs a WordNet synset per "
        f"class, but the source ({source!r}) names no known dataset "
        f"({', '.join(class_synsets.DATASET_NAMES)}) and the class names "
        "are not synset names (like 'dog.n.01'). Give "
        "data.class_synsets_file (one synset per line, in label order) or "
        "train on the captions with semantics='captions'. Received: "
        f"class_names={list(class_names)[:5]}"
    )


def load_class_distances(path, num_classes=None, option="class_distances_file"):
    """A precomputed [C, C] class-distance matrix (`.npy`), checked.

    The one reader of such files: training (`data.class_distances_file`)
    and serving (`--class-distances`) both call it.

    Args:
        path: a `.npy` file of a square matrix of finite numbers >= 0.
        num_classes: C it must have, or None (any C >= 1).
        option: the setting that named the file, for the messages.

    Returns:
        float64 array [C, C].

    Raises:
        ValueError: not a .npy array (pickles refused), not square (or not
            C x C), not numbers, NaN / infinite or negative entries; the
            message names the option and the file.
    """
    where = f"{option} {path!r}"
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(
            f"{where} is not a .npy array ({e}); give the "
            "class_distances.npy of the pipeline's semantics stage."
        ) from None
    if (
        matrix.ndim != 2
        or matrix.shape[0] != matrix.shape[1]
        or matrix.shape[0] < 1
    ):
        raise ValueError(
            f"{where} must hold a square [C, C] class distance matrix. "
            f"Received: shape {matrix.shape}"
        )
    if num_classes is not None and matrix.shape[0] != num_classes:
        raise ValueError(
            f"{where}: expected a [{num_classes}, {num_classes}] "
            f"class-distance matrix for the {num_classes} classes. "
            f"Received: shape={matrix.shape}"
        )
    if matrix.dtype.kind not in "biuf":
        raise ValueError(
            f"{where} must hold numbers. Received: dtype {matrix.dtype}"
        )
    matrix = matrix.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError(
            f"{where} holds NaN or infinite distances "
            f"({int(np.sum(~np.isfinite(matrix)))} of {matrix.size})."
        )
    if np.any(matrix < 0):
        raise ValueError(
            f"{where} holds negative distances (min {matrix.min()}); class "
            "distances are >= 0."
        )
    return matrix


def class_distance_matrix(data_config, class_names, source=""):
    """The C x C target distances named by `data_config.semantics`.

    "wup": 1 - Wu-Palmer similarity of each class's WordNet synset
    (`class_synsets_for`); "lcs": LCS height on `hierarchy_file` with
    `class_names_file`; "bert": cosine distance between sentence embeddings
    of the synsets' WordNet definitions (the paper's BERT variant, here
    with the default sentence encoder); "captions": None (the similarity
    loss compares caption embeddings instead).

    Args:
        data_config: `config.DataConfig`.
        class_names: C names in label order.
        source: `DatasetInfo.source` of a TFRecord directory ("" otherwise).
    """
    from shrewd_tf.semantics import distances as semantics

    kind = data_config.semantics
    if kind == CAPTIONS:
        return None
    if data_config.class_distances_file:
        return load_class_distances(
            data_config.class_distances_file, len(class_names)
        )
    if kind in ("wup", "bert"):
        synsets = class_synsets_for(data_config, class_names, source)
        if kind == "wup":
            return semantics.wup_distance_matrix(synsets)
        from shrewd_tf.text import encoder as text

        definitions = semantics.synset_definitions(synsets)
        embeddings = text.SentenceEncoder().encode(definitions)
        return semantics.embedding_distance_matrix(embeddings, "cosine")
    if kind == "lcs":
        if not (data_config.hierarchy_file and data_config.class_names_file):
            raise ValueError(
                "semantics='lcs' needs data.hierarchy_file and "
                "data.class_names_file. Received: "
                f"hierarchy_file={data_config.hierarchy_file!r}, "
                f"class_names_file={data_config.class_names_file!r}"
            )
        edges = semantics.read_parent_child_edges(data_config.hierarchy_file)
        ids = _class_ids_in_label_order(
            data_config.class_names_file, class_names
        )
        return semantics.lcs_height_distance_matrix(edges, ids)
    raise ValueError(
        "Unknown semantics; expected wup, lcs, bert or captions. "
        f"Received: semantics={kind!r}"
    )


def _class_ids_in_label_order(path, class_names):
    """Maps `id name` lines to the tree node ids of `class_names`."""
    by_name = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(
                    f"{path}:{line_number}: expected 'id name'. "
                    f"Received: {line.rstrip()!r}"
                )
            by_name[parts[1]] = parts[0]
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ValueError(f"{path}: no node id for classes {missing[:5]}")
    return [by_name[n] for n in class_names]

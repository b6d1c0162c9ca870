"""Class similarity of search results to the query's class (`--class-distances`).

The pipeline's semantics stage (`pipeline.label_distances`) writes the
`[C, C]` class-distance matrix the model was trained to match, as
`<run>/semantics/class_distances.npy` (float64, label order), with
`class_distances.json` beside it (its "class_names"). Given that file,
`/v1/search` tells how near each result's class is to the query's:

* the query's class (`query_label`) is the request's `"label"` (an int in
  [0, C), e.g. the known label of a database item), else the argmax of the
  model's "logits" output (`shrewd_tf.contract.LOGITS_OUTPUT`; models
  trained with labels have it) for image queries; code and bits queries
  without "label" get none;
* each result's `similarity` is `class_similarity(d)[query_label, label]`
  (`shrewd_tf.semantics.distances.class_similarity`: `max(0, 1 - d)`, the
  mapping mAHP uses), in [0, 1]: 1 for the same class, lower for classes
  further apart in the hierarchy; null for a result whose metadata has no
  label in [0, C).

Without the matrix, or without a query class, the answer carries neither
field. The web page colours each result by its similarity.
"""

import json
import logging
import os

import numpy as np

from serving.errors import invalid_argument
from shrewd_tf.contract import LOGITS_OUTPUT
from shrewd_tf.data import class_semantics
from shrewd_tf.semantics.distances import class_similarity

LABEL_FIELD = "label"


def _names_file(path):
    """`class_distances.json` beside `class_distances.npy`."""
    return os.path.splitext(path)[0] + ".json"


def load_class_distances(path):
    """Reads and checks a class-distance matrix and its class names.

    Args:
        path: a `.npy` file holding a `[C, C]` matrix of finite distances
            >= 0 in label order; `<path without .npy>.json`, when present,
            may give {"class_names": [C strings]}.

    Returns:
        (float64 array [C, C], tuple of C names or None).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .npy array, not square, not finite, negative, or a
            names file that does not match; the message names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--class-distances: no such file {path!r}. The pipeline's "
            "semantics stage writes <run>/semantics/class_distances.npy "
            "(or run `python -m pipeline.label_distances`)."
        )
    matrix = class_semantics.load_class_distances(
        path, option="--class-distances"
    )
    return matrix, _class_names(_names_file(path), matrix.shape[0])


def _class_names(path, num_classes):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = json.load(f).get("class_names")
    except (ValueError, OSError, AttributeError) as e:
        raise ValueError(
            f"{path!r} (beside --class-distances) is not a JSON object: {e}"
        ) from None
    if names is None:
        return None
    if (
        not isinstance(names, list)
        or len(names) != num_classes
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(
            f"{path!r} (beside --class-distances) must give 'class_names' as "
            f"{num_classes} strings, one per matrix row. Received: "
            f"{str(names)[:80]}"
        )
    return tuple(names)


class ClassSimilarity:
    """Similarities between classes, for annotating search answers.

    Args:
        distances: `[C, C]` class distances >= 0 (row: query class).
        class_names: C names in label order, or None.
        source: where the matrix came from (for error messages).
    """

    def __init__(self, distances, class_names=None, source="the matrix"):
        distances = np.asarray(distances, dtype=np.float64)
        if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
            raise ValueError(
                f"`distances` must be [C, C]. Received: {distances.shape}"
            )
        self.similarity = class_similarity(distances)
        self.class_names = None if class_names is None else tuple(class_names)
        self.source = source
        self._mismatch_logged = set()  # models warned about, once each

    @classmethod
    def load(cls, path):
        """From a `class_distances.npy` file (`load_class_distances`)."""
        matrix, names = load_class_distances(path)
        return cls(matrix, names, source=path)

    @property
    def num_classes(self):
        return self.similarity.shape[0]

    def describe(self):
        """{"num_classes", "class_names", "min_similarity"} for the page
        (its colour scale spans [min_similarity, 1]: Fashion-MNIST's WUP
        similarities all lie in [0.56, 1])."""
        return {
            "num_classes": self.num_classes,
            "class_names": (
                None if self.class_names is None else list(self.class_names)
            ),
            "min_similarity": float(self.similarity.min()),
        }

    def request_label(self, request):
        """The request's "label" (None when absent or null).

        Raises:
            ServingError: INVALID_ARGUMENT for a label that is not an int in
                [0, C).
        """
        label = request.get(LABEL_FIELD)
        if label is None:
            return None
        if (
            isinstance(label, bool)
            or not isinstance(label, int)
            or not 0 <= label < self.num_classes
        ):
            raise invalid_argument(
                f"'{LABEL_FIELD}' must be a class id, an integer in [0, "
                f"{self.num_classes}) (the rows of --class-distances). "
                f"Received: {LABEL_FIELD}={str(label)[:80]!r}"
            )
        return label

    def predicted_label(self, outputs, model):
        """argmax of the model's "logits" output, or None without one.

        A model with a number of logits other than the matrix's C classes
        (another label set) gets no predicted class: the search is answered
        without similarities, and the mismatch is logged once per model
        (a server misconfiguration, not the client's error).
        """
        if LOGITS_OUTPUT not in outputs:
            return None
        logits = np.asarray(outputs[LOGITS_OUTPUT], dtype=np.float64)
        logits = logits.reshape(-1)
        if logits.shape[0] != self.num_classes:
            if model not in self._mismatch_logged:
                self._mismatch_logged.add(model)
                logging.warning(
                    "Model %s has %d logits but --class-distances %s has %d "
                    "classes: its image searches get no class similarity; "
                    "serve the matrix of the dataset it was trained on.",
                    model, logits.shape[0], self.source, self.num_classes,
                )
            return None
        if not np.all(np.isfinite(logits)):
            return None
        return int(np.argmax(logits))

    def result_similarity(self, query_label, metadata):
        """similarity[query_label, metadata label], or None without one."""
        label = (metadata or {}).get(LABEL_FIELD)
        if (
            isinstance(label, (bool, np.bool_))
            or not isinstance(label, (int, np.integer))
            or not 0 <= label < self.num_classes
        ):
            return None
        return float(self.similarity[query_label, int(label)])

    def annotate(self, answer, query_label):
        """Adds "query_label" and each result's "similarity" to a search
        answer (in place; nothing when `query_label` is None)."""
        if query_label is None:
            return answer
        answer["query_label"] = query_label
        for result in answer["results"]:
            result["similarity"] = self.result_similarity(
                query_label, result.get("metadata")
            )
        return answer


class NoClassSimilarity:
    """Stands in for `ClassSimilarity` when no matrix is served: answers
    carry no similarities and a request's "label" is refused."""

    num_classes = None

    def describe(self):
        return None

    def request_label(self, request):
        """None; INVALID_ARGUMENT for a non-null "label"."""
        if request.get(LABEL_FIELD) is not None:
            raise invalid_argument(
                f"'{LABEL_FIELD}' names the query's class for similarities, "
                "but this server has no class-distance matrix: start it "
                f"with --class-distances FILE, or drop '{LABEL_FIELD}'. "
                f"Received: {LABEL_FIELD}={str(request[LABEL_FIELD])[:80]!r}"
            )
        return None

    def predicted_label(self, outputs, model):
        return None

    def annotate(self, answer, query_label):
        return answer

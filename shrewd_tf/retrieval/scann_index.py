"""`ScannIndex`: k-NN over float codes with ScaNN's pybind searcher.

ScaNN behind the `shrewd_tf.retrieval.base.RetrievalIndex` interface,
without TF ops: brute force, or tree + asymmetric hashing (AH) + exact
re-ordering. Distances are squared L2 or the negated inner product -<q, x>
(float32), smaller is nearer; id, padding and file conventions are in the
`shrewd_tf.retrieval.base` docstring. Kind "scann" (`shrewd_tf.contract`),
registered on import.
"""

import logging
import math
import os

import numpy as np

from shrewd_tf.contract import SCANN_INDEX
from shrewd_tf.ops.validation import check_positive_int
from shrewd_tf.retrieval.arrays import as_codes
from shrewd_tf.retrieval.arrays import pad_columns
from shrewd_tf.retrieval.base import RetrievalIndex
from shrewd_tf.retrieval.registry import register_index
from shrewd_tf.retrieval.files import IndexFormatError
from shrewd_tf.verbosity import native_stderr_silenced


# Below this many codes tree + AH is not trained and, unless num_leaves was
# given, brute force is used.
AH_MIN_CODES = 256


@register_index
class ScannIndex(RetrievalIndex):
    """k-NN over float codes with ScaNN's pybind searcher (no TF ops).

    Brute force (`brute_force=True`, exact in float32, best for N below a
    few tens of thousands) or a k-means tree with `num_leaves` leaves
    (default round(sqrt(N)), set at build) of which `num_leaves_to_search`
    are searched (default ceil(num_leaves / 10)), asymmetric hashing with
    `dimensions_per_block` dimensions per 4-bit block, and exact float32
    re-ordering of the top `reorder_k` AH candidates (default max(4k, 100),
    at least k).

    `add` upserts into the existing tree and AH codebook without retraining;
    rebuild after adding a large fraction of the data. Note: `import scann`
    also imports TensorFlow when it is installed (scann/__init__.py), so the
    first ScannIndex costs a TF import; the searcher itself runs no TF ops.

    Args:
        distance: "squared_l2" or "dot_product" (distances returned are the
            squared L2 distance, or -<q, x>: smaller is nearer).
        brute_force: exact float32 brute force instead of tree + AH.
        num_leaves, num_leaves_to_search: tree size and search width.
        dimensions_per_block: AH block width.
        anisotropic_quantization_threshold: AH noise-shaping threshold (None:
            off; ScaNN suggests 0.2 for dot_product).
        reorder_k: AH candidates re-scored exactly.
        training_sample_size: codes sampled to train the tree and AH.
        num_threads: search and training threads (1: single-threaded).

    Raises:
        ValueError: on bad parameter values, quoting them.
    """

    kind = SCANN_INDEX

    def __init__(
        self,
        distance="squared_l2",
        brute_force=False,
        num_leaves=None,
        num_leaves_to_search=None,
        dimensions_per_block=2,
        anisotropic_quantization_threshold=None,
        reorder_k=None,
        training_sample_size=100_000,
        num_threads=1,
    ):
        super().__init__()
        if distance not in ("squared_l2", "dot_product"):
            raise ValueError(
                '`distance` must be "squared_l2" or "dot_product". '
                f"Received: distance={distance!r}"
            )
        self.distance = distance
        self.brute_force = bool(brute_force)
        self.num_leaves = check_positive_int("num_leaves", num_leaves, True)
        self.num_leaves_to_search = check_positive_int(
            "num_leaves_to_search", num_leaves_to_search, True
        )
        if (
            self.num_leaves is not None
            and self.num_leaves_to_search is not None
            and self.num_leaves_to_search > self.num_leaves
        ):
            raise ValueError(
                "`num_leaves_to_search` must be <= num_leaves="
                f"{self.num_leaves}. Received: num_leaves_to_search="
                f"{self.num_leaves_to_search}"
            )
        self.dimensions_per_block = check_positive_int(
            "dimensions_per_block", dimensions_per_block
        )
        self.anisotropic_quantization_threshold = (
            None
            if anisotropic_quantization_threshold is None
            else float(anisotropic_quantization_threshold)
        )
        self.reorder_k = check_positive_int("reorder_k", reorder_k, True)
        self.training_sample_size = check_positive_int(
            "training_sample_size", training_sample_size
        )
        self.num_threads = check_positive_int("num_threads", num_threads)
        # What the caller asked for; build-time defaults come from N.
        self._requested_leaves = (self.num_leaves, self.num_leaves_to_search)
        self._searcher = None

    @property
    def is_exact(self):
        """True only for the float32 brute-force searcher."""
        return self.brute_force

    def get_config(self):
        return {
            "distance": self.distance,
            "brute_force": self.brute_force,
            "num_leaves": self.num_leaves,
            "num_leaves_to_search": self.num_leaves_to_search,
            "dimensions_per_block": self.dimensions_per_block,
            "anisotropic_quantization_threshold": (
                self.anisotropic_quantization_threshold
            ),
            "reorder_k": self.reorder_k,
            "training_sample_size": self.training_sample_size,
            "num_threads": self.num_threads,
        }

    def set_search_params(self, num_leaves_to_search=None, reorder_k=None):
        """Changes the search width and the re-ordering depth."""
        if num_leaves_to_search is not None:
            check_positive_int("num_leaves_to_search", num_leaves_to_search)
            if self.num_leaves and num_leaves_to_search > self.num_leaves:
                raise ValueError(
                    "`num_leaves_to_search` must be <= num_leaves="
                    f"{self.num_leaves}. Received: num_leaves_to_search="
                    f"{num_leaves_to_search}"
                )
            self.num_leaves_to_search = int(num_leaves_to_search)
            self._requested_leaves = (
                self._requested_leaves[0],
                self.num_leaves_to_search,
            )
        if reorder_k is not None:
            self.reorder_k = check_positive_int("reorder_k", reorder_k)

    def _check_codes(self, codes, name):
        array = as_codes(codes, name, width=self._code_width)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _build_engine(self, codes):
        from scann.scann_ops.py import scann_ops_pybind

        if len(codes) == 0:
            raise ValueError("ScannIndex needs at least one code to build.")
        builder = scann_ops_pybind.builder(codes, 10, self.distance)
        builder.set_n_training_threads(self.num_threads)
        if (not self.brute_force and len(codes) < AH_MIN_CODES
                and self._requested_leaves[0] is None):
            # AH trains 16 centres per block: too few codes to train on, and
            # brute force is fast at this size anyway. (An explicit
            # num_leaves is honoured, or refused, as asked.)
            logging.getLogger(__name__).warning(
                "ScannIndex: %d codes are too few for tree + AH (< %d); "
                "building a brute-force searcher", len(codes), AH_MIN_CODES)
            self.brute_force = True
        if self.brute_force:
            builder = builder.score_brute_force()
        else:
            self.num_leaves, self.num_leaves_to_search = self._requested_leaves
            if self.num_leaves is None:
                self.num_leaves = max(1, round(math.sqrt(len(codes))))
            if self.num_leaves > len(codes):
                raise ValueError(
                    f"`num_leaves` must be <= the number of codes "
                    f"({len(codes)}). Received: num_leaves={self.num_leaves}"
                )
            if self.num_leaves_to_search is None:
                self.num_leaves_to_search = math.ceil(self.num_leaves / 10)
            self.num_leaves_to_search = min(
                self.num_leaves_to_search, self.num_leaves
            )
            threshold = self.anisotropic_quantization_threshold
            builder = (
                builder.tree(
                    num_leaves=self.num_leaves,
                    num_leaves_to_search=self.num_leaves_to_search,
                    training_sample_size=self.training_sample_size,
                )
                .score_ah(
                    self.dimensions_per_block,
                    anisotropic_quantization_threshold=(
                        float("nan") if threshold is None else threshold
                    ),
                    training_sample_size=self.training_sample_size,
                )
                .reorder(self.reorder_k or 100)
            )
        # ScaNN logs its partitioner training through absl's C++ log on
        # stderr; quiet commands drop it (shrewd_tf.verbosity).
        with native_stderr_silenced():
            self._searcher = builder.build()

    def _add_engine(self, codes):
        # The raw searcher appends rows for `None` indices; no docids needed.
        self._searcher.searcher.upsert([None] * len(codes), codes, 1)

    def _search_rows(self, queries, k):
        if len(queries) == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        k_found = min(k, len(self))
        kwargs = {}
        if not self.brute_force:
            kwargs = {
                "leaves_to_search": self.num_leaves_to_search,
                "pre_reorder_num_neighbors": max(
                    k_found, self.reorder_k or max(4 * k_found, 100)
                ),
            }
        if self.num_threads > 1:
            self._searcher.set_num_threads(self.num_threads)
            rows, distances = self._searcher.search_batched_parallel(
                queries, k_found, **kwargs
            )
        else:
            rows, distances = self._searcher.search_batched(
                queries, k_found, **kwargs
            )
        rows = np.asarray(rows, dtype=np.int64)
        distances = np.asarray(distances, dtype=np.float32)
        # ScaNN pads short rows with row 0 and NaN distance.
        missing = ~np.isfinite(distances)
        if self.distance == "dot_product":
            distances = -distances
        rows[missing], distances[missing] = -1, np.inf
        return pad_columns(rows, distances, k, np.inf)

    def _write_engine(self, data_dir):
        scann_dir = os.path.join(data_dir, "scann")
        os.mkdir(scann_dir)
        self._searcher.serialize(scann_dir, relative_path=True)

    def _read_engine(self, data_dir, manifest):
        from scann.scann_ops.py import scann_ops_pybind

        self._searcher = scann_ops_pybind.load_searcher(
            os.path.join(data_dir, "scann"), assets_backcompat_shim=False
        )
        if self._searcher.size() != manifest["count"]:
            raise IndexFormatError(
                f"{os.path.join(data_dir, 'scann')} holds "
                f"{self._searcher.size()} codes; the manifest says "
                f"{manifest['count']}"
            )

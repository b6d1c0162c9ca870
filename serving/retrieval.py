"""Retrieval behind `POST /v1/search`: indexes, metadata, images.

A query is one of

* `{"image": {"b64": ...}}`: encoded image bytes, turned into a code by an
  encoder (`serving.encoders`: a model of this server's repository, or
  `:predict` forwarded to a TF Serving REST endpoint, `--encoder-url`);
* `{"code": [floats]}`: a float code [d];
* `{"bits": [ints] | {"b64": ...}}`: a packed binary code, d / 8 bytes, MSB
  first (`shrewd_tf.ops.bits.pack_bits`).

The "code" and "bits" keys are the model output names
(`shrewd_tf.contract.CODE_OUTPUT`, `BITS_OUTPUT`), the modes and the index
kind serving each are `shrewd_tf.contract.SERVING_MODES` and
`INDEX_KIND_TABLE`.

`"mode": "binary"` searches the Hamming index (`BinaryHammingIndex`): image
queries use the model's "bits" output (its "code" when the index re-ranks
by L1), code queries are binarised at 0.5 by the index. `"mode": "float"`
searches the ScaNN index with the float code (bits queries are refused).
The default mode is "binary" when a binary index is loaded, else "float".

The answer lists the non-padding neighbours, nearest first:
`{"results": [{"id", "distance", "metadata": {label, caption, image_uri},
"image_url"}], "mode", "distance", "exact", "recall", "recall_k", "k",
"model", "model_version"}`. "exact" is true when the index returns the
exact top-k (`index.is_exact`); "recall" is the recall the index's build
measured against exact search at the cut-off "recall_k" (the smallest
measured cut-off >= k, else the widest; `shrewd_tf.retrieval.recall`),
null for exact indexes and for approximate ones that recorded none. With a class-distance matrix (`--class-distances`), a request may
name the query's class (`"label": int`) and the answer adds "query_label"
and each result's "similarity" (`serving.semantic`).
"""

import logging
import mimetypes
import os
import urllib.parse

import grpc
import numpy as np

from serving.encoders import decode_b64
from serving.errors import ServingError
from serving.errors import invalid_argument
from serving.errors import not_found
from serving.index_info import distance_name
from serving.index_info import measured_recall
from serving.semantic import NoClassSimilarity
from shrewd_tf import contract
from shrewd_tf.contract import BITS_OUTPUT
from shrewd_tf.contract import CODE_OUTPUT
from shrewd_tf.ops.bits import unpack_bits
from shrewd_tf.retrieval.arrays import INT_ID_PAD
from shrewd_tf.retrieval.arrays import STR_ID_PAD

BINARY = contract.BINARY_MODE
FLOAT = contract.FLOAT_MODE
# A query is one of these keys: image bytes, or a code keyed like the
# model output it is.
IMAGE_QUERY = "image"
QUERY_KEYS = (IMAGE_QUERY, CODE_OUTPUT, BITS_OUTPUT)
IMAGE_TYPES = frozenset(
    ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"]
)


# === Metadata ===


def _metadata_rows(index, ids):
    """Metadata dicts of ids in `index` (set lookups, microseconds per id)."""
    return index.metadata(np.asarray(ids))


# === Search ===


class SearchService:
    """Answers `/v1/search`, `/v1/database` and `/v1/images/<id>`.

    Args:
        indexes: {mode: index}: "binary" a BinaryHammingIndex, "float" a
            ScannIndex (`contract.INDEX_KIND_TABLE`), either or both.
        encoder: `LocalEncoder`, `RemoteEncoder` or None (no image queries).
        default_model: model used for image queries without "model" (a
            name, or a callable returning one or None).
        max_k: largest k a request may ask for.
        image_root: folder images are served from; image_uri values are
            resolved against it and must stay inside it (None: no images).
        class_similarity: `serving.semantic.ClassSimilarity` annotating
            answers with class similarities, or None.
    """

    def __init__(
        self,
        indexes,
        encoder=None,
        default_model=None,
        max_k=1000,
        image_root=None,
        class_similarity=None,
    ):
        unknown = set(indexes) - set(contract.SERVING_MODES)
        if unknown:
            raise ValueError(
                f"`indexes` keys must be in {list(contract.SERVING_MODES)}. "
                f"Received: {sorted(unknown)}"
            )
        self.indexes = dict(indexes)
        self.encoder = encoder
        self.default_model = default_model
        self.max_k = max_k
        self.image_root = (
            None if image_root is None else os.path.realpath(image_root)
        )
        self.semantic = class_similarity or NoClassSimilarity()

    def describe(self):
        """{mode: {count, code_bits, distance, exact, recall, recall_k,
        index_type}}."""
        described = {}
        for mode, index in self.indexes.items():
            recall, recall_k = measured_recall(index)
            described[mode] = {
                "index_type": index.index_type,
                "count": len(index),
                "code_bits": index.code_width,
                "distance": distance_name(index),
                "exact": bool(index.is_exact),
                "recall": recall,
                "recall_k": recall_k,
            }
        return described

    # --- search ---

    def search(self, request):
        """Answers one search request (a parsed JSON object).

        Raises:
            ServingError: INVALID_ARGUMENT for malformed fields, k out of
                [1, max_k], a mode without an index, a query whose width does
                not match the index; NOT_FOUND for an unknown model; the
                encoder's errors for image queries.
        """
        if not isinstance(request, dict):
            raise invalid_argument(
                f"The search request must be a JSON object. Received: "
                f"{str(request)[:80]!r}"
            )
        if not self.indexes:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "No index is loaded: start the server with --binary-index "
                "and/or --float-index.",
            )
        mode = request.get("mode") or (
            BINARY if BINARY in self.indexes else FLOAT
        )
        if mode not in contract.SERVING_MODES:
            raise invalid_argument(
                f"'mode' must be one of {list(contract.SERVING_MODES)}. "
                f"Received: mode={mode!r}"
            )
        if mode not in self.indexes:
            raise invalid_argument(
                f"No {mode} index is loaded (loaded: {sorted(self.indexes)}). "
                f"Received: mode={mode!r}"
            )
        index = self.indexes[mode]
        k = request.get("k", 10)
        if (
            isinstance(k, bool)
            or not isinstance(k, int)
            or not 1 <= k <= self.max_k
        ):
            raise invalid_argument(
                f"'k' must be an integer in [1, {self.max_k}]. "
                f"Received: k={k!r}"
            )
        query_kinds = [key for key in QUERY_KEYS if key in request]
        if len(query_kinds) != 1:
            raise invalid_argument(
                "A search request needs exactly one of "
                f"{', '.join(repr(key) for key in QUERY_KEYS)}. "
                f"Received keys: {sorted(request)}"
            )
        query_label = self.semantic.request_label(request)
        model, version = None, None
        if IMAGE_QUERY in request:
            default = self.default_model
            model = request.get("model") or (
                default() if callable(default) else default
            )
            query, version, outputs = self._encode_image(
                model, request[IMAGE_QUERY], mode, index
            )
            if query_label is None:
                query_label = self.semantic.predicted_label(outputs, model)
        elif CODE_OUTPUT in request:
            query = self._float_query(request[CODE_OUTPUT], index)
        else:
            if mode != BINARY:
                raise invalid_argument(
                    f"'{BITS_OUTPUT}' queries search the binary index: use "
                    f"mode='{BINARY}'."
                )
            query = self._bits_query(request[BITS_OUTPUT], index)
        try:
            ids, distances = index.search(query[None, :], k)
        except ValueError as e:
            raise invalid_argument(f"Query rejected by the {mode} index: {e}")
        ids, distances = ids[0], distances[0]
        keep = ids != (STR_ID_PAD if ids.dtype.kind == "U" else INT_ID_PAD)
        ids, distances = ids[keep].tolist(), distances[keep]
        if distances.dtype == np.float32:  # shortest decimal, as in :predict
            distances = distances.astype(str).astype(np.float64)
        distances = distances.tolist()
        rows = _metadata_rows(index, ids)
        recall, recall_k = measured_recall(index, k)
        answer = {
            "model": model,
            "model_version": None if version is None else str(version),
            "mode": mode,
            "distance": distance_name(index),
            "exact": bool(index.is_exact),
            "recall": recall,
            "recall_k": recall_k,
            "k": k,
            "results": [
                {
                    "id": key,
                    "distance": distance,
                    "metadata": row,
                    "image_url": self._image_url(key, row),
                }
                for key, distance, row in zip(ids, distances, rows)
            ],
        }
        return self.semantic.annotate(answer, query_label)

    def _float_query(self, code, index):
        if not isinstance(code, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool)
            for x in code
        ):
            raise invalid_argument(
                f"'{CODE_OUTPUT}' must be a list of numbers. "
                f"Received: {str(code)[:80]!r}"
            )
        query = np.asarray(code, dtype=np.float32)
        self._check_width(query.shape[0], index, CODE_OUTPUT)
        if not np.all(np.isfinite(query)):
            raise invalid_argument(
                f"'{CODE_OUTPUT}' must be finite (no NaN/Infinity)."
            )
        return query

    def _bits_query(self, bits, index):
        if isinstance(bits, dict):
            packed = np.frombuffer(
                decode_b64(bits, BITS_OUTPUT), dtype=np.uint8
            )
        elif isinstance(bits, list) and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255
            for x in bits
        ):
            packed = np.asarray(bits, dtype=np.uint8)
        else:
            raise invalid_argument(
                f"'{BITS_OUTPUT}' must be packed bytes: a list of ints in "
                f'[0, 255] or {{"b64": ...}}. Received: {str(bits)[:80]!r}'
            )
        self._check_width(8 * packed.shape[0], index, BITS_OUTPUT)
        return unpack_bits(packed).astype(np.float32)

    def _check_width(self, width, index, what):
        if width != index.code_width:
            raise invalid_argument(
                f"'{what}' gives a {width}-bit query but the index holds "
                f"{index.code_width}-bit codes. Received: {width} bits"
            )

    def _encode_image(self, model, image, mode, index):
        if self.encoder is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "Image queries need an encoder: start the server with "
                "--export-root or --encoder-url.",
            )
        if not model:
            raise invalid_argument(
                "Image queries need 'model' (no default model configured)."
            )
        if not isinstance(model, str):
            raise invalid_argument(
                f"'model' must be a string. Received: {model!r}"
            )
        outputs, version = self.encoder.encode(
            model, decode_b64(image, IMAGE_QUERY)
        )
        wanted = CODE_OUTPUT
        if mode == BINARY and not index.rerank and BITS_OUTPUT in outputs:
            wanted = BITS_OUTPUT
        if wanted not in outputs:
            raise invalid_argument(
                f"Model {model} has no '{wanted}' output to search with. "
                f"Received outputs: {sorted(outputs)}"
            )
        value = np.asarray(outputs[wanted]).reshape(-1)
        if wanted == BITS_OUTPUT:
            self._check_width(
                8 * value.shape[0], index, f"{model} output bits"
            )
            return unpack_bits(value).astype(np.float32), version, outputs
        self._check_width(value.shape[0], index, f"{model} output code")
        return value.astype(np.float32), version, outputs

    # --- database listing and images ---

    def _main_index(self):
        if not self.indexes:
            return None
        return self.indexes.get(BINARY) or self.indexes[FLOAT]

    def _image_url(self, key, row):
        if self.image_root is None or not (row or {}).get("image_uri"):
            return None
        return "/v1/images/" + urllib.parse.quote(str(key), safe="")

    def items(self, offset=0, limit=24):
        """A page of database entries with their metadata, for the web page.

        Returns:
            {"count", "offset", "indexes": describe(), "items": [{"id",
            "metadata", "image_url"}], "classes": {"num_classes",
            "class_names", "min_similarity"} of the class-distance matrix,
            or None}.
        """
        index = self._main_index()
        page = (
            []
            if index is None
            else index.ids[offset : offset + limit].tolist()
        )
        rows = [] if index is None else _metadata_rows(index, page)
        return {
            "count": 0 if index is None else len(index),
            "offset": offset,
            "indexes": self.describe(),
            "classes": self.semantic.describe(),
            "items": [
                {
                    "id": key,
                    "metadata": row,
                    "image_url": self._image_url(key, row),
                }
                for key, row in zip(page, rows)
            ],
        }

    def image_file(self, id_text):
        """Resolves `/v1/images/<id>` to (local path, content type).

        The id is looked up in the index metadata (never used as a path);
        its image_uri (a relative path, an absolute path or a file:// URI)
        must resolve, after symlinks, inside `image_root` and name an image
        file type.

        Raises:
            ServingError: NOT_FOUND for an unknown id, no image_uri, a
                non-local URI, a path outside image_root, a missing file or
                a non-image type.
        """
        if self.image_root is None:
            raise not_found(
                "Image serving is off: start the server with --image-root."
            )
        index = self._main_index()
        if index is None:
            raise not_found("No index is loaded.")
        key = id_text
        if index.ids.dtype.kind != "U":
            try:
                key = int(id_text)
            except ValueError:
                raise not_found(f"No image for id {id_text!r}") from None
        try:
            row = index.metadata(np.asarray([key]))[0]
        except KeyError:
            row = None
        uri = (row or {}).get("image_uri")
        if not uri:
            raise not_found(f"No image for id {id_text!r}")
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "file":
            path = urllib.parse.unquote(parsed.path)
        elif parsed.scheme == "":
            path = uri
        else:
            raise not_found(
                f"Image of id {id_text!r} is not a local file: {uri!r}"
            )
        path = os.path.realpath(os.path.join(self.image_root, path))
        if os.path.commonpath([path, self.image_root]) != self.image_root:
            logging.warning("Refused image %r outside image_root", uri)
            raise not_found(f"Image of id {id_text!r} is outside image_root")
        content_type = mimetypes.guess_type(path)[0]
        if content_type not in IMAGE_TYPES:
            raise not_found(
                f"Image of id {id_text!r} is not an image file type"
            )
        if not os.path.isfile(path):
            raise not_found(f"Image file of id {id_text!r} is missing")
        return path, content_type

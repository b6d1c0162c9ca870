"""The metadata table of an index: {id: {column: JSON value}}.

Columns such as label, caption and image_uri are stored per id and saved
as `metadata.jsonl` (`shrewd_tf.retrieval.files`), one JSON object per id:
`{"id": 3, "label": 1, "caption": "...", "image_uri": "..."}`.
"""

import json

import numpy as np


def json_value(value):
    """Converts NumPy scalars to plain Python values for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def update_metadata(table, ids, index_ids, columns):
    """Merges `columns` into the rows of `ids` in `table`, in place.

    Args:
        table: {id: row dict}, the index's metadata table.
        ids: [M] ids already in the index.
        index_ids: the index's ids.
        columns: {name: [M] JSON-serialisable values}.

    Raises:
        ValueError: on unknown ids, length mismatch, values JSON cannot
            hold (NaN included) or the column "id", quoting the value.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(
            f"`ids` must be 1-D. Received: ids.shape={ids.shape}"
        )
    unknown = ~np.isin(ids, index_ids)
    if np.any(unknown):
        raise ValueError(
            f"`ids` not in the index. Received: ids={ids[unknown][:5]!r}"
        )
    if "id" in columns:
        raise ValueError('"id" is reserved; name the column otherwise.')
    for name, values in columns.items():
        if len(values) != len(ids):
            raise ValueError(
                f"Column `{name}` must have one value per id "
                f"({len(ids)}). Received: len({name})={len(values)}"
            )
        for value in values:
            try:
                json.dumps(json_value(value), allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"Column `{name}` values must be JSON-serialisable "
                    f"(no NaN). Received: {value!r}"
                ) from e
    for row, key in enumerate(ids.tolist()):
        entry = table.setdefault(key, {})
        for name, values in columns.items():
            entry[name] = json_value(values[row])


class SortedIds:
    """Membership of ids by binary search over the index's ids, sorted.

    Holds the id array itself when it is sorted (the builder writes rows
    sorted by id), else one sorted copy: no Python set of N ids (at 10M
    int ids a set took about 1 s to build, hundreds of MB, and 0.29 s per
    full garbage collection to traverse). Looking up k ids costs O(k log N).
    """

    def __init__(self, ids):
        ids = np.asarray(ids)
        if len(ids) > 1 and not np.all(ids[1:] >= ids[:-1]):
            ids = np.sort(ids)
        self.ids = ids

    def contains(self, keys):
        """bool [M]: which of `keys` ([M]) are ids of the index."""
        keys = np.asarray(keys)
        numeric = "biuf"
        if not len(self.ids) or not (
            (keys.dtype.kind in numeric and self.ids.dtype.kind in numeric)
            or (keys.dtype.kind == "U" and self.ids.dtype.kind == "U")
        ):
            return np.zeros(keys.shape, bool)
        at = np.searchsorted(self.ids, keys)
        found = np.zeros(keys.shape, bool)
        inside = at < len(self.ids)
        found[inside] = self.ids[at[inside]] == keys[inside]
        return found


def metadata_rows(table, ids, known_ids, pad):
    """Returns the rows of `ids` ([M] or [Q, k] from a search).

    Args:
        table: {id: row dict}.
        ids: [M] or [Q, k] ids.
        known_ids: a `SortedIds` of the index's ids.
        pad: the id that pads missing neighbours.

    Returns:
        A list (of lists for 2-D ids) of dicts; {} for ids without
        metadata, None for padding ids.

    Raises:
        KeyError: for ids that are neither in the index nor padding.
    """
    ids = np.asarray(ids)
    if ids.ndim == 2:
        return [metadata_rows(table, row, known_ids, pad) for row in ids]
    rows = []
    known = known_ids.contains(ids) if len(ids) else ()
    for key, is_known in zip(ids.tolist(), known):
        if key == pad:
            rows.append(None)
        elif not is_known:
            raise KeyError(f"id {key!r} is not in the index")
        else:
            rows.append(dict(table.get(key, {})))
    return rows

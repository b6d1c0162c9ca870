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


def metadata_rows(table, ids, known_ids, pad):
    """Returns the rows of `ids` ([M] or [Q, k] from a search).

    Args:
        table: {id: row dict}.
        ids: [M] or [Q, k] ids.
        known_ids: the set of the index's ids.
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
    for key in ids.tolist():
        if key == pad:
            rows.append(None)
        elif key not in known_ids:
            raise KeyError(f"id {key!r} is not in the index")
        else:
            rows.append(dict(table.get(key, {})))
    return rows

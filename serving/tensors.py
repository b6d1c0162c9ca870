"""Tensor codecs: TF Serving's REST JSON and gRPC `TensorProto` <-> NumPy.

REST (https://www.tensorflow.org/tfx/serving/api_rest):

* Row format `{"instances": [...]}`: one entry per example; for a
  signature with one input an entry is the value itself (or an object with
  that input's name), for several inputs an object `{name: value}`. The
  answer is `{"predictions": [...]}`: values for a single output, objects
  `{name: value}` for several.
* Columnar format `{"inputs": value | {name: value}}` answered by
  `{"outputs": value | {name: value}}`.
* DT_STRING values are JSON strings (UTF-8) or `{"b64": "<base64>"}`;
  string outputs whose name ends in `_bytes` (or that are not UTF-8) are
  answered as `{"b64": ...}`.
* float32 outputs are written with the shortest decimal that reads back as
  the same float32 (0.1, not 0.10000000149011612); NaN and Infinity as
  JSON's extensions, as TF Serving writes them.

Every malformed value raises `ServingError(INVALID_ARGUMENT)` quoting what
was received.
"""

import base64
import binascii

import numpy as np
import tensorflow as tf

from serving.errors import invalid_argument

_MAX_QUOTE = 80


def _quote(value):
    text = repr(value)
    return text if len(text) <= _MAX_QUOTE else text[:_MAX_QUOTE] + "..."


# === JSON -> NumPy ===


def _decode_strings(value, path):
    """Nested lists of str / {"b64": str} -> nested lists of bytes."""
    if isinstance(value, list):
        return [
            _decode_strings(v, f"{path}[{i}]") for i, v in enumerate(value)
        ]
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"}:
        encoded = value["b64"]
        if not isinstance(encoded, str):
            raise invalid_argument(
                f"{path}: 'b64' must be a base64 string. "
                f"Received: {_quote(encoded)}"
            )
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise invalid_argument(
                f"{path}: unable to base64-decode ({e}). "
                f"Received: {_quote(encoded)}"
            ) from None
    raise invalid_argument(
        f'{path}: a DT_STRING value must be a string or {{"b64": ...}}. '
        f"Received: {_quote(value)}"
    )


def _nested_shape(value, path):
    """Shape of rectangular nested lists; raises on ragged lists."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = _nested_shape(value[0], f"{path}[0]")
    for i, item in enumerate(value[1:], start=1):
        if _nested_shape(item, f"{path}[{i}]") != inner:
            raise invalid_argument(
                f"{path}: lists of unequal lengths (ragged tensor). "
                f"Received: {_quote(value)}"
            )
    return (len(value),) + inner


def json_to_array(value, dtype, path):
    """Converts a JSON value into an array of `dtype`.

    Args:
        value: nested lists of numbers / booleans / strings / b64 objects.
        dtype: `tf.DType` the tensor must have.
        path: where the value sits in the request, for error messages.

    Returns:
        np.ndarray of `dtype.as_numpy_dtype` (object of bytes for strings).

    Raises:
        ServingError: INVALID_ARGUMENT on ragged lists, wrong value types,
            bad base64, non-integral or out-of-range integers.
    """
    if dtype == tf.string:
        strings = _decode_strings(value, path)
        return _to_object(strings, _nested_shape(strings, path))
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise invalid_argument(
            f"{path}: lists of unequal lengths (ragged tensor) or mixed "
            "values. "
            f"Received: {_quote(value)}"
        ) from None
    numpy_dtype = np.dtype(dtype.as_numpy_dtype)
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(numpy_dtype)
    if numpy_dtype.kind == "b":
        if kind != "b":
            raise invalid_argument(
                f"{path}: expected booleans for {dtype.name}. "
                f"Received: {_quote(value)}"
            )
        return array
    if kind not in "biuf":
        raise invalid_argument(
            f"{path}: expected numbers for {dtype.name}. "
            f"Received: {_quote(value)}"
        )
    if numpy_dtype.kind in "iu":
        if kind == "f":
            raise invalid_argument(
                f"{path}: expected integers for {dtype.name}. "
                f"Received: {_quote(value)}"
            )
        info = np.iinfo(numpy_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise invalid_argument(
                f"{path}: values out of range [{info.min}, {info.max}] for "
                f"{dtype.name}. Received: min={array.min()}, max={array.max()}"
            )
    return array.astype(numpy_dtype)


def _to_object(nested, shape):
    """Fills an object array of `shape` from nested lists of bytes."""
    flat = []

    def walk(items, depth):
        if depth == len(shape):
            flat.append(items)
        else:
            for item in items:
                walk(item, depth + 1)

    walk(nested, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _is_named_object(value, names):
    """True if `value` is an object keyed by input names (not a b64 leaf)."""
    return isinstance(value, dict) and not (
        set(value) == {"b64"} and "b64" not in names
    )


def parse_instances(instances, input_specs):
    """Row format: `instances` list -> {input name: batched array}.

    Args:
        instances: the JSON list of examples.
        input_specs: {name: tf.TensorSpec} of the signature.

    Raises:
        ServingError: INVALID_ARGUMENT on an empty or malformed list.
    """
    if not isinstance(instances, list) or not instances:
        raise invalid_argument(
            "'instances' must be a non-empty list. "
            f"Received: {_quote(instances)}"
        )
    names = sorted(input_specs)
    columns = {name: [] for name in names}
    for i, instance in enumerate(instances):
        if _is_named_object(instance, names):
            if set(instance) != set(names):
                raise invalid_argument(
                    f"instances[{i}] must have exactly the keys {names}. "
                    f"Received keys: {sorted(instance)}"
                )
            for name in names:
                columns[name].append(instance[name])
        elif len(names) == 1:
            columns[names[0]].append(instance)
        else:
            raise invalid_argument(
                f"instances[{i}] must be an object with keys {names} (the "
                f"signature has several inputs). Received: {_quote(instance)}"
            )
    return {
        name: json_to_array(
            column, input_specs[name].dtype, f"instances.{name}"
        )
        for name, column in columns.items()
    }


def parse_inputs(inputs, input_specs):
    """Columnar format: `inputs` value or {name: value} -> {name: array}."""
    names = sorted(input_specs)
    if _is_named_object(inputs, names):
        if set(inputs) != set(names):
            raise invalid_argument(
                f"'inputs' must have exactly the keys {names}. "
                f"Received keys: {sorted(inputs)}"
            )
        values = inputs
    elif len(names) == 1:
        values = {names[0]: inputs}
    else:
        raise invalid_argument(
            f"'inputs' must be an object with keys {names} (the signature "
            f"has several inputs). Received: {_quote(inputs)}"
        )
    return {
        name: json_to_array(
            values[name], input_specs[name].dtype, f"inputs.{name}"
        )
        for name in names
    }


# === NumPy -> JSON ===


def array_to_json(array, name):
    """Converts an output array to nested JSON lists (see module docstring)."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        # Shortest decimal that reads back as the same float32.
        return array.astype(str).astype(np.float64).tolist()
    if array.dtype.kind in "OSU":
        as_b64 = name.endswith("_bytes")
        return _strings_to_json(array.tolist(), as_b64)
    return array.tolist()


def _strings_to_json(value, as_b64):
    if isinstance(value, list):
        return [_strings_to_json(v, as_b64) for v in value]
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def format_predictions(outputs):
    """Row format answer: {name: array [B, ...]} -> list of B entries.

    Raises:
        ServingError: INVALID_ARGUMENT when outputs disagree on the batch
            size (row format needs one).
    """
    sizes = {
        name: (array.shape[0] if np.ndim(array) else None)
        for name, array in outputs.items()
    }
    if None in sizes.values() or len(set(sizes.values())) > 1:
        raise invalid_argument(
            "Row format ('instances') needs outputs with one common batch "
            f"size; use 'inputs'. Received output batch sizes: {sizes}"
        )
    columns = {name: array_to_json(a, name) for name, a in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    names = sorted(columns)
    size = next(iter(sizes.values()))
    return [{name: columns[name][i] for name in names} for i in range(size)]


def format_outputs(outputs):
    """Columnar answer: a single output's value, or {name: value}."""
    columns = {name: array_to_json(a, name) for name, a in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return columns


# === TensorProto <-> NumPy ===


# A TensorProto may give fewer values than its shape holds (the last one
# repeats); past this many elements that would let a few bytes allocate
# gigabytes, so the values must all be there.
MAX_PADDED_ELEMENTS = 2**20


def _check_proto_size(proto, path):
    """Refuses shapes the proto's values do not fill (before allocating)."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise invalid_argument(
            f"{path}: negative dimension in the TensorProto shape. "
            f"Received: {dims}"
        )
    elements = int(np.prod(dims, dtype=object)) if dims else 1
    if proto.tensor_content:
        try:
            item_size = tf.as_dtype(proto.dtype).size
        except (TypeError, ValueError, KeyError):
            return  # make_ndarray refuses the dtype
        if len(proto.tensor_content) != elements * item_size:
            raise invalid_argument(
                f"{path}: tensor_content holds {len(proto.tensor_content)} "
                f"bytes; shape {dims} of {tf.as_dtype(proto.dtype).name} "
                f"needs {elements * item_size}"
            )
        return
    values = sum(
        len(value)
        for field, value in proto.ListFields()
        if field.name.endswith("_val")
    )
    if elements > max(values, MAX_PADDED_ELEMENTS):
        raise invalid_argument(
            f"{path}: shape {dims} has {elements} elements but the "
            f"TensorProto gives {values} values"
        )


def tensor_proto_to_array(proto, path):
    """`tensorflow.TensorProto` -> np.ndarray (object of bytes for strings).

    Raises:
        ServingError: INVALID_ARGUMENT for protos that do not decode, or
            whose shape is larger than their content (past
            MAX_PADDED_ELEMENTS elements).
    """
    _check_proto_size(proto, path)
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError, KeyError) as e:
        raise invalid_argument(f"{path}: cannot decode the TensorProto ({e})")


def array_to_tensor_proto(array):
    """np.ndarray -> `tensorflow.TensorProto`."""
    return tf.make_tensor_proto(np.asarray(array))

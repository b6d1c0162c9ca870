"""REST JSON and TensorProto codecs (serving.tensors)."""

import base64
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import tensors
from serving.errors import ServingError
from serving.errors import from_tensorflow_error

STRING = tf.TensorSpec([None], tf.string)
PIXELS = tf.TensorSpec([None, 2, 2, 3], tf.float32)


def _invalid(function, *args):
    with pytest.raises(ServingError) as info:
        function(*args)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.http_status == 400
    return info.value.message


def test_row_format_single_input_accepts_bare_and_named_values():
    data = [b"\x00\xffpng", b"abc"]
    bare = [{"b64": base64.b64encode(d).decode()} for d in data]
    named = [{"image_bytes": value} for value in bare]
    specs = {"image_bytes": STRING}
    for instances in (bare, named):
        arrays = tensors.parse_instances(instances, specs)
        assert arrays["image_bytes"].dtype == object
        assert arrays["image_bytes"].tolist() == data


def test_row_format_multiple_inputs_need_objects():
    specs = {
        "a": tf.TensorSpec([None], tf.int32),
        "b": tf.TensorSpec([None, 2], tf.float32),
    }
    arrays = tensors.parse_instances(
        [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4.5]}], specs
    )
    np.testing.assert_array_equal(arrays["a"], np.array([1, 2], np.int32))
    assert arrays["a"].dtype == np.int32
    np.testing.assert_array_equal(
        arrays["b"], np.array([[1, 2], [3, 4.5]], np.float32)
    )
    assert "keys ['a', 'b']" in _invalid(
        tensors.parse_instances, [[1, 2]], specs
    )
    assert "Received keys: ['a']" in _invalid(
        tensors.parse_instances, [{"a": 1}], specs
    )


def test_columnar_format_value_or_object():
    pixels = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    for inputs in (pixels.tolist(), {"pixels": pixels.tolist()}):
        arrays = tensors.parse_inputs(inputs, {"pixels": PIXELS})
        np.testing.assert_array_equal(arrays["pixels"], pixels)


@pytest.mark.parametrize(
    "value, dtype, expected",
    [
        ([[1, 2], [3]], tf.float32, "ragged"),
        (["a", "b"], tf.float32, "expected numbers"),
        ([1.5], tf.int32, "expected integers"),
        ([300], tf.uint8, "out of range [0, 255]"),
        ([1, 0], tf.bool, "expected booleans"),
        ([{"b64": "%%%"}], tf.string, "unable to base64-decode"),
        ([{"b64": 3}], tf.string, "must be a base64 string"),
        ([[{"b64": ""}], []], tf.string, "ragged"),
        ([7], tf.string, "DT_STRING value must be a string"),
    ],
)
def test_bad_json_values_are_invalid_argument(value, dtype, expected):
    message = _invalid(tensors.json_to_array, value, dtype, "inputs.x")
    assert expected in message
    assert message.startswith("inputs.x")


def test_empty_or_non_list_instances_are_refused():
    assert "non-empty list" in _invalid(
        tensors.parse_instances, [], {"x": STRING}
    )
    assert "non-empty list" in _invalid(
        tensors.parse_instances, {"x": 1}, {"x": STRING}
    )


def test_float32_outputs_round_trip_through_json_exactly():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 7)).astype(np.float32)
    values[0, 0] = np.float32(0.1)
    text = json.dumps(tensors.array_to_json(values, "code"))
    back = np.asarray(json.loads(text), dtype=np.float32)
    np.testing.assert_array_equal(back, values)
    # Shortest decimal, as TF Serving writes, not float64's expansion.
    assert text.startswith("[[0.1,")


def test_predictions_are_rows_and_outputs_are_columns():
    outputs = {
        "code": np.array([[0.5, 0.25], [1.0, 0.0]], np.float32),
        "bits": np.array([[128], [0]], np.uint8),
    }
    assert tensors.format_predictions(outputs) == [
        {"bits": [128], "code": [0.5, 0.25]},
        {"bits": [0], "code": [1.0, 0.0]},
    ]
    assert tensors.format_predictions({"code": outputs["code"]}) == [
        [0.5, 0.25],
        [1.0, 0.0],
    ]
    assert tensors.format_outputs(outputs) == {
        "code": [[0.5, 0.25], [1.0, 0.0]],
        "bits": [[128], [0]],
    }
    assert tensors.format_outputs({"bits": outputs["bits"]}) == [[128], [0]]
    mixed = {"code": outputs["code"], "scalar": np.float32(1.0)}
    assert "common batch size" in _invalid(tensors.format_predictions, mixed)


def test_string_outputs_are_text_or_b64():
    strings = np.array([b"caf\xc3\xa9", b"\xff\x00"], dtype=object)
    assert tensors.array_to_json(strings, "caption") == [
        "café",
        {"b64": base64.b64encode(b"\xff\x00").decode()},
    ]
    assert tensors.array_to_json(strings[:1], "thumbnail_bytes") == [
        {"b64": base64.b64encode(b"caf\xc3\xa9").decode()},
    ]


def test_tensor_proto_round_trip():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    back = tensors.tensor_proto_to_array(
        tensors.array_to_tensor_proto(array), "x"
    )
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np.uint8


def test_tensorflow_errors_keep_the_op_message_and_code():
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        tf.io.decode_png(b"not a png")
    error = from_tensorflow_error(info.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unknown image file format" in error.message
    assert "Graph execution error" not in error.message


def test_graph_wrapping_is_dropped_from_an_assert_message():
    @tf.function
    def check(x):
        tf.debugging.Assert(x < 0, ["x must be negative, got", x])
        return x

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        check(tf.constant(3))
    assert "[[{{node Assert/Assert}}]]" in str(info.value.message)
    error = from_tensorflow_error(info.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "x must be negative, got] [3"
    # As a SavedModel's functions word it (map_fn bodies, loaded graphs).
    nested = tf.errors.InvalidArgumentError(
        None, None,
        "{{function_node __inference_encode_images_992}} assertion failed: "
        "[image is 20 x 20, over max_image_pixels=100]\n\t "
        "[[{{node map/while/Assert/Assert}}]] [Op:__inference_f_1]",
    )
    assert from_tensorflow_error(nested).message == (
        "image is 20 x 20, over max_image_pixels=100"
    )


def test_tensor_protos_larger_than_their_values_are_refused_fast():
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.core.framework import types_pb2

    tensor_proto_to_array = tensors.tensor_proto_to_array
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    strings.tensor_shape.dim.add(size=10**9)
    strings.string_val.append(b"x")
    with pytest.raises(ServingError, match="1000000000 elements"):
        tensor_proto_to_array(strings, "inputs.x")
    content = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    content.tensor_shape.dim.add(size=2**40)
    content.tensor_content = b"\0" * 8
    with pytest.raises(ServingError, match="tensor_content holds 8 bytes"):
        tensor_proto_to_array(content, "inputs.x")
    negative = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    negative.tensor_shape.dim.add(size=-1)
    with pytest.raises(ServingError, match="negative dimension"):
        tensor_proto_to_array(negative, "inputs.x")
    padded = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    padded.tensor_shape.dim.add(size=4)
    padded.float_val.append(0.5)  # TF repeats the last value
    assert tensor_proto_to_array(padded, "inputs.x").tolist() == [0.5] * 4

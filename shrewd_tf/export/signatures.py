"""What a SavedModel's saved_model.pb says, read without loading it.

Reading the protocol buffer is fast and needs no variables: the server
reads the SignatureDefs of a version for its metadata APIs
(`signature_defs`), the Beam jobs check a signature before they build a
pipeline (`inspect_signature`), and the export checks that its graph uses
only ops stock TF Serving has (`saved_model_op_types`, `non_core_ops`).

Paths may be on any file system `tf.io.gfile` reads.

Example:
    info = inspect_signature("exports/shrewd/3")  # serving_default, "code"
    info.input_name, info.outputs["code"]         # "images", (None, 64)
"""

import dataclasses
import os

from shrewd_tf import contract


def read_saved_model(export_dir):
    """The `SavedModel` proto of `export_dir`'s saved_model.pb.

    Raises:
        tf.errors.NotFoundError: no saved_model.pb there.
        google.protobuf.message.DecodeError: not a SavedModel.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    path = os.path.join(os.fspath(export_dir), contract.SAVED_MODEL_FILE)
    with tf.io.gfile.GFile(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def signature_defs(export_dir, tag=contract.SERVE_TAG):
    """{key: SignatureDef} of the MetaGraphDef tagged `tag`.

    Raises:
        ValueError: no MetaGraphDef carries `tag`.
    """
    for meta_graph in read_saved_model(export_dir).meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    path = os.path.join(os.fspath(export_dir), contract.SAVED_MODEL_FILE)
    raise ValueError(f"{path} has no MetaGraphDef tagged {tag!r}")


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """What a SavedModel signature takes and returns.

    Attributes:
        input_name: the name of its single tf.string input.
        outputs: {output name: shape tuple, None for unknown dimensions}.
    """

    input_name: str
    outputs: dict


def inspect_signature(
    saved_model_dir,
    signature=contract.SERVING_SIGNATURE,
    output_key=contract.CODE_OUTPUT,
):
    """Checks a signature that encodes images, from saved_model.pb.

    Args:
        saved_model_dir: a SavedModel directory.
        signature: the signature key.
        output_key: the output holding the float codes.

    Returns:
        `SignatureInfo`.

    Raises:
        ValueError: if the signature is missing, does not take exactly one
            tf.string input, or lacks `output_key`; quoting what it has.
    """
    import tensorflow as tf

    signatures = signature_defs(saved_model_dir)
    if signature not in signatures:
        raise ValueError(
            f"{saved_model_dir} has no signature {signature!r}. "
            f"Available: {sorted(signatures)}"
        )
    definition = signatures[signature]
    inputs = {
        name: tf.dtypes.as_dtype(info.dtype).name
        for name, info in definition.inputs.items()
    }
    if len(inputs) != 1 or next(iter(inputs.values())) != "string":
        raise ValueError(
            f"Signature {signature!r} must take one tf.string input of "
            f"encoded images [N]. Received inputs: {inputs}"
        )
    outputs = {
        name: tuple(
            None if dim.size < 0 else dim.size
            for dim in info.tensor_shape.dim
        )
        for name, info in definition.outputs.items()
    }
    if output_key not in outputs:
        raise ValueError(
            f"Signature {signature!r} has no output {output_key!r}. "
            f"Received outputs: {sorted(outputs)}"
        )
    return SignatureInfo(next(iter(inputs)), outputs)


def saved_model_op_types(export_dir):
    """Every op type in a SavedModel's graphs and function library.

    Args:
        export_dir: a SavedModel directory (holding saved_model.pb).

    Returns:
        set of str, e.g. {"Conv2D", "DecodeImage", ...}.
    """
    op_types = set()
    for meta_graph in read_saved_model(export_dir).meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
    return op_types


def non_core_ops(op_types):
    """The op types that stock TensorFlow (and so TF Serving) does not have.

    Core ops are those of `tf.raw_ops`, which lists the ops built into
    TensorFlow; ops of loaded libraries (ScaNN, TF Text, TF Addons) are not
    in it.

    Args:
        op_types: iterable of op type names.

    Returns:
        sorted list of the names not in `tf.raw_ops`.
    """
    import tensorflow as tf

    return sorted(op for op in set(op_types) if not hasattr(tf.raw_ops, op))

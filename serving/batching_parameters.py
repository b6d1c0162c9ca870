"""`BatchingParameters`: TF Serving's `--batching_parameters_file`, read.

The file is TF Serving's text-format `tensorflow.serving.BatchingParameters`
protocol buffer (session_bundle_config.proto), e.g.

```
max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
```

so one file configures both this server (`shrewd serve --enable-batching
--batching-parameters-file F`) and tensorflow_model_server. It is parsed by
protobuf's own text-format parser against a descriptor of that message
built here (the tensorflow-serving-api package does not ship it), so the
syntax, comments and error positions are protobuf's. Fields left out take
TF Serving's defaults (SharedBatchScheduler::QueueOptions), except
`num_batch_threads`, which defaults to the CPU count as TF Serving's does.
"""

import dataclasses
import os

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2

_INT64_FIELDS = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
)


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """How concurrent requests are batched (`serving.batching`).

    Attributes:
        max_batch_size: most rows (the first dimension, summed over the
            requests) in one batch; a request with more is refused.
        batch_timeout_micros: how long the oldest request of a batch that
            is not full may wait for more before the batch runs (0: run
            whatever is queued as soon as a batch thread is free).
        max_enqueued_batches: batches waiting per queue (one queue per
            signature and input shape); a request that needs one more is
            answered UNAVAILABLE.
        num_batch_threads: threads running batches (TensorFlow calls), for
            all models together.
        thread_pool_name: name prefix of those threads.
        allowed_batch_sizes: if not empty, increasing sizes ending at
            max_batch_size; a batch is padded (repeating its first row) up
            to the next one, so a compiled model sees few shapes.
        pad_variable_length_inputs: accepted for compatibility; requests
            whose non-batch dimensions differ are batched separately, so
            nothing needs padding.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(
        default_factory=lambda: os.cpu_count() or 1
    )
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches",
                     "num_batch_threads"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("batch_timeout_micros", self.batch_timeout_micros, 0)
        sizes = tuple(self.allowed_batch_sizes)
        object.__setattr__(self, "allowed_batch_sizes", sizes)
        for size in sizes:
            _check_int("allowed_batch_sizes", size, minimum=1)
        if sizes and (
            list(sizes) != sorted(set(sizes))
            or sizes[-1] != self.max_batch_size
        ):
            raise ValueError(
                "`allowed_batch_sizes` must be increasing and end at "
                f"max_batch_size={self.max_batch_size}. "
                f"Received: {list(sizes)}"
            )

    def padded_size(self, size):
        """The batch size `size` rows run at (the next allowed size)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _message_class():
    """The BatchingParameters message class, from a descriptor built here."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="shrewd_batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    Field = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(_INT64_FIELDS, start=1):
        message.field.add(
            name=name,
            number=number,
            type=Field.TYPE_MESSAGE,
            type_name=".google.protobuf.Int64Value",
            label=Field.LABEL_OPTIONAL,
        )
    message.field.add(
        name="thread_pool_name",
        number=5,
        type=Field.TYPE_MESSAGE,
        type_name=".google.protobuf.StringValue",
        label=Field.LABEL_OPTIONAL,
    )
    message.field.add(
        name="allowed_batch_sizes",
        number=6,
        type=Field.TYPE_INT64,
        label=Field.LABEL_REPEATED,
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=Field.TYPE_BOOL,
        label=Field.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


_MESSAGE = None


def parse_batching_parameters(text, source="<text>"):
    """`BatchingParameters` from TF Serving's text format.

    Raises:
        ValueError: a syntax error or unknown field (with `source` and the
            line:column protobuf reports), or a value out of range.
    """
    global _MESSAGE
    if _MESSAGE is None:
        _MESSAGE = _message_class()
    proto = _MESSAGE()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise ValueError(
            f"{source}: not a TF Serving BatchingParameters text proto: {e} "
            "(fields: max_batch_size { value: N }, batch_timeout_micros, "
            "max_enqueued_batches, num_batch_threads, thread_pool_name, "
            "allowed_batch_sizes: N, pad_variable_length_inputs: B)"
        ) from None
    values = {
        name: getattr(proto, name).value
        for name in _INT64_FIELDS
        if proto.HasField(name)
    }
    if proto.HasField("thread_pool_name"):
        values["thread_pool_name"] = proto.thread_pool_name.value
    values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = proto.pad_variable_length_inputs
    try:
        return BatchingParameters(**values)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def read_batching_parameters_file(path):
    """`parse_batching_parameters` of a file (any `shrewd_tf.io` path)."""
    from shrewd_tf import io

    return parse_batching_parameters(io.read_text(path), source=path)

"""BatchingParameters: TF Serving's text format, defaults, validation, CLI."""

import argparse
import os

import pytest

from serving import config as serving_config
from serving.batching_parameters import BatchingParameters
from serving.batching_parameters import parse_batching_parameters
from serving.batching_parameters import read_batching_parameters_file

# As in TF Serving's batching guide (wrappers for scalars, repeated ints).
TF_SERVING_FILE = """
# batching for the SHREWD encoder
max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
thread_pool_name { value: "shrewd_batch" }
allowed_batch_sizes: 8
allowed_batch_sizes: 16
allowed_batch_sizes: 32
pad_variable_length_inputs: true
"""


def test_tf_serving_text_format_is_read_field_by_field():
    p = parse_batching_parameters(TF_SERVING_FILE)
    assert p == BatchingParameters(
        max_batch_size=32,
        batch_timeout_micros=2000,
        max_enqueued_batches=100,
        num_batch_threads=2,
        thread_pool_name="shrewd_batch",
        allowed_batch_sizes=(8, 16, 32),
        pad_variable_length_inputs=True,
    )


def test_missing_fields_take_tf_serving_defaults():
    p = parse_batching_parameters("max_batch_size { value: 64 }")
    assert p.max_batch_size == 64
    assert p.batch_timeout_micros == 0
    assert p.max_enqueued_batches == 10
    assert p.num_batch_threads == (os.cpu_count() or 1)
    assert p.allowed_batch_sizes == ()
    assert BatchingParameters().max_batch_size == 1000


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("max_batch_sise { value: 3 }", 'no field named "max_batch_sise"'),
        ("max_batch_size: 3", "1:"),  # a wrapper needs { value: N }
        ("max_batch_size { value: 0 }", "max_batch_size=0"),
        ("num_batch_threads { value: -1 }", "num_batch_threads=-1"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4",
            "end at max_batch_size=8",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 8 "
            "allowed_batch_sizes: 4",
            "increasing",
        ),
    ],
)
def test_bad_files_name_the_source_and_the_problem(text, fragment):
    with pytest.raises(ValueError) as error:
        parse_batching_parameters(text, source="batching.txt")
    assert str(error.value).startswith("batching.txt: ")
    assert fragment in str(error.value)


def test_padded_size_is_the_next_allowed_size():
    p = BatchingParameters(max_batch_size=32, allowed_batch_sizes=(8, 32))
    assert [p.padded_size(n) for n in (1, 8, 9, 32)] == [8, 8, 32, 32]
    assert BatchingParameters(max_batch_size=32).padded_size(5) == 5


def _args(*argv):
    parser = serving_config.add_arguments(argparse.ArgumentParser())
    return serving_config.config_from_args(
        parser.parse_args(["--export-root", "exports", *argv])
    )


def test_command_line_enables_batching_as_tensorflow_model_server(tmp_path):
    assert _args().batching is None
    assert _args("--enable-batching").batching == BatchingParameters()
    path = tmp_path / "batching.txt"
    path.write_text(TF_SERVING_FILE)
    config = _args("--batching-parameters-file", str(path))
    assert config.batching == read_batching_parameters_file(str(path))
    with pytest.raises(ValueError, match="cannot be read"):
        _args("--batching-parameters-file", str(tmp_path / "missing.txt"))

"""The jobs' shared options: Beam runner default and typed entry points."""

import dataclasses

import pytest

from pipeline import build_index
from pipeline import embed_captions
from pipeline import label_distances
from pipeline import make_tfrecords
from pipeline import options as options_lib

# Each job's options type with the least command line that builds it.
JOBS = {
    "make_tfrecords": (
        make_tfrecords, make_tfrecords.MakeTFRecordsOptions,
        {"source": "fashion_mnist", "output_dir": "out"},
        ["--source", "fashion_mnist", "--output-dir", "out"]),
    "embed_captions": (
        embed_captions, embed_captions.EmbedCaptionsOptions,
        {"input_dir": "in", "output_dir": "out"},
        ["--input-dir", "in", "--output-dir", "out"]),
    "label_distances": (
        label_distances, label_distances.LabelDistancesOptions,
        {"kind": "wup", "output": "out", "dataset": "cifar100"},
        ["--kind", "wup", "--output", "out", "--dataset", "cifar100"]),
    "build_index": (
        build_index, build_index.BuildIndexOptions,
        {"tfrecord_dir": "in", "saved_model": "m", "output_dir": "out",
         # The flags always name the ScaNN distance (its default).
         "scann_params": {"distance": "squared_l2", "brute_force": False}},
        ["--tfrecord-dir", "in", "--saved-model", "m", "--output-dir", "out"]),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_flag_defaults_are_the_options_defaults(job):
    module, options_type, required, argv = JOBS[job]
    parsed = module.parse_options(argv + ["--direct_num_workers=2"])
    assert isinstance(parsed, options_type)
    expected = options_type(**required, beam_args=("--direct_num_workers=2",))
    assert parsed == expected
    assert dataclasses.is_dataclass(options_type)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.beam_args = ()


@pytest.mark.parametrize("job", sorted(JOBS))
def test_run_refuses_what_is_not_its_options(job):
    module = JOBS[job][0]
    with pytest.raises(TypeError, match="Options"):
        module.run({"output_dir": "out"})


def test_results_are_frozen_and_read_as_attributes():
    result = label_distances.LabelDistancesResult("m.npy", "m.json", "wup", 3)
    assert result.num_classes == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.num_classes = 4


def test_pipeline_options_default_to_the_in_process_runner():
    options = options_lib.pipeline_options([]).get_all_options()
    assert options["runner"] == options_lib.DEFAULT_RUNNER
    options = options_lib.pipeline_options(
        ["--runner=DirectRunner"]).get_all_options()
    assert options["runner"] == "DirectRunner"


def test_build_index_options_normalise_kinds():
    options = build_index.BuildIndexOptions("in", "m", "out", kinds="both")
    assert options.kinds == ("binary", "scann")
    assert build_index.BuildIndexOptions("in", "m", "out",
                                         kinds="binary").kinds == ("binary",)
    with pytest.raises(ValueError, match="kinds"):
        build_index.BuildIndexOptions("in", "m", "out", kinds="faiss")


def test_quiet_commands_keep_the_beam_workers_quiet(monkeypatch):
    from shrewd_tf import verbosity

    def level(beam_args):
        all_options = options_lib.pipeline_options(beam_args).get_all_options()
        return all_options["default_sdk_harness_log_level"]

    monkeypatch.delenv(verbosity.QUIET_ENV, raising=False)
    assert level([]) is None
    monkeypatch.setenv(verbosity.QUIET_ENV, "1")
    assert level([]) == "ERROR"
    assert level(["--default_sdk_harness_log_level=DEBUG"]) == "DEBUG"


def test_new_pipeline_hands_the_options_to_the_runner_workers():
    pipeline = options_lib.new_pipeline(
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing",
         "--default_sdk_harness_log_level=ERROR"]
    )
    forwarded = pipeline.runner._provision_info.provision_info.pipeline_options
    fields = {k: v.string_value for k, v in forwarded.fields.items()}
    assert fields["beam:option:default_sdk_harness_log_level:v1"] == "ERROR"
    # Ints travel as strings: a JSON number would read back as "2.0".
    assert fields["beam:option:direct_num_workers:v1"] == "2"
    # A named runner is left as it is.
    named = options_lib.new_pipeline(["--runner=DirectRunner"])
    assert "DirectRunner" in type(named.runner).__name__


_TWO_WORKER_JOB = """
import sys
from shrewd_tf import verbosity
verbosity.configure(verbose=sys.argv[1] == "-v")
import apache_beam as beam
from pipeline.options import new_pipeline
with new_pipeline(["--direct_num_workers=2",
                   "--direct_running_mode=multi_processing"]) as p:
    (p | beam.Create(range(100)) | beam.Map(lambda x: 2 * x)
       | beam.combiners.Count.Globally() | beam.Map(print))
"""


def test_multi_process_workers_are_quiet_unless_verbose(tmp_path):
    import os
    import subprocess
    import sys

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": os.environ.get("HOME", str(tmp_path)),
           "PYTHONPATH": os.getcwd()}
    outputs = {}
    for flag in ("-q", "-v"):
        result = subprocess.run(
            [sys.executable, "-c", _TWO_WORKER_JOB, flag],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[flag] = result.stdout + result.stderr
    assert "100" in outputs["-q"].split()
    chatter = ("sdk_worker", "statecache", "data_plane")
    assert not any(word in outputs["-q"] for word in chatter), outputs["-q"]
    # The workers do log: -v shows it (so the check above can fail).
    assert all(word in outputs["-v"] for word in chatter)
    assert len(outputs["-q"].splitlines()) <= 6

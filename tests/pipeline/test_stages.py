"""Tests for the cached stage runner (pipeline.stages)."""

import json
import os

import pytest

from pipeline import stages as stages_lib
from pipeline.stages import Stage
from pipeline.stages import StageCache
from pipeline.stages import StageResult


class Recorder:
    """Stage functions that count their calls and can be told to fail."""

    def __init__(self):
        self.calls = []
        self.fail = set()

    def make(self, name):
        def fn(context):
            self.calls.append(name)
            if name in self.fail:
                raise RuntimeError(f"{name} killed")
            path = os.path.join(context.directory, "artifact.txt")
            upstream = {k: v.outputs["value"] for k, v in context.inputs.items()}
            value = context.config.get("value", 0) + sum(upstream.values())
            with open(path, "w") as f:
                f.write(str(value))
            return StageResult({"path": path, "value": value}, {"value": value})

        return fn


def chain(recorder, a_value=1, b_value=10):
    return [
        Stage("a", recorder.make("a"), config={"value": a_value}),
        Stage("b", recorder.make("b"), inputs=("a",), config={"value": b_value}),
        Stage("c", recorder.make("c"), inputs=("b",)),
    ]


def quiet(_line):
    pass


def test_first_run_runs_all_and_writes_manifests(tmp_path):
    recorder = Recorder()
    results = StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    assert recorder.calls == ["a", "b", "c"]
    # c = b = 10 + a(1) = 11: outputs flow downstream.
    assert results["c"][0].outputs["value"] == 11
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config"] == {"value": 10}
    assert set(manifest["inputs"]) == {"a"}
    assert manifest["metrics"] == {"value": 11}
    assert "python" in manifest["versions"]


def test_unchanged_rerun_is_fully_cached(tmp_path):
    recorder = Recorder()
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    recorder.calls.clear()
    results = StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    assert recorder.calls == []
    assert results["c"][0].outputs["value"] == 11


def test_config_change_reruns_that_stage_and_downstream_only(tmp_path):
    recorder = Recorder()
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    recorder.calls.clear()
    results = StageCache(str(tmp_path), banner=quiet).run(
        chain(recorder, b_value=20)
    )
    assert recorder.calls == ["b", "c"]
    assert results["c"][0].outputs["value"] == 21


def test_killed_stage_is_redone_and_upstream_reused(tmp_path):
    recorder = Recorder()
    recorder.fail = {"b"}
    with pytest.raises(RuntimeError, match="b killed"):
        StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    assert not (tmp_path / "b" / "manifest.json").exists()
    assert not (tmp_path / "c").exists()
    recorder.calls.clear()
    recorder.fail = set()
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    assert recorder.calls == ["b", "c"]


def test_forced_stage_invalidates_downstream(tmp_path):
    recorder = Recorder()
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    recorder.calls.clear()
    StageCache(str(tmp_path), force={"a"}, banner=quiet).run(chain(recorder))
    assert recorder.calls == ["a", "b", "c"]


def test_rerun_clears_stale_artifacts(tmp_path):
    recorder = Recorder()
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    stale = tmp_path / "b" / "old-shard.tfrecord"
    stale.write_text("x")
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder, b_value=5))
    assert not stale.exists()


def test_fingerprint_depends_on_config_version_and_inputs():
    stage = Stage("s", lambda c: None, config={"x": 1})
    base = stages_lib.fingerprint(stage, {"a": "1"})
    assert base != stages_lib.fingerprint(stage, {"a": "2"})
    assert base != stages_lib.fingerprint(
        Stage("s", lambda c: None, config={"x": 2}), {"a": "1"})
    assert base != stages_lib.fingerprint(
        Stage("s", lambda c: None, config={"x": 1}, version=2), {"a": "1"})
    assert base == stages_lib.fingerprint(
        Stage("s", lambda c: None, config={"x": 1}), {"a": "1"})


def test_bad_order_and_bad_result_are_refused(tmp_path):
    recorder = Recorder()
    stages = chain(recorder)
    with pytest.raises(ValueError, match="do not run before it"):
        StageCache(str(tmp_path), banner=quiet).run([stages[1], stages[0]])
    with pytest.raises(TypeError, match="StageResult"):
        StageCache(str(tmp_path), banner=quiet).run(
            [Stage("x", lambda context: {"not": "a result"})]
        )

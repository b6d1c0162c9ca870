"""Tests for the cached stage runner (pipeline.stages)."""

import importlib
import json
import os

import pytest

import shrewd_tf
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


def test_fingerprint_depends_on_config_inputs_code_and_version(monkeypatch):
    stage = Stage("s", lambda c: None, config={"x": 1})
    code = {"digest": "d1", "modules": []}
    base = stages_lib.fingerprint(stage, {"a": "1"}, code)
    assert base != stages_lib.fingerprint(stage, {"a": "2"}, code)
    assert base != stages_lib.fingerprint(
        Stage("s", lambda c: None, config={"x": 2}), {"a": "1"}, code)
    assert base != stages_lib.fingerprint(
        stage, {"a": "1"}, {"digest": "d2", "modules": []})
    assert base == stages_lib.fingerprint(
        Stage("s", lambda c: None, config={"x": 1}), {"a": "1"}, code)
    monkeypatch.setattr(shrewd_tf, "__version__", "99.0")
    assert base != stages_lib.fingerprint(stage, {"a": "1"}, code)


# === The source digest: code changes invalidate the cache ===


def write_package(root, helper_value):
    """`fakestagepkg`: entry imports helper inside a function, and sub.leaf
    relatively."""
    package = root / "fakestagepkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text('"""Fake."""\n')
    (package / "entry.py").write_text(
        "import json\n\nfrom .sub import leaf\n\n\ndef value():\n"
        "    from fakestagepkg import helper\n"
        "    return helper.VALUE\n"
    )
    (package / "helper.py").write_text(f"VALUE = {helper_value}\n")
    (package / "unused.py").write_text("X = 1\n")
    (package / "sub").mkdir(exist_ok=True)
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "leaf.py").write_text("from .. import helper\n")
    return package


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    root = tmp_path / "src"
    root.mkdir()
    package = write_package(root, 1)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    stages_lib.source_digest.cache_clear()
    yield package
    stages_lib.source_digest.cache_clear()


def test_source_digest_follows_first_party_imports(fake_package):
    digest, modules = stages_lib.source_digest(("fakestagepkg.entry",))
    # The parent package and the import inside a function, not json (not
    # first-party) nor the module nobody imports.
    assert modules == (
        "fakestagepkg", "fakestagepkg.entry", "fakestagepkg.helper",
        "fakestagepkg.sub", "fakestagepkg.sub.leaf")
    assert stages_lib.source_digest(("fakestagepkg.entry",))[0] == digest
    _, whole = stages_lib.source_digest(("fakestagepkg",))
    assert "fakestagepkg.unused" in whole
    with pytest.raises(ValueError, match="nope"):
        stages_lib.source_digest(("fakestagepkg.nope",))


def test_source_digest_is_computed_once_per_process(fake_package):
    first = stages_lib.source_digest(("fakestagepkg.entry",))
    (fake_package / "helper.py").write_text("VALUE = 2\n")
    assert stages_lib.source_digest(("fakestagepkg.entry",)) == first
    stages_lib.source_digest.cache_clear()  # a new process
    assert stages_lib.source_digest(("fakestagepkg.entry",))[0] != first[0]


def code_chain(recorder):
    return [
        Stage("a", recorder.make("a"), config={"value": 1},
              code=("fakestagepkg.entry",)),
        Stage("b", recorder.make("b"), inputs=("a",), config={"value": 10},
              code=("fakestagepkg.unused",)),
    ]


def test_code_change_reruns_the_stage_and_same_code_is_reused(fake_package):
    recorder, lines = Recorder(), []
    run_dir = str(fake_package.parent.parent / "runs")
    StageCache(run_dir, banner=lines.append).run(code_chain(recorder))
    manifest = json.loads(
        open(os.path.join(run_dir, "a", "manifest.json")).read())
    assert manifest["shrewd_tf_version"] == shrewd_tf.__version__
    assert manifest["code"]["digest"] == stages_lib.code_digest(
        code_chain(recorder)[0])["digest"]
    assert "fakestagepkg.helper" in manifest["code"]["modules"]

    recorder.calls.clear()
    stages_lib.source_digest.cache_clear()  # a new process, same code
    StageCache(run_dir, banner=lines.append).run(code_chain(recorder))
    assert recorder.calls == []

    # An edit to a module a's code imports (not a version bump) reruns a,
    # and b because its input ran again.
    (fake_package / "helper.py").write_text("VALUE = 2\n")
    stages_lib.source_digest.cache_clear()
    lines.clear()
    StageCache(run_dir, banner=lines.append).run(code_chain(recorder))
    assert recorder.calls == ["a", "b"]
    assert any("a: running (code changed)" in line for line in lines), lines


def test_shrewd_tf_upgrade_reruns_every_stage(tmp_path, monkeypatch):
    recorder, lines = Recorder(), []
    StageCache(str(tmp_path), banner=quiet).run(chain(recorder))
    recorder.calls.clear()
    monkeypatch.setattr(shrewd_tf, "__version__", "99.0")
    StageCache(str(tmp_path), banner=lines.append).run(chain(recorder))
    assert recorder.calls == ["a", "b", "c"]
    assert any("-> 99.0)" in line for line in lines), lines


def test_bad_order_and_bad_result_are_refused(tmp_path):
    recorder = Recorder()
    stages = chain(recorder)
    with pytest.raises(ValueError, match="do not run before it"):
        StageCache(str(tmp_path), banner=quiet).run([stages[1], stages[0]])
    with pytest.raises(TypeError, match="StageResult"):
        StageCache(str(tmp_path), banner=quiet).run(
            [Stage("x", lambda context: {"not": "a result"})]
        )

"""Stages with declared inputs and outputs, cached like TFX components.

A `Stage` is a function `fn(context) -> StageResult` plus the names of the
stages it reads from and the slice of the configuration it depends on. The
`StageCache` runs a chain of stages under `runs/<name>/<stage>/`:

* Each stage's *fingerprint* is the SHA-256 of its name, its configuration
  slice, its code version (`Stage.version`) and the fingerprints (and run
  times) of its inputs. Upstream changes, or an upstream stage that ran
  again, therefore invalidate everything downstream.
* A stage whose directory holds a complete `manifest.json` with the same
  fingerprint is skipped and its recorded outputs reused (a TFX cache hit).
* Otherwise the old manifest is removed first, the stage runs, and the
  manifest (config, input fingerprints, outputs, metrics, library versions,
  timings) is written last, atomically. A stage that fails or is killed
  leaves no manifest, so the next run redoes it; the others are reused.

Example:
    stages = [Stage("example_gen", make_records, config={"source": "x"}),
              Stage("trainer", train, inputs=("example_gen",), config=...)]
    results = StageCache("runs/demo").run(stages)
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable

from shrewd_tf.config import write_text_atomically

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage produced.

    Attributes:
        outputs: JSON-serialisable description of the artifacts, usually
            paths under the stage directory ({"tfrecord_dir": ...}).
        metrics: numbers worth reporting (counts, timings, mAHP).
    """

    outputs: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a running stage gets.

    Attributes:
        name: the stage's name.
        directory: where it writes (`<run_dir>/<name>/`, created).
        config: its configuration slice.
        inputs: {upstream stage name: StageResult}.
    """

    name: str
    directory: str
    config: dict
    inputs: dict


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: directory name and key for downstream stages.
        fn: `fn(StageContext) -> StageResult`.
        inputs: names of the upstream stages it reads.
        config: JSON-serialisable configuration it depends on.
        version: bump to invalidate cached results after a code change.
    """

    name: str
    fn: Callable
    inputs: tuple = ()
    config: dict = dataclasses.field(default_factory=dict)
    version: int = 1


def fingerprint(stage, input_fingerprints):
    """SHA-256 hex digest of the stage's name, config, version and inputs."""
    payload = json.dumps(
        {
            "name": stage.name,
            "config": stage.config,
            "version": stage.version,
            "inputs": {k: input_fingerprints[k] for k in sorted(input_fingerprints)},
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def library_versions():
    """Versions recorded in every manifest."""
    versions = {"python": sys.version.split()[0]}
    for module in ("tensorflow", "keras", "apache_beam", "numpy"):
        imported = sys.modules.get(module)
        if imported is not None:
            versions[module] = getattr(imported, "__version__", "?")
    return versions


def read_manifest(stage_dir):
    """The stage's manifest dict, or None if absent or unreadable."""
    path = os.path.join(stage_dir, MANIFEST_FILE)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    return manifest


class StageCache:
    """Runs stages in order under `run_dir`, reusing unchanged ones.

    Args:
        run_dir: `runs/<name>/`.
        force: stage names to rerun even if cached (or {"all"}).
        banner: callable(str) for progress lines (default: print to stdout).
    """

    def __init__(self, run_dir, force=(), banner=None):
        self.run_dir = run_dir
        self.force = set(force)
        self.banner = banner or (lambda line: print(line, flush=True))

    def run(self, stages):
        """Runs/reuses `stages` (in dependency order). Returns
        {name: (StageResult, manifest dict)}."""
        results = {}
        fingerprints = {}
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"Stage names must be unique. Received: {names}")
        for position, stage in enumerate(stages, 1):
            missing = [i for i in stage.inputs if i not in results]
            if missing:
                raise ValueError(
                    f"Stage {stage.name!r} reads {missing}, which do not run "
                    f"before it. Received order: {names}"
                )
            inputs_fp = {i: fingerprints[i] for i in stage.inputs}
            digest = fingerprint(stage, inputs_fp)
            stage_dir = os.path.join(self.run_dir, stage.name)
            manifest = read_manifest(stage_dir)
            header = f"== [{position}/{len(stages)}] {stage.name}"
            forced = "all" in self.force or stage.name in self.force
            if (
                manifest is not None
                and manifest.get("status") == "complete"
                and manifest.get("fingerprint") == digest
                and not forced
            ):
                self.banner(f"{header}: cached ({digest[:12]}), reused")
                result = StageResult(manifest["outputs"], manifest["metrics"])
            else:
                reason = (
                    "forced" if forced and manifest else
                    "no complete manifest" if manifest is None else
                    "inputs or config changed"
                )
                self.banner(f"{header}: running ({reason})")
                result, manifest = self._run_stage(
                    stage, stage_dir, digest, inputs_fp, results
                )
                self.banner(
                    f"{header}: done in {manifest['wall_seconds']:.1f} s"
                )
            results[stage.name] = result
            # Downstream stages key on this run of the stage, not only on
            # its fingerprint: a forced rerun invalidates them too.
            fingerprints[stage.name] = f"{digest}@{manifest['run_id']}"
        return {
            name: (results[name], read_manifest(os.path.join(self.run_dir, name)))
            for name in names
        }

    def _run_stage(self, stage, stage_dir, digest, inputs_fp, results):
        manifest_path = os.path.join(stage_dir, MANIFEST_FILE)
        if os.path.exists(manifest_path):
            os.unlink(manifest_path)  # a killed rerun must not look complete
        if os.path.isdir(stage_dir):
            shutil.rmtree(stage_dir)  # no stale artifacts from older configs
        os.makedirs(stage_dir)
        context = StageContext(
            name=stage.name,
            directory=stage_dir,
            config=stage.config,
            inputs={name: results[name] for name in stage.inputs},
        )
        started = time.time()
        result = stage.fn(context)
        if not isinstance(result, StageResult):
            raise TypeError(
                f"Stage {stage.name!r} must return a StageResult. "
                f"Received: {type(result).__name__}"
            )
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "stage": stage.name,
            "status": "complete",
            "fingerprint": digest,
            "run_id": uuid.uuid4().hex,
            "stage_version": stage.version,
            "config": stage.config,
            "inputs": inputs_fp,
            "outputs": result.outputs,
            "metrics": result.metrics,
            "versions": library_versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
            "wall_seconds": time.time() - started,
        }
        write_text_atomically(
            manifest_path,
            json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
            + "\n",
        )
        log.info("stage %s complete", stage.name)
        return result, manifest


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)

"""Stages with declared inputs and outputs, cached like TFX components.

A `Stage` is a function `fn(context) -> StageResult` plus the names of the
stages it reads from and the slice of the configuration it depends on. The
`StageCache` runs a chain of stages under `runs/<name>/<stage>/`:

* Each stage's *fingerprint* is the SHA-256 of its name, its configuration
  slice, the installed shrewd-tf version (`shrewd_tf.__version__`), a
  digest of the source it runs and the fingerprints (and run ids) of its
  inputs. Upstream changes, or an upstream stage that ran again, therefore
  invalidate everything downstream.
* The source digest (`source_digest`, computed once per process) covers
  the file defining the stage function and the modules named in
  `Stage.code` with every first-party module they import, transitively
  (found with `ast`, nothing is imported): any change to that code, not
  only a release, reruns the stage. The manifest records the version, the
  digest and the modules it covers.
* A stage whose directory holds a complete `manifest.json` with the same
  fingerprint is skipped and its recorded outputs reused (a TFX cache hit).
* Otherwise the old manifest is removed first, the stage runs, and the
  manifest (config, input fingerprints, outputs, metrics, library versions,
  shrewd-tf version, code digest, timings) is written last, atomically. A
  stage that fails or is killed leaves no manifest, so the next run redoes
  it; the others are reused.

Example:
    stages = [Stage("example_gen", make_records, config={"source": "x"}),
              Stage("trainer", train, inputs=("example_gen",), config=...)]
    results = StageCache("runs/demo").run(stages)
"""

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable

import shrewd_tf
from shrewd_tf.io import write_text_atomically

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2
# Imports of these packages are followed into the source digest (also the
# default `Stage.code`: all of the library and the pipeline).
FIRST_PARTY = ("shrewd_tf", "pipeline")


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
        code: dotted names of the modules (or packages: every module in
            them) the stage runs besides the file defining `fn`; their
            source and that of the first-party modules they import is in
            the fingerprint (default: all of shrewd_tf and pipeline).
    """

    name: str
    fn: Callable
    inputs: tuple = ()
    config: dict = dataclasses.field(default_factory=dict)
    code: tuple = FIRST_PARTY


# === Source digest ===


def _package_dir(top):
    """The directory (or file) of top-level module `top`, importing nothing."""
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ValueError(f"No module named {top!r}")
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return spec.origin


def _module_path(name):
    """The source file of module `name`, or None if there is none."""
    top, _, rest = name.partition(".")
    try:
        root = _package_dir(top)
    except (ImportError, ValueError):
        return None
    if root is None or not os.path.isdir(root):
        return root if not rest else None
    base = os.path.join(root, *rest.split(".")) if rest else root
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _package_modules(name, path):
    """Every module of package `name` (whose __init__.py is `path`)."""
    root = os.path.dirname(path)
    names = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
        relative = os.path.relpath(directory, root)
        prefix = name if relative == "." else (
            name + "." + relative.replace(os.sep, "."))
        for file in sorted(files):
            if file == "__init__.py":
                names.append(prefix)
            elif file.endswith(".py"):
                names.append(f"{prefix}.{file[:-3]}")
    return names


def _imported_names(path, module):
    """Modules `path` (module `module`) imports, anywhere in the file."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `level - 1` packages up
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.append(base)
            # `from package import module` imports a module too.
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.lru_cache(maxsize=None)
def source_digest(modules):
    """SHA-256 of the source of `modules` and what they import, transitively.

    Imports of first-party packages (`FIRST_PARTY` and those of `modules`)
    are followed through `ast`, including imports inside functions; a
    module's parent packages (`__init__.py`) count as imported. Files are
    keyed by module name, so the digest does not depend on where the
    checkout lives. Cached: computed once per process per `modules`.

    Args:
        modules: tuple of dotted module or package names (a package stands
            for every module in it).

    Returns:
        (hex digest, sorted tuple of the module names covered).

    Raises:
        ValueError: a name in `modules` that has no source file.
    """
    followed = set(FIRST_PARTY) | {m.partition(".")[0] for m in modules}
    pending = []
    for name in modules:
        path = _module_path(name)
        if path is None:
            raise ValueError(
                f"Stage code must name modules with source files. "
                f"Received: {name!r}"
            )
        if os.path.basename(path) == "__init__.py":
            pending.extend(_package_modules(name, path))
        else:
            pending.append(name)
    paths = {}
    while pending:
        name = pending.pop()
        if name in paths or name.partition(".")[0] not in followed:
            continue
        path = _module_path(name)
        if path is None:
            continue  # an attribute (from x import y), not a module
        paths[name] = path
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        pending.extend(_imported_names(path, name))
    digest = hashlib.sha256()
    for name in sorted(paths):
        with open(paths[name], "rb") as f:
            content = f.read()
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest(), tuple(sorted(paths))


def code_digest(stage):
    """{"digest", "modules"}: the source `stage` runs (see `source_digest`).

    The file that defines `stage.fn` is hashed as it is (its own imports
    are not followed: a module of many stages would tie them together).
    """
    digest, modules = source_digest(tuple(sorted(set(stage.code))))
    combined = hashlib.sha256(digest.encode())
    try:
        fn_file = inspect.getsourcefile(stage.fn)
    except TypeError:  # a builtin or a C callable: no source to hash
        fn_file = None
    if fn_file and os.path.isfile(fn_file):
        combined.update(_file_sha256(fn_file).encode())
    return {"digest": combined.hexdigest(), "modules": list(modules)}


@functools.lru_cache(maxsize=None)
def _file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# === Fingerprints and manifests ===


def fingerprint(stage, input_fingerprints, code=None):
    """SHA-256 hex digest of the stage's name, config, code and inputs.

    Args:
        stage: the `Stage`.
        input_fingerprints: {upstream stage: fingerprint}.
        code: its `code_digest` (computed when None).
    """
    code = code or code_digest(stage)
    payload = json.dumps(
        {
            "name": stage.name,
            "config": stage.config,
            "shrewd_tf_version": shrewd_tf.__version__,
            "code_digest": code["digest"],
            "inputs": {k: input_fingerprints[k] for k in sorted(input_fingerprints)},
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _rerun_reason(manifest, code, forced):
    """Why a stage with `manifest` (or None) runs again."""
    if forced and manifest:
        return "forced"
    if manifest is None:
        return "no complete manifest"
    if manifest.get("shrewd_tf_version") != shrewd_tf.__version__:
        return (f"shrewd-tf {manifest.get('shrewd_tf_version')} -> "
                f"{shrewd_tf.__version__}")
    if manifest.get("code", {}).get("digest") != code["digest"]:
        return "code changed"
    return "inputs or config changed"


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
            code = code_digest(stage)
            digest = fingerprint(stage, inputs_fp, code)
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
                reason = _rerun_reason(manifest, code, forced)
                self.banner(f"{header}: running ({reason})")
                result, manifest = self._run_stage(
                    stage, stage_dir, digest, code, inputs_fp, results
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

    def _run_stage(self, stage, stage_dir, digest, code, inputs_fp, results):
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
            "shrewd_tf_version": shrewd_tf.__version__,
            "code": code,
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

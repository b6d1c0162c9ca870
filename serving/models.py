"""Model repository: SavedModels in TF Serving's layout, hot-swapped.

`ModelRepository(export_root)` serves `export_root/<name>/<version>/`
(version: a directory named by a non-negative integer holding a SavedModel
with the "serve" tag), like tensorflow_model_server with the default
"latest" version policy:

* Each model serves its highest version that loads. A poll (every
  `poll_interval_s`, and once synchronously in `start()`) notices new
  version directories and new model directories.
* A new version is loaded (and warmed up with
  `assets.extra/tf_serving_warmup_requests` if present) while the old one
  keeps answering; the swap is one reference assignment, so in-flight
  requests finish on the version they started with.
* A version that fails to load or warm up is logged, reported as END with
  its error in the model status, and skipped; it is retried only when its
  files change (e.g. an export that was still being written).
* If the served version's directory disappears, the next highest loads.

Versions are loaded as `serving.servables.Servable`s, whose signatures are
served generically (any input names, dtypes and shapes, as TF Serving does).
"""

import dataclasses
import logging
import os
import threading
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving.errors import ServingError
from serving.errors import from_tensorflow_error
from serving.errors import invalid_argument
from serving.errors import not_found
from serving.servables import Servable
from shrewd_tf.export import versions

State = get_model_status_pb2.ModelVersionStatus.State


# === Version status ===


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """A version's state as TF Serving reports it (ModelVersionStatus).

    state: a `ModelVersionStatus.State` value (AVAILABLE, LOADING, END...).
    error_code: `grpc.StatusCode` of the load error (OK if none).
    """

    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""

    def to_json(self):
        """The REST shape: {"version": "2", "state": "AVAILABLE", ...}."""
        return {
            "version": str(self.version),
            "state": State.Name(self.state),
            "status": {
                "error_code": self.error_code.name,
                "error_message": self.error_message,
            },
        }

    def to_proto(self):
        proto = get_model_status_pb2.ModelVersionStatus(
            version=self.version, state=self.state
        )
        proto.status.error_code = self.error_code.value[0]
        proto.status.error_message = self.error_message
        return proto


def _fingerprint(path):
    """(relative path, size, mtime_ns) of every file under `path`."""
    entries = []
    for root, _, files in os.walk(path):
        for file_name in files:
            full = os.path.join(root, file_name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append(
                (os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(entries))


# === Repository ===


class ModelRepository:
    """Serves every model under `export_root`, polling for new versions.

    Args:
        export_root: folder holding `<model name>/<int version>/` SavedModels.
        model_names: names to serve (default: every subdirectory, found on
            each poll).
        poll_interval_s: seconds between polls of the file system.
        warmup: replay `assets.extra/tf_serving_warmup_requests` on load.
        scheduler: `serving.batching.BatchScheduler` that batches the
            signature runs of every version, or None (no batching).
    """

    def __init__(
        self,
        export_root,
        model_names=None,
        poll_interval_s=2.0,
        warmup=True,
        scheduler=None,
    ):
        if poll_interval_s <= 0:
            raise ValueError(
                "`poll_interval_s` must be > 0. "
                f"Received: poll_interval_s={poll_interval_s}"
            )
        self.export_root = export_root
        self.model_names = None if model_names is None else list(model_names)
        self.poll_interval_s = poll_interval_s
        self.warmup = warmup
        self.scheduler = scheduler
        self._served = {}  # name -> Servable
        self._status = {}  # name -> {version: VersionStatus}
        self._failed = {}  # (name, version) -> fingerprint of the failed files
        self._lock = threading.Lock()  # guards _served and _status
        self._poll_lock = threading.Lock()  # one poll at a time
        self._stop = threading.Event()
        self._thread = None

    # --- lifecycle ---

    def start(self):
        """Loads what is there now, then polls in a daemon thread."""
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, name="model-repository-poll", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _poll_loop(self):
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll()
            except Exception:  # Never let the poll thread die.
                logging.exception("Model repository poll failed")

    # --- polling ---

    def _names_on_disk(self):
        if self.model_names is not None:
            return self.model_names
        try:
            entries = os.listdir(self.export_root)
        except OSError as e:
            logging.warning(
                "Cannot list export_root %s: %s", self.export_root, e
            )
            return []
        return sorted(
            e
            for e in entries
            if not e.startswith(".")
            and os.path.isdir(os.path.join(self.export_root, e))
        )

    def _versions_on_disk(self, name):
        base = os.path.join(self.export_root, name)
        return versions.existing_versions(base)[::-1]

    def poll(self):
        """Scans the file system once and loads what changed (blocking)."""
        with self._poll_lock:
            for name in self._names_on_disk():
                self._poll_model(name)

    def _poll_model(self, name):
        served = self._served.get(name)
        for version in self._versions_on_disk(name):
            if served is not None and version == served.version:
                return
            path = os.path.join(self.export_root, name, str(version))
            fingerprint = _fingerprint(path)
            if self._failed.get((name, version)) == fingerprint:
                continue
            if self._load(name, version, path, fingerprint):
                return
        if (
            served is not None
            and not os.path.isdir(served.path)
            and not served.removal_logged
        ):
            served.removal_logged = True
            logging.warning(
                "Model %s version %d was removed and no other version "
                "loads; still serving it from memory",
                name,
                served.version,
            )

    def _set_status(self, name, status):
        with self._lock:
            self._status.setdefault(name, {})[status.version] = status

    def _load(self, name, version, path, fingerprint):
        """Loads and warms up one version; swaps it in. Returns success."""
        self._set_status(name, VersionStatus(version, State.LOADING))
        started = time.monotonic()
        try:
            servable = Servable(name, version, path, self.scheduler)
            warmed = servable.warm_up() if self.warmup else 0
        except Exception as e:  # Any load failure skips this version.
            error = e if isinstance(e, ServingError) else None
            if isinstance(e, tf.errors.OpError):
                error = from_tensorflow_error(e)
            code = error.code if error else grpc.StatusCode.UNKNOWN
            message = error.message if error else f"{type(e).__name__}: {e}"
            logging.error(
                "Model %s version %d failed to load from %s, skipped: %s",
                name,
                version,
                path,
                message,
            )
            self._failed[(name, version)] = fingerprint
            self._set_status(
                name, VersionStatus(version, State.END, code, message)
            )
            return False
        with self._lock:
            previous = self._served.get(name)
            self._served[name] = servable
            statuses = self._status.setdefault(name, {})
            statuses[version] = VersionStatus(version, State.AVAILABLE)
            if previous is not None:
                statuses[previous.version] = VersionStatus(
                    previous.version, State.END
                )
        self._failed.pop((name, version), None)
        logging.info(
            "Model %s version %d loaded from %s in %.1f s (%d warmup "
            "requests)%s",
            name,
            version,
            path,
            time.monotonic() - started,
            warmed,
            f", replacing version {previous.version}" if previous else "",
        )
        return True

    # --- lookups ---

    def model_names_served(self):
        with self._lock:
            return sorted(self._served)

    def get(self, name, version=None, label=None):
        """Returns the `Servable` for a request.

        Args:
            name: model name.
            version: int version, or None for the served (latest) one.
            label: version label; none are configured, so any label fails.

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version that is
                not served; INVALID_ARGUMENT for a version label.
        """
        if label:
            raise invalid_argument(
                f"Unrecognized servable version label: {label} (this server "
                "serves the latest version; request by number instead)"
            )
        with self._lock:
            servable = self._served.get(name)
        if version is None:
            if servable is None:
                raise not_found(
                    f"Servable not found for request: Latest({name})"
                )
            return servable
        if servable is None or servable.version != version:
            raise not_found(
                f"Servable not found for request: Specific({name}, {version})"
            )
        return servable

    def status(self, name, version=None):
        """Returns [VersionStatus] for a model (newest first).

        Raises:
            ServingError: NOT_FOUND for an unknown model or version.
        """
        with self._lock:
            statuses = dict(self._status.get(name, {}))
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        if version is None:
            return [statuses[v] for v in sorted(statuses, reverse=True)]
        if version not in statuses:
            raise not_found(
                f"Could not find version {version} of model {name}"
            )
        return [statuses[version]]

"""A 2-worker MultiWorkerMirroredStrategy run survives a killed worker:
the restarted job resumes from the chief's BackupAndRestore state in the
shared output_dir (issue 12)."""

import csv
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support import multi_worker

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
EPOCHS = 3
KILLED_AFTER = 0  # 0-based: worker 1 dies when the first epoch ends


def start_workers(out, extra_args=((), ())):
    ports = ",".join(map(str, multi_worker.free_ports(len(extra_args))))
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.multi_worker", str(out),
             "--index", str(i), "--ports", ports, "--shared",
             "--epochs", str(EPOCHS), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        for i, extra in enumerate(extra_args)
    ]


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    return [proc.communicate()[0] for proc in procs]


def backed_up_epoch(run_dir):
    path = os.path.join(run_dir, "backup", "training_metadata.json")
    try:
        with open(path) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return 0


def history_epochs(run_dir):
    try:
        with open(os.path.join(run_dir, "history.csv")) as f:
            return [int(row["epoch"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []


def chief_finished_epoch(run_dir, epoch):
    """The chief's backup and its epoch-end callbacks (history.csv, which
    it writes after the backup) are done."""
    return (backed_up_epoch(run_dir) >= epoch + 1
            and epoch in history_epochs(run_dir))


@pytest.mark.large  # ~50-100 s: two processes killed and restarted
def test_killed_worker_job_resumes_from_the_backup(tmp_path):
    run_dir = tmp_path / "run"
    # 1. Worker 1 dies after epoch KILLED_AFTER; the chief, left waiting on
    #    its peer at the next all-reduce, is killed once it has finished
    #    that epoch (backup written, history row logged).
    procs = start_workers(
        tmp_path, ((), ("--exit-after-epoch", str(KILLED_AFTER))))
    try:
        procs[1].wait(timeout=240)
        deadline = time.monotonic() + 60
        while (not chief_finished_epoch(run_dir, KILLED_AFTER)
               and time.monotonic() < deadline and procs[0].poll() is None):
            time.sleep(0.2)
    finally:
        logs = stop(procs)
    assert procs[1].returncode == multi_worker.EXIT_CODE, logs[1][-4000:]
    assert backed_up_epoch(run_dir) == KILLED_AFTER + 1, logs[0][-4000:]
    assert history_epochs(run_dir) == list(range(KILLED_AFTER + 1))
    assert not os.path.exists(tmp_path / "weights0.npz")

    # 2. The job restarted: both workers resume at the backed-up epoch.
    procs = start_workers(tmp_path)
    try:
        for proc in procs:
            proc.wait(timeout=240)
    finally:
        logs = stop(procs)
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"worker {i} failed:\n{logs[i][-4000:]}"
        with open(tmp_path / f"metrics{i}.json") as f:
            metrics = json.load(f)
        assert metrics["replicas"] == 2
        # Only the epochs after the backup ran again.
        assert metrics["epochs_run"] == EPOCHS - (KILLED_AFTER + 1)
        assert all(math.isfinite(v) for v in metrics["loss"])
    # The chief's history.csv (appended) holds each epoch once.
    assert history_epochs(run_dir) == list(range(EPOCHS))
    # A finished run deletes its backup and leaves the model.
    assert not os.path.exists(run_dir / "backup")
    assert os.path.exists(run_dir / "model.keras")
    weights = []
    for i in (0, 1):
        with np.load(tmp_path / f"weights{i}.npz") as saved:
            weights.append([saved[k] for k in sorted(
                saved.files, key=lambda k: int(k[4:]))])
    assert len(weights[0]) == len(weights[1]) > 0
    for a, b in zip(*weights):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)

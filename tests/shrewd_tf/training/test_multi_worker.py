"""Two MultiWorkerMirroredStrategy workers on localhost (issue 12)."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.support import multi_worker

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


def run_workers(out, count=2, timeout=300):
    """Trains `count` workers of one cluster, plus, as worker `count`, one
    process with `count` replicas (virtual CPUs) on the same global batch.
    """
    ports = ",".join(map(str, multi_worker.free_ports(count)))
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "-m", "tests.support.multi_worker", str(out)]
    argvs = [command + ["--index", str(i), "--ports", ports]
             for i in range(count)]
    argvs.append(command + ["--index", str(count),
                            "--strategy", f"virtual_cpus:{count}"])
    procs = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        for argv in argvs
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"worker {i} failed:\n{log[-4000:]}"


def load_weights(out, index):
    with np.load(os.path.join(out, f"weights{index}.npz")) as weights:
        return [weights[key] for key in sorted(weights.files,
                                               key=lambda k: int(k[4:]))]


def test_two_workers_train_like_one_process(tmp_path):
    run_workers(tmp_path)
    for index in (0, 1, 2):
        with open(tmp_path / f"metrics{index}.json") as f:
            assert json.load(f)["replicas"] == 2
    first, second = load_weights(tmp_path, 0), load_weights(tmp_path, 1)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # One process, two replicas, the same global batch: the same training.
    single = load_weights(tmp_path, 2)
    assert len(single) == len(first)
    for a, b in zip(first, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

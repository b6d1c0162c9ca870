"""Shared pieces of the serving benchmarks: a server subprocess, keep-alive
HTTP clients, and latency summaries (not a benchmark itself)."""

import http.client
import socket
import subprocess
import sys
import threading
import time

import numpy as np


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(port, process, path="/v1/database?limit=1", timeout_s=600):
    """Waits until GET `path` answers below 500 on `port`.

    Raises:
        RuntimeError: the process exited or did not answer in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=5
            )
            connection.request("GET", path)
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


def start_server(arguments, port, ready_path="/v1/models", timeout_s=600):
    """Starts `python -m serving <arguments> --rest-port port` and waits
    until `ready_path` answers (any status below 500). Returns the process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", *arguments, "--rest-port",
         str(port), "--grpc-port", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, process, ready_path, timeout_s)
    except RuntimeError:
        process.kill()
        raise
    return process


def load_test(port, path, bodies, clients, duration_s):
    """`clients` threads, one keep-alive connection each, POST `bodies` to
    `path` for `duration_s`.

    Returns:
        (latencies in s [requests], elapsed s).

    Raises:
        RuntimeError: when any answer is not 200.
    """
    stop = time.monotonic() + duration_s
    latencies = [[] for _ in range(clients)]
    errors = []

    def client(slot):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = slot
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            i += clients
            started = time.perf_counter()
            connection.request(
                "POST", path, body, {"Content-Type": "application/json"}
            )
            answer = connection.getresponse()
            payload = answer.read()
            latencies[slot].append(time.perf_counter() - started)
            if answer.status != 200:
                errors.append(payload[:200])
        connection.close()

    workers = [
        threading.Thread(target=client, args=(s,)) for s in range(clients)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(
            f"{len(errors)} failed requests, e.g. {errors[0]!r}"
        )
    return np.concatenate([np.asarray(l) for l in latencies]), elapsed


def summary(latencies, elapsed):
    """{requests_per_s, p50_ms, p99_ms}."""
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
    }


def batch_totals(port):
    """(rows, batches) executed so far, from the server's Prometheus
    `shrewd_serving_batch_size` histogram ((0, 0) without batching)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/monitoring/prometheus/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    totals = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f"shrewd_serving_batch_size_{name} "):
                totals[name] = float(line.split()[1])
    return totals.get("sum", 0.0), totals.get("count", 0.0)

"""Idle connections against the REST server, old stack vs new (issue 13).

Each server runs as a subprocess (`python -m serving`) over the same tiny
export (a 16-bit encoder SavedModel) and binary index (`--n` codes). The
script then, per server:

1. measures its RSS (/proc/<pid>/status VmRSS) and threads, and the
   latency of `--requests` normal requests on one keep-alive connection
   (alternating `:predict` of one PNG and `/v1/search` of a code, k=10);
2. opens `--idle` connections, each sending a request line, headers with
   `Content-Length: 100000` and a partial body, then nothing; measures
   RSS, threads and the latency of normal requests meanwhile;
3. closes them, waits 3 x `--settle_s`, and measures again.

A normal request failing or taking over 10 s counts as failed (and as
10 s in the percentiles).

The old server is the commit before the aiohttp stack, checked out as a
git worktree and run with PYTHONPATH pointing at it:

    git worktree add /tmp/old-serving <commit before>
    python benchmarks/bench_idle_connections.py --old /tmp/old-serving

Without `--old` only the current server is measured.
"""

import argparse
import base64
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_BITS = 16
PARTIAL_REQUEST = (
    b"POST /v1/models/enc:predict HTTP/1.1\r\nHost: bench\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    b'{"instances": [{"b64": "iVBORw0KGgo'
)


def build_fixtures(root, n):
    """Writes root/exports/enc/1 and root/binary_index; returns root."""
    sys.path.insert(0, ROOT)
    from shrewd_tf.retrieval import BinaryHammingIndex
    from tests.support import saved_models

    saved_models.write_encoder(
        os.path.join(root, "exports", "enc", "1"), CODE_BITS, seed=0
    )
    rng = np.random.default_rng(0)
    codes = rng.random((n, CODE_BITS)).astype(np.float32)
    ids = np.arange(n)
    index = BinaryHammingIndex(code_bits=CODE_BITS, method="flat").build(
        codes, ids
    )
    index.set_metadata(ids, label=[int(i % 10) for i in ids])
    index.save(os.path.join(root, "binary_index"))
    png = saved_models.png_bytes(saved_models.random_image(rng, 8))
    return base64.b64encode(png).decode("ascii")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(code_dir, root, port, log):
    env = dict(os.environ, PYTHONPATH=code_dir, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            "--export-root",
            os.path.join(root, "exports"),
            "--binary-index",
            os.path.join(root, "binary_index"),
            "--rest-port",
            str(port),
            "--grpc-port",
            "-1",
            "--poll-interval-s",
            "3600",
            "--request-timeout-s",
            "120",
            "--no-warmup",
        ],
        cwd=code_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, 2)
            connection.request("GET", "/v1/models/enc")
            if connection.getresponse().status == 200:
                connection.close()
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start")


def proc_status(pid):
    """(VmRSS in MB, threads) of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def latencies(port, count, image_b64, timeout_s=10):
    """(p50 ms, p99 ms, failures) of normal requests on one keep-alive
    connection; a request failing or taking over `timeout_s` counts as a
    failure (and as timeout_s in the percentiles) and reconnects."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout_s
    )
    code = [0.25, 0.75] * (CODE_BITS // 2)
    bodies = [
        (
            "/v1/models/enc:predict",
            json.dumps({"instances": [{"b64": image_b64}]}).encode(),
        ),
        ("/v1/search", json.dumps({"code": code, "k": 10}).encode()),
    ]
    times, failures = [], 0
    for i in range(count):
        path, body = bodies[i % 2]
        start = time.perf_counter()
        try:
            connection.request(
                "POST", path, body, {"Content-Type": "application/json"}
            )
            answer = connection.getresponse()
            answer.read()
            ok = answer.status == 200
        except OSError:
            ok = False
        if not ok:
            failures += 1
            connection.close()
            times.append(timeout_s)
            continue
        times.append(time.perf_counter() - start)
    connection.close()
    return (
        np.percentile(times, 50) * 1e3,
        np.percentile(times, 99) * 1e3,
        failures,
    )


def open_idle(port, count):
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(PARTIAL_REQUEST)
        sockets.append(s)
    return sockets


def measure(name, code_dir, root, image_b64, args):
    log = open(os.path.join(root, f"{name}.log"), "wb")
    port = free_port()
    process = start_server(code_dir, root, port, log)
    row = {"server": name}
    try:
        latencies(port, 20, image_b64)  # warm up
        time.sleep(1)
        row["before"] = proc_status(process.pid), latencies(
            port, args.requests, image_b64
        )
        start = time.monotonic()
        idle = open_idle(port, args.idle)
        row["open_s"] = time.monotonic() - start
        time.sleep(args.settle_s)
        row["during"] = proc_status(process.pid), latencies(
            port, args.requests, image_b64
        )
        for s in idle:
            s.close()
        time.sleep(3 * args.settle_s)
        row["after"] = proc_status(process.pid), latencies(
            port, args.requests, image_b64
        )
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", help="checkout of the old server")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--settle_s", type=float, default=3.0)
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.idle + 512  # inherited by the servers
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    root = tempfile.mkdtemp(prefix="bench_idle_")
    image_b64 = build_fixtures(root, args.n)
    rows = []
    if args.old:
        rows.append(measure("old (http.server)", args.old, root, image_b64,
                            args))
    rows.append(measure("new (aiohttp)", ROOT, root, image_b64, args))
    print(
        f"\n{args.idle} idle connections (request line + partial body), "
        f"{args.requests} normal requests per phase (predict / search "
        "alternating, one keep-alive connection)\n"
    )
    print(
        "| server | phase | RSS MB | threads | p50 ms | p99 ms | failed |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    for row in rows:
        for phase in ("before", "during", "after"):
            (rss, threads), (p50, p99, failed) = row[phase]
            label = {
                "before": "before",
                "during": f"{args.idle} idle open",
                "after": "after they closed",
            }[phase]
            print(
                f"| {row['server']} | {label} | {rss:.0f} | {threads} | "
                f"{p50:.1f} | {p99:.1f} | {failed} |"
            )
    for row in rows:
        print(
            f"{row['server']}: opening {args.idle} connections took "
            f"{row['open_s']:.1f} s; idle cost "
            f"{row['during'][0][0] - row['before'][0][0]:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Exact vs IVF search at 10M codes, in-process and over HTTP, side by side.

Generates `--codes` clustered 64-bit codes (1000 random centres, each bit
flipped with p=0.05, as bench_serving.py and bench_index.py), packed
directly (no float matrix: 80 MB at 10M), then in ONE run:

1. builds raw faiss `IndexBinaryFlat`, `BinaryHammingIndex` flat and the
   index `binary_method="auto"` chooses (`shrewd_tf.retrieval.
   method_policy`: ivf with nprobe tuned at build to recall@10 >= 0.99 on
   1,000 of the codes, recorded in its manifest), timing each build;
2. times single queries in-process, k = `--k`, raw faiss / ours flat /
   ours ivf interleaved query by query (load drifts hit all three alike),
   and prints p50 / p99 and ours flat / raw faiss, and the recall@k of
   the auto index on these queries against raw faiss;
3. saves flat and auto indexes, serves both at once with `python -m
   serving` (no model, two processes) and drives `POST /v1/search` from
   ONE client alternating between them request by request for
   `--duration_s` (each server sees one client; load drifts hit both
   alike), printing p50 / p99 and what the answers say ("exact",
   "recall").

Queries are fresh codes from the same centres (not database rows).

    python benchmarks/bench_search_scale.py                  # 10M, ~5 min
    python benchmarks/bench_search_scale.py --codes 1200000 --duration_s 5

Memory at 10M: ~0.8 GiB here, and each server holds its index (codes,
ids). Servers and client share the machine's cores.
"""

import argparse
import http.client
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np

from http_load import free_port
from http_load import wait_ready
from shrewd_tf.ops.bits import unpack_bits
from shrewd_tf.retrieval.hamming_index import BinaryHammingIndex
from shrewd_tf.retrieval.method_policy import build_binary_index
from shrewd_tf.retrieval.recall import hamming_recall

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_BITS = 64


def make_packed(rng, centres, num, chunk=1_000_000):
    """Packed clustered codes uint8 [num, 8]."""
    packed = np.empty((num, CODE_BITS // 8), np.uint8)
    for start in range(0, num, chunk):
        size = min(chunk, num - start)
        bits = centres[rng.integers(0, len(centres), size)]
        bits ^= (rng.random((size, CODE_BITS)) < 0.05).astype(np.uint8)
        packed[start:start + size] = np.packbits(bits, axis=1)
    return packed


def percentiles(seconds):
    return 1e3 * np.percentile(seconds, 50), 1e3 * np.percentile(seconds, 99)


def time_in_process(searchers, queries, packed_queries, k, rounds):
    """{name: per-query seconds}, searchers interleaved per query."""
    times = {name: [] for name in searchers}
    names = list(searchers)
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for i in range(len(queries)):
            for name in order:
                fn = searchers[name]
                query = packed_queries if name == "raw" else queries
                started = time.perf_counter()
                fn(query[i:i + 1], k)
                times[name].append(time.perf_counter() - started)
    return times


def start_server(index_dir):
    """`python -m serving` over one binary index -> (process, port)."""
    port = free_port()
    command = [
        sys.executable, "-m", "serving", "--binary-index", index_dir,
        "--rest-port", str(port), "--grpc-port", "-1",
    ]
    return subprocess.Popen(command, cwd=REPO_ROOT), port


def post(connection, body):
    """One /v1/search -> (seconds, parsed answer)."""
    started = time.perf_counter()
    connection.request("POST", "/v1/search", body,
                       {"Content-Type": "application/json"})
    answer = connection.getresponse()
    payload = answer.read()
    seconds = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {payload[:200]!r}")
    return seconds, payload


def alternate_load(ports, bodies, duration_s):
    """ONE client alternating requests between the servers of `ports`
    ({name: port}, one keep-alive connection each; each server sees one
    request at a time) -> ({name: latencies}, {name: first answer})."""
    connections = {
        name: http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for name, port in ports.items()
    }
    latencies = {name: [] for name in ports}
    answers = {}
    names = list(ports)
    stop = time.monotonic() + duration_s
    i = 0
    while time.monotonic() < stop:
        body = bodies[i % len(bodies)]
        for name in names if i % 2 == 0 else names[::-1]:
            seconds, payload = post(connections[name], body)
            latencies[name].append(seconds)
            answers.setdefault(name, json.loads(payload))
        i += 1
    for connection in connections.values():
        connection.close()
    return latencies, answers


def search_histogram(port):
    """{le: count} of the server's successful /v1/search latencies, from
    its Prometheus histogram (time from request to answer inside the
    server: the rest of the client's latency is loopback and scheduling)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/monitoring/prometheus/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    counts = {}
    for line in text.splitlines():
        if line.startswith("shrewd_serving_request_latency_seconds_bucket{") \
                and 'endpoint="search"' in line and 'status="200"' in line:
            bound = line.split('le="')[1].split('"')[0]
            counts[bound] = float(line.rsplit(" ", 1)[1])
    return counts


def share_within(before, after, bound):
    """Share of the searches between two histograms answered <= bound."""
    total = after["+Inf"] - before.get("+Inf", 0.0)
    return (after[bound] - before.get(bound, 0.0)) / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", type=int, default=10_000_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2,
                        help="in-process passes over the queries")
    parser.add_argument("--duration_s", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faiss.omp_set_num_threads(1)  # as the index's num_threads=1

    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 2, (1000, CODE_BITS), dtype=np.uint8)
    started = time.perf_counter()
    packed = make_packed(rng, centres, args.codes)
    packed_queries = make_packed(rng, centres, args.queries)
    queries = unpack_bits(packed_queries).astype(np.float32)
    logging.info("%d codes generated in %.1f s", args.codes,
                 time.perf_counter() - started)

    builds = {}
    started = time.perf_counter()
    raw = faiss.IndexBinaryFlat(CODE_BITS)
    raw.add(packed)
    builds["raw"] = time.perf_counter() - started
    started = time.perf_counter()
    flat = BinaryHammingIndex(CODE_BITS).build_packed(packed)
    builds["flat"] = time.perf_counter() - started
    started = time.perf_counter()
    auto = build_binary_index(CODE_BITS, "auto", packed)
    builds["auto"] = time.perf_counter() - started
    del packed
    chosen = f"auto: {auto.method} {auto.params}"
    recall_report = auto.recall_report

    searchers = {
        "raw": raw.search,
        "flat": flat.search,
        "auto": auto.search,
    }
    times = time_in_process(
        searchers, queries, packed_queries, args.k, args.rounds
    )
    # recall@k of the served setting on the fresh queries (not database
    # codes, unlike the build's check), against raw faiss's exact scan.
    fresh_recall = hamming_recall(
        auto.search(queries, args.k)[1],
        raw.search(packed_queries, args.k)[0],
        CODE_BITS,
    )

    work = tempfile.mkdtemp(prefix="bench_search_scale_")
    try:
        for name, index in (("flat", flat), ("auto", auto)):
            index.save(os.path.join(work, name))
        del raw, flat, auto, searchers
        bodies = [json.dumps({"code": q.tolist(), "k": args.k})
                  for q in queries]
        servers = {name: start_server(os.path.join(work, name))
                   for name in ("flat", "auto")}
        try:
            for process, port in servers.values():
                wait_ready(port, process)
            ports = {name: port for name, (_, port) in servers.items()}
            alternate_load(ports, bodies, 3.0)  # warm up
            before = {name: search_histogram(port)
                      for name, port in ports.items()}
            latencies, answers = alternate_load(
                ports, bodies, args.duration_s
            )
            shares = {
                name: {
                    bound: share_within(before[name], search_histogram(port),
                                        bound)
                    for bound in ("0.0025", "0.005")
                }
                for name, port in ports.items()
            }
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                process.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nN={args.codes:,} clustered {CODE_BITS}-bit codes, k={args.k}, "
        f"{args.queries} queries x {args.rounds} rounds in-process, "
        f"1 HTTP client alternating servers for {args.duration_s:g} s, "
        f"1 faiss thread, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'search':<52}{'build s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'exact':>7}{'recall':>8}")
    labels = {
        "raw": "raw faiss IndexBinaryFlat",
        "flat": "BinaryHammingIndex flat",
        "auto": chosen,
    }
    for name in ("raw", "flat", "auto"):
        p50, p99 = percentiles(times[name])
        print(f"{labels[name] + ' (in-process)':<52}{builds[name]:>9.1f}"
              f"{p50:>9.2f}{p99:>9.2f}")
    for name in ("flat", "auto"):
        p50, p99 = percentiles(latencies[name])
        recall = answers[name].get("recall")
        print(f"{labels[name] + ' /v1/search':<52}{'':>9}{p50:>9.2f}"
              f"{p99:>9.2f}{str(answers[name].get('exact')):>7}"
              f"{'-' if recall is None else f'{recall:.4f}':>8}"
              f"   {len(latencies[name])} requests; in the server "
              f"<= 2.5 ms: {shares[name]['0.0025']:.1%}, <= 5 ms: "
              f"{shares[name]['0.005']:.1%}")
    raw50, raw99 = percentiles(times["raw"])
    flat50, flat99 = percentiles(times["flat"])
    print(f"\nours flat / raw faiss, in-process: p50 x{flat50 / raw50:.3f}, "
          f"p99 x{flat99 / raw99:.3f}")
    if recall_report is not None:
        print(f"{chosen}: recall@{recall_report.k} "
              f"{recall_report.recall:.4f}, recall@{recall_report.wide_k} "
              f"{recall_report.recall_wide:.4f} on {recall_report.queries} "
              f"codes; tried {[r['nprobe'] for r in recall_report.tried]}; "
              f"recall@{args.k} on the {args.queries} fresh queries "
              f"{fresh_recall:.4f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory (this process) {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load test of `POST /v1/search` on a 1M-code binary index over loopback.

The script generates `--n` 64-bit codes (random or clustered: 1000 random
centres, each bit flipped with p=0.05) with label / caption / image_uri
metadata, saves a flat `BinaryHammingIndex` and a small encoder SavedModel
(PNG -> mean RGB -> fixed projection -> sigmoid, 64-bit code), starts the
server as a subprocess (`python -m serving`), then drives it from
each of `--threads` client thread counts (one keep-alive HTTP connection
per thread) for `--duration_s` per query kind:

* code: `{"code": [64 floats], "k": K}` (binary mode, Hamming top-k);
* bits: `{"bits": [8 packed bytes], "k": K}`;
* image: `{"image": {"b64": <32x32 PNG>}, "k": K}` (encoder + search).

It prints p50 / p99 latency and requests/s per kind, and, side by side in
the same run, the in-process cost of the pieces: `index.search` of one
query, and the metadata lookup of k ids through
`RetrievalIndex.metadata` (np.isin over all N ids) versus the server's
direct table read.

    python benchmarks/bench_serving.py                   # 1M codes, ~4 min
    python benchmarks/bench_serving.py --n 100000 --threads 8 --duration_s 5

Exact vs IVF at 10M codes (raw faiss, our flat path and the index
`binary_method="auto"` serves, in-process and over HTTP, side by side) is
`bench_search_scale.py`.

Server and clients share the machine's cores (on a 2-core machine the
client threads take a good part of the CPU): read the numbers as a lower
bound of what a dedicated server does.
"""

import argparse
import base64
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import http_load
from shrewd_tf import contract
from shrewd_tf.ops.bits import pack_bits

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_BITS = 64
MODEL = "bench_encoder"


def make_codes(rng, num, kind, chunk=1_000_000):
    """Float codes [num, 64] in [0, 1]."""
    centres = rng.integers(0, 2, (1000, CODE_BITS), dtype=np.uint8)
    codes = np.empty((num, CODE_BITS), np.float32)
    for start in range(0, num, chunk):
        size = min(chunk, num - start)
        if kind == "random":
            bits = rng.integers(0, 2, (size, CODE_BITS), dtype=np.uint8)
        else:
            bits = centres[rng.integers(0, len(centres), size)]
            bits ^= (rng.random((size, CODE_BITS)) < 0.05).astype(np.uint8)
        margin = rng.uniform(0.05, 0.5, (size, CODE_BITS)).astype(np.float32)
        codes[start : start + size] = np.where(
            bits == 1, 0.5 + margin, 0.5 - margin
        )
    return codes


def write_encoder(path):
    """A 64-bit encoder SavedModel: PNG bytes [N] -> code, packed bits."""
    import tensorflow as tf

    class Encoder(tf.Module):
        def __init__(self):
            super().__init__()
            w = np.random.default_rng(0).normal(size=(3, CODE_BITS))
            self.w = tf.Variable(w.astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, image_bytes):
            pooled = tf.map_fn(
                lambda b: tf.reduce_mean(
                    tf.cast(tf.io.decode_png(b, channels=3), tf.float32),
                    [0, 1],
                ),
                image_bytes,
                fn_output_signature=tf.TensorSpec([3], tf.float32),
            )
            code = tf.sigmoid(tf.matmul(pooled / 255.0 - 0.5, self.w) * 4.0)
            bits = tf.reshape(
                tf.cast(code > contract.BIT_THRESHOLD, tf.uint8),
                [-1, CODE_BITS // 8, 8],
            )
            weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.uint8)
            return {
                contract.CODE_OUTPUT: code,
                contract.BITS_OUTPUT: tf.reduce_sum(bits * weights, -1),
            }

    module = Encoder()
    tf.saved_model.save(
        module, path, signatures={contract.SERVING_SIGNATURE: module.serve}
    )


def png_bytes(rng, size=32):
    from PIL import Image

    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument(
        "--kind", choices=["random", "clustered"], default="clustered"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--threads",
        default="1,4,16",
        help="comma-separated client thread counts (default: %(default)s)",
    )
    parser.add_argument("--duration_s", type=float, default=10.0)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from shrewd_tf.retrieval import BinaryHammingIndex
    from serving.retrieval import _metadata_rows

    rng = np.random.default_rng(0)
    work = tempfile.mkdtemp(prefix="bench_serving_")
    try:
        started = time.perf_counter()
        codes = make_codes(rng, args.n, args.kind)
        index = BinaryHammingIndex(code_bits=CODE_BITS, method="flat").build(
            codes
        )
        ids = np.arange(args.n)
        index.set_metadata(
            ids,
            label=(ids % 10).tolist(),
            caption=[f"item {i}" for i in range(args.n)],
            image_uri=[f"images/{i}.png" for i in range(args.n)],
        )
        index.save(os.path.join(work, "binary_index"))
        write_encoder(os.path.join(work, "exports", MODEL, "1"))
        logging.info(
            "%d %s codes, index + metadata + encoder written in %.1f s",
            args.n,
            args.kind,
            time.perf_counter() - started,
        )

        # In-process costs of the pieces (same index, this process).
        queries = make_codes(rng, args.queries, args.kind)
        timings = {
            "index.search (1 query)": [],
            "RetrievalIndex.metadata(k ids)": [],
            "direct metadata table read (k ids)": [],
        }
        for query in queries[:50]:
            t0 = time.perf_counter()
            found, _ = index.search(query[None], args.k)
            t1 = time.perf_counter()
            index.metadata(found[0])
            t2 = time.perf_counter()
            _metadata_rows(index, found[0].tolist())
            t3 = time.perf_counter()
            timings["index.search (1 query)"].append(t1 - t0)
            timings["RetrievalIndex.metadata(k ids)"].append(t2 - t1)
            timings["direct metadata table read (k ids)"].append(t3 - t2)
        del index, codes

        port = http_load.free_port()
        command = [
            sys.executable,
            "-m",
            "serving",
            "--export-root",
            os.path.join(work, "exports"),
            "--binary-index",
            os.path.join(work, "binary_index"),
            "--rest-port",
            str(port),
            "--grpc-port",
            "-1",
            "--max-k",
            str(max(args.k, 1000)),
        ]
        server = subprocess.Popen(command, cwd=REPO_ROOT)
        try:
            t0 = time.perf_counter()
            http_load.wait_ready(port, server)
            logging.info("server ready in %.1f s", time.perf_counter() - t0)
            bodies = {
                "code": [
                    json.dumps({contract.CODE_OUTPUT: q.tolist(), "k": args.k})
                    for q in queries
                ],
                "bits": [
                    json.dumps(
                        {
                            contract.BITS_OUTPUT: pack_bits(q).tolist(),
                            "k": args.k,
                        }
                    )
                    for q in queries
                ],
                "image": [
                    json.dumps(
                        {
                            "image": {
                                "b64": base64.b64encode(
                                    png_bytes(rng)
                                ).decode()
                            },
                            "k": args.k,
                        }
                    )
                    for _ in range(50)
                ],
            }
            results = {}
            for kind, kind_bodies in bodies.items():
                for threads in thread_counts:
                    http_load.load_test(  # warm up
                        port, "/v1/search", kind_bodies, threads, 1.0
                    )
                    results[kind, threads] = http_load.load_test(
                        port, "/v1/search", kind_bodies, threads,
                        args.duration_s,
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n/v1/search, N={args.n:,} {args.kind} {CODE_BITS}-bit codes, flat "
        f"Hamming, k={args.k}, {args.duration_s:g} s per row, "
        f"{os.cpu_count()} CPUs (shared by server and clients)\n"
    )
    print(
        f"{'query':<8}{'threads':>8}{'requests':>10}{'req/s':>10}"
        f"{'p50 ms':>10}{'p99 ms':>10}"
    )
    for (kind, threads), (latencies, elapsed) in results.items():
        print(
            f"{kind:<8}{threads:>8}{len(latencies):>10}"
            f"{len(latencies) / elapsed:>10.1f}"
            f"{1e3 * np.percentile(latencies, 50):>10.2f}"
            f"{1e3 * np.percentile(latencies, 99):>10.2f}"
        )
    print("\nIn-process pieces (median of 50, ms):")
    base = np.median(timings["direct metadata table read (k ids)"])
    for name, values in timings.items():
        median = np.median(values)
        print(
            f"  {name:<38}{1e3 * median:>9.3f}"
            f"   x{median / base:,.0f} of direct read"
        )
    code_p50 = np.percentile(results["code", thread_counts[0]][0], 50)
    print(
        f"\np50 code query ({thread_counts[0]} thread) / in-process "
        f"index.search: "
        f"x{code_p50 / np.median(timings['index.search (1 query)']):.1f}"
    )


if __name__ == "__main__":
    main()

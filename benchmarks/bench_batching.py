"""Server-side batching on and off, side by side: throughput and p99.

Exports a SHREWD model as `configs/fashion_mnist.yaml` builds it (random
weights: the cost of a forward pass does not depend on them; 28x28x1 PNG
in, 64-bit code out), builds a small binary index of codes, and starts two
servers (`python -m serving`) on the same export: one without batching, one
with `--batching-parameters-file` (TF Serving's text format). Both get
`--rest-workers` request threads. Then, for each client count (1, 4, 16),
it drives `:predict` (one image per request) and `/v1/search` with image
queries (encode + search) against the server without batching, then the
one with it, `--duration_s` each, one keep-alive connection per client,
alternating so both see the same machine load.

    python benchmarks/bench_batching.py                  # ~3 min
    python benchmarks/bench_batching.py --clients 1,16 --duration_s 5

Server and clients share the machine's cores: on a 2-core machine read the
figures as ratios, not as what a dedicated server does.
"""

import argparse
import base64
import io
import json
import logging
import os
import shutil
import tempfile

import numpy as np

import http_load

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "shrewd"


def export_model(work, config_path):
    """Exports a random-weight model of the config; returns its shape."""
    from shrewd_tf import config as config_lib
    from shrewd_tf.export.saved_model import export_saved_model
    from shrewd_tf.training import trainer
    import keras

    config = config_lib.ExperimentConfig.from_file(config_path)
    shape = (28, 28, 1)
    keras.utils.set_random_seed(0)
    model = trainer.build_model(config, 10, shape)
    export_saved_model(
        model,
        os.path.join(work, "exports"),
        MODEL,
        1,
        preprocessing={"image_shape": list(shape), "mean": [72.9],
                       "std": [90.0]},
        config=config,
    )
    return shape, config.model.code_bits


def write_index(work, code_bits, rng, count):
    from shrewd_tf.retrieval import BinaryHammingIndex

    codes = rng.random((count, code_bits)).astype(np.float32)
    index = BinaryHammingIndex(code_bits=code_bits).build(codes)
    index.save(os.path.join(work, "binary_index"))


def png_bodies(rng, shape, count):
    from PIL import Image

    pngs = []
    for _ in range(count):
        pixels = rng.integers(0, 256, shape[:2], dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "L").save(buffer, format="PNG")
        pngs.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    predict = [
        json.dumps({"instances": [{"b64": png}]}).encode() for png in pngs
    ]
    search = [
        json.dumps({"image": {"b64": png}, "k": 10}).encode() for png in pngs
    ]
    return predict, search


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", default=os.path.join(REPO_ROOT, "configs",
                                         "fashion_mnist.yaml")
    )
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--duration_s", type=float, default=10.0)
    parser.add_argument("--rest_workers", type=int, default=32)
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--batch_timeout_micros", type=int, default=0)
    parser.add_argument("--num_batch_threads", type=int, default=1)
    parser.add_argument("--index_codes", type=int, default=100_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clients = [int(c) for c in args.clients.split(",")]

    rng = np.random.default_rng(0)
    work = tempfile.mkdtemp(prefix="bench_batching_")
    servers = []
    try:
        shape, code_bits = export_model(work, args.config)
        write_index(work, code_bits, rng, args.index_codes)
        predict, search = png_bodies(rng, shape, 64)
        parameters = os.path.join(work, "batching.txt")
        with open(parameters, "w") as f:
            f.write(
                f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: "
                f"{args.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {args.num_batch_threads} }}\n"
                "max_enqueued_batches { value: 1000 }\n"
            )
        common = [
            "--export-root", os.path.join(work, "exports"),
            "--binary-index", os.path.join(work, "binary_index"),
            "--rest-workers", str(args.rest_workers),
            "--max-in-flight", str(4 * args.rest_workers),
        ]
        ports = {}
        for mode, extra in (
            ("off", []),
            ("on", ["--batching-parameters-file", parameters]),
        ):
            ports[mode] = http_load.free_port()
            servers.append(
                http_load.start_server(
                    common + extra, ports[mode], f"/v1/models/{MODEL}"
                )
            )
        rows = []
        for kind, path, bodies in (
            ("predict", f"/v1/models/{MODEL}:predict", predict),
            ("search (image)", "/v1/search", search),
        ):
            for count in clients:
                for mode in ("off", "on"):
                    # Warm the connection pool and the code path.
                    http_load.load_test(ports[mode], path, bodies, count, 1.0)
                    rows_before, batches_before = http_load.batch_totals(
                        ports[mode]
                    )
                    latencies, elapsed = http_load.load_test(
                        ports[mode], path, bodies, count, args.duration_s
                    )
                    row = http_load.summary(latencies, elapsed)
                    rows_after, batches_after = http_load.batch_totals(
                        ports[mode]
                    )
                    row["rows_per_batch"] = (rows_after - rows_before) / max(
                        batches_after - batches_before, 1
                    )
                    rows.append((kind, count, mode, row))
                    logging.info(
                        "%s, %d clients, batching %s: %.1f req/s, p50 %.1f "
                        "ms, p99 %.1f ms, %.1f rows per batch", kind, count,
                        mode, row["requests_per_s"], row["p50_ms"],
                        row["p99_ms"], row["rows_per_batch"],
                    )
        print(
            f"\nbatching on: max_batch_size {args.max_batch_size}, "
            f"batch_timeout_micros {args.batch_timeout_micros}, "
            f"num_batch_threads {args.num_batch_threads}; rest_workers "
            f"{args.rest_workers} on both; {args.duration_s:.0f} s per row\n"
        )
        print("| query | clients | off: req/s | off: p99 | on: req/s | "
              "on: p99 | on / off (req/s) | rows per batch |")
        print("|---|---|---|---|---|---|---|---|")
        for i in range(0, len(rows), 2):
            kind, count, _, off = rows[i]
            on = rows[i + 1][3]
            print(
                f"| {kind} | {count} | {off['requests_per_s']:.1f} | "
                f"{off['p99_ms']:.1f} ms | {on['requests_per_s']:.1f} | "
                f"{on['p99_ms']:.1f} ms | "
                f"{on['requests_per_s'] / off['requests_per_s']:.2f}× | "
                f"{on['rows_per_batch']:.1f} |"
            )
    finally:
        for process in servers:
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Peak memory of an index build from codes shards: streamed vs whole array.

Writes N synthetic 64-bit codes as codes shards in the on-disk format bulk
encoding writes (`shrewd_tf.retrieval.code_shards`: one tf.train.Example
per code; id, code float[64], label, label_name, caption, image_uri),
generated and written in chunks so the generator never holds N x 64
floats. Then, per configuration, a fresh subprocess builds the index from
the shards and reports its peak RSS (VmHWM) and its RSS after the imports
(TensorFlow, faiss, ScaNN), side by side:

* "streamed": `builder.build_indexes_from_shards` (this change);
* "whole array": `read_codes` + `build_indexes` (the way before it: the
  codes read in chunks, concatenated, sorted, then packed / copied).

The floor is what the built index itself must hold: N d / 8 bytes of
packed codes (+ 4 d bytes per code of float codes when re-ranking or for
ScaNN brute force). Ids are 10-character strings (NumPy U10: 40 bytes each
in the index). Metadata tables are left out unless --metadata (the
index's table is one dict per id, far above the codes).

    python benchmarks/bench_index_memory.py --n 1000000
    python benchmarks/bench_index_memory.py --n 10000000 \
        --configs "binary flat"           # ~12 min (210 s of shards)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CODE_BITS = 64
CONFIGS = {
    "binary flat": dict(kinds="binary", rerank=False),
    "binary flat + rerank": dict(kinds="binary", rerank=True),
    "scann brute force": dict(
        kinds="scann", rerank=False, scann_params={"brute_force": True}
    ),
}


def _template():
    """One serialized record and the byte offsets of its id and code."""
    from shrewd_tf.retrieval.code_shards import code_example

    marker = "IDMARK0000"
    code = (np.arange(CODE_BITS, dtype=np.float32) + 1000.5) / 4096.0
    row = {"label": 3, "label_name": "class_3", "caption": "a picture",
           "image_uri": "images/x.png"}
    record = code_example(marker, code, row)
    id_at = record.index(marker.encode())
    code_at = record.index(code.tobytes())
    return np.frombuffer(record, np.uint8), id_at, code_at


def write_shards(directory, num, num_shards, chunk=200_000, seed=0):
    """N random float codes (bits pushed from 0.5) as codes shards."""
    import tensorflow as tf

    template, id_at, code_at = _template()
    rng = np.random.default_rng(seed)
    per_shard = -(-num // num_shards)
    for shard in range(num_shards):
        path = os.path.join(
            directory, f"codes-{shard:05d}-of-{num_shards:05d}.tfrecord"
        )
        first, last = shard * per_shard, min(num, (shard + 1) * per_shard)
        with tf.io.TFRecordWriter(path) as writer:
            for start in range(first, last, chunk):
                count = min(chunk, last - start)
                bits = rng.integers(0, 2, (count, CODE_BITS), np.uint8)
                margin = rng.uniform(0.05, 0.45, (count, CODE_BITS))
                codes = np.where(bits, 1 - margin, margin).astype(np.float32)
                # Ids in a shuffled order, as workers write them.
                numbers = rng.permutation(count) + start
                ids = np.char.zfill(numbers.astype(str), 10).astype("S10")
                records = np.tile(template, (count, 1))
                records[:, id_at:id_at + 10] = ids.view(np.uint8).reshape(
                    count, 10
                )
                records[:, code_at:code_at + 4 * CODE_BITS] = codes.view(
                    np.uint8
                )
                for record in records:
                    writer.write(record.tobytes())


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(way, config, codes_dir, output_dir, chunk_size, metadata):
    """Builds one index in this process; prints RSS figures as JSON."""
    import faiss  # noqa: F401  (imports counted in the baseline)
    import scann  # noqa: F401
    import tensorflow as tf  # noqa: F401

    from shrewd_tf.retrieval import builder
    from shrewd_tf.retrieval import hamming_index  # noqa: F401
    from shrewd_tf.retrieval import scann_index  # noqa: F401

    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    if way == "streamed":
        builder.build_indexes_from_shards(
            codes_dir, output_dir, chunk_size=chunk_size,
            with_metadata=metadata, **config,
        )
    else:
        ids, codes, table = builder.read_codes(codes_dir)
        builder.build_indexes(
            codes, ids, output_dir, metadata=table if metadata else None,
            **config,
        )
    print(json.dumps({
        "base_kib": base, "peak_kib": _rss_kib("VmHWM"),
        "seconds": time.perf_counter() - start,
    }))


def measure(way, name, args, codes_dir, scratch):
    output_dir = os.path.join(scratch, "out")
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", way,
        "--config", name, "--codes_dir", codes_dir,
        "--output_dir", output_dir, "--chunk_size", str(args.chunk_size),
    ] + (["--metadata"] if args.metadata else [])
    done = subprocess.run(command, capture_output=True, text=True)
    shutil.rmtree(output_dir, ignore_errors=True)
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{way} {name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--chunk_size", type=int, default=65_536)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--metadata", action="store_true")
    parser.add_argument("--scratch", default=None)
    parser.add_argument("--worker", choices=("streamed", "whole"))
    parser.add_argument("--config")
    parser.add_argument("--codes_dir")
    parser.add_argument("--output_dir")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, CONFIGS[args.config], args.codes_dir,
               args.output_dir, args.chunk_size, args.metadata)
        return 0
    scratch = tempfile.mkdtemp(prefix="bench_index_memory-", dir=args.scratch)
    try:
        codes_dir = os.path.join(scratch, "codes")
        os.mkdir(codes_dir)
        start = time.perf_counter()
        write_shards(codes_dir, args.n, args.shards)
        size = sum(os.path.getsize(os.path.join(codes_dir, f))
                   for f in os.listdir(codes_dir))
        print(f"{args.n:,} codes of {CODE_BITS} bits: {size / 2**20:,.0f} "
              f"MiB of shards in {time.perf_counter() - start:.0f} s")
        mib = args.n / 2**20
        print("| index | floor (index's codes) | streamed peak - base "
              "| whole array peak - base | whole / streamed | base RSS "
              "| build s (streamed, whole) |")
        print("|---|---|---|---|---|---|---|")
        for name in args.configs.split(","):
            config = CONFIGS[name]
            floor = CODE_BITS / 8 if config["kinds"] == "binary" else 0
            if config["rerank"] or config["kinds"] == "scann":
                floor += 4 * CODE_BITS
            new = measure("streamed", name, args, codes_dir, scratch)
            old = measure("whole", name, args, codes_dir, scratch)
            grown = [(r["peak_kib"] - r["base_kib"]) / 1024 for r in (new, old)]
            print(
                f"| {name} | {floor * mib:,.0f} MiB | {grown[0]:,.0f} MiB "
                f"| {grown[1]:,.0f} MiB | {grown[1] / grown[0]:.1f}x "
                f"| {new['base_kib'] / 1024:,.0f} MiB "
                f"| {new['seconds']:.0f}, {old['seconds']:.0f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

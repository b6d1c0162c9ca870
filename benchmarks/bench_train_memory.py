"""Peak memory of `shrewd train` against the records per split (issue 12).

Training streams TFRecords: no split is held in memory, so the peak RSS of
a training run should stay flat (goal: within 200 MB) from 1k to 100k
records per split. Each run is `shrewd train` on a TFRecord directory
(`data.dataset=tfrecords`, stored at 28x28x1, read at
`data.image_size=[128,128]`), a few steps, no retrieval callback, then the
full evaluation of the test split (all of its records are queries and
database). Each run is its own subprocess under a small wrapper process,
so `getrusage(RUSAGE_CHILDREN).ru_maxrss` in the wrapper is that run's
peak RSS alone.

Record directories: split sizes up to the Fashion-MNIST test split (10k)
are written by the real job, `python -m pipeline.make_tfrecords --source
fashion_mnist --limit N`; larger ones (Fashion-MNIST has 60k/10k) by a
generator here that writes the same layout (`<split>-SSSSS-of-NNNNN
.tfrecord` shards of 10k records, `dataset_info.json` with the per-split
statistics `make_tfrecords` stores): Fashion-MNIST images reused under new
ids, PNG-encoded at 28x28x1 (source "fashion_mnist": the class
distances are WordNet's for its classes).

With `--old-commit REF` the code before streaming runs side by side: a
`git worktree` of REF whose package comes first on PYTHONPATH (checked by
printing `shrewd_tf.__file__`), for `--old-sizes` only.

Usage:
    .venv/bin/python benchmarks/bench_train_memory.py \
        [--sizes 1000,10000,100000] [--workdir /tmp/shrewd-bench-memory] \
        [--old-commit 1a6034e --old-sizes 1000,10000]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_MB = 200
RECORDS_PER_SHARD = 10_000
FASHION_MNIST_TEST = 10_000

# Runs `argv[1:]` as a child and prints its peak RSS (KiB on Linux) and
# wall time as JSON: the wrapper has no other children, so
# RUSAGE_CHILDREN is that child's peak alone.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "peak_kib": peak, "wall_s": wall}))
"""


def fashion_mnist_pool():
    """(uint8 [P, 28, 28, 1], int64 [P]) images to reuse, or random ones."""
    from shrewd_tf.data import tfds_sources

    try:
        return tfds_sources.load_fashion_mnist("train")
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 10, 60_000))


def write_synthetic_records(directory, count, splits=("train", "test")):
    """A `make_tfrecords`-layout directory of `count` records per split.

    Record i of a split is Fashion-MNIST training image i mod 60k (PNG,
    28x28x1) under the id "<split>/<i>". The statistics are those
    `make_tfrecords` stores (pixel mean/std per channel at the stored
    shape, records per label), computed from the pool images' sums.
    """
    import tensorflow as tf

    from shrewd_tf.data import records
    from shrewd_tf.data import tfds_sources

    images, labels = fashion_mnist_pool()
    pool = min(len(images), count)
    pngs = [records.encode_png(image) for image in images[:pool]]
    pixels = images[:pool].reshape(pool, -1).astype(np.float64)
    sums, squares = pixels.sum(1), np.square(pixels).sum(1)
    names = tfds_sources.FASHION_MNIST_CLASS_NAMES
    os.makedirs(directory, exist_ok=True)
    shards = records.shard_count(count, RECORDS_PER_SHARD)
    statistics = {}
    for split in splits:
        index = np.arange(count) % pool
        for shard in range(shards):
            path = os.path.join(
                directory,
                f"{split}-{shard:05d}-of-{shards:05d}{records.SHARD_SUFFIX}")
            with tf.io.TFRecordWriter(path) as writer:
                for i in range(shard * count // shards,
                               (shard + 1) * count // shards):
                    j, label = int(index[i]), int(labels[index[i]])
                    writer.write(records.serialize(records.ImageRecord(
                        id=f"{split}/{i:06d}", image=pngs[j], label=label,
                        label_name=names[label])))
        seen = count * pixels.shape[1]
        mean = sums[index].sum() / seen
        std = np.sqrt(max(squares[index].sum() / seen - mean**2, 0.0))
        counts = np.bincount(labels[index], minlength=len(names))
        statistics[split] = {
            "mean": [float(mean)], "std": [float(std)],
            "label_counts": {str(c): int(n) for c, n in enumerate(counts)
                             if n},
        }
    records.DatasetInfo(
        image_shape=(28, 28, 1), class_names=tuple(names),
        splits={split: count for split in splits}, source="fashion_mnist",
        statistics=statistics,
    ).save(directory)


def write_records(directory, count):
    """Writes (once) the record directory of `count` records per split;
    returns how it was written."""
    if os.path.exists(os.path.join(directory, "dataset_info.json")):
        return "reused"
    start = time.perf_counter()
    if count <= FASHION_MNIST_TEST:
        subprocess.run(
            [sys.executable, "-m", "pipeline.make_tfrecords",
             "--source", "fashion_mnist", "--output-dir", directory,
             "--limit", str(count)],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        how = "make_tfrecords"
    else:
        write_synthetic_records(directory, count)
        how = "synthetic"
    return f"{how} ({time.perf_counter() - start:.0f} s)"


def train_command(python, data_dir, output_dir, args):
    sets = {
        "data.dataset": "tfrecords",
        "data.data_dir": data_dir,
        "data.image_size": "[128,128]",
        "data.train_subset": "null",
        "data.test_subset": "null",
        "model.encoder": args.encoder,
        "train.epochs": "1",
        "train.steps_per_epoch": str(args.steps),
        "train.eval_every": "0",
        "train.per_replica_batch_size": str(args.batch),
    }
    command = [python, "-m", "shrewd_tf.cli", "train",
               "--config", os.path.join(REPO, "configs/fashion_mnist.yaml"),
               "--output-dir", output_dir]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    return command


def measure(command, env, cwd):
    # Not from the repository: `python -m` puts the working directory
    # first on sys.path, ahead of PYTHONPATH (the old code's worktree).
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], env=env, cwd=cwd,
        check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        print(f"FAILED (exit {result['rc']}): {' '.join(command)}\n"
              f"{out.stderr[-3000:]}", flush=True)
        return None
    return result["peak_kib"] / 1024, result["wall_s"]


def package_file(env, cwd):
    return subprocess.run(
        [sys.executable, "-c", "import shrewd_tf; print(shrewd_tf.__file__)"],
        env=env, cwd=cwd, check=True, capture_output=True,
        text=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="records per split, comma-separated")
    parser.add_argument("--workdir", default="/tmp/shrewd-bench-memory")
    parser.add_argument("--encoder", default="cifar_resnet:8:4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--old-commit", default=None,
                        help="also run this commit's code (git worktree)")
    parser.add_argument("--old-sizes", default="1000,10000")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    variants = [("streaming (HEAD)", env, sizes)]
    worktree = None
    if args.old_commit:
        worktree = os.path.join(args.workdir, "old-shrewd")
        if not os.path.exists(worktree):
            subprocess.run(["git", "worktree", "add", "--detach", worktree,
                            args.old_commit], cwd=REPO, check=True,
                           capture_output=True)
        old_env = dict(env, PYTHONPATH=worktree)
        old_sizes = [int(v) for v in args.old_sizes.split(",")]
        variants.append((f"materialising ({args.old_commit})", old_env,
                         old_sizes))
    for name, variant_env, _ in variants:
        where = package_file(variant_env, args.workdir)
        print(f"{name}: shrewd_tf = {where}")

    for count in sorted({c for _, _, cs in variants for c in cs}):
        directory = os.path.join(args.workdir, f"records-{count}")
        how = write_records(directory, count)
        print(f"records-{count}: {how}", flush=True)

    rows = []
    try:
        for name, variant_env, variant_sizes in variants:
            for count in variant_sizes:
                directory = os.path.join(args.workdir, f"records-{count}")
                output = os.path.join(
                    args.workdir, f"run-{len(rows)}-{count}")
                measured = measure(
                    train_command(sys.executable, directory, output, args),
                    variant_env, args.workdir)
                if measured is None:
                    continue
                peak, wall = measured
                rows.append((name, count, peak, wall))
                print(f"{name} {count}: {peak:,.0f} MB, {wall:.0f} s",
                      flush=True)
    finally:
        if worktree:
            subprocess.run(["git", "worktree", "remove", "--force",
                            worktree], cwd=REPO, check=False)

    print(f"\nshrewd train, {args.encoder}, batch {args.batch}, "
          f"{args.steps} steps, 128x128x1 (stored 28x28x1), full test "
          "split evaluated")
    print("| code | records per split | peak RSS MB | wall s |")
    print("|---|---|---|---|")
    for name, count, peak, wall in rows:
        print(f"| {name} | {count:,} | {peak:,.0f} | {wall:.0f} |")
    for name, _, _ in variants:
        peaks = [peak for n, _, peak, _ in rows if n == name]
        if not peaks:
            continue
        spread = max(peaks) - min(peaks)
        verdict = "within" if spread <= GOAL_MB else "OVER"
        print(f"{name}: spread (max - min) {spread:,.0f} MB, {verdict} "
              f"the {GOAL_MB} MB goal")


if __name__ == "__main__":
    main()

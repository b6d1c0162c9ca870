"""Time and peak memory of the SHREWD losses, chunked vs naive, side by side.

For B in (256, 1024, 4096) and d = 64 codes, runs forward + backward of

* L_sim (eq. 2) with `shrewd_tf.ops.pairwise.pairwise_manhattan_distances`
  (bit-chunked, custom chunked gradient);
* L_sim through the naive [B, B, d] pairwise tensor and TF's own gradient
  (skipped where its estimated peak exceeds --naive_limit_gib);
* L_KL (eq. 4) with a fresh Beta(0.1, 0.1) target sample of the same size,

and prints times, peak memory and chunked/naive ratios.

Each case runs in its own subprocess and reports the growth of ru_maxrss
over its baseline after TF start-up and a small warm-up (on CPU,
`tf.config.experimental.get_memory_info` raises "Allocator stats not
available", so process RSS is the measure). Times are the median of a few
`tf.function` calls after one warm-up (tracing) call. On a GPU, ru_maxrss
does not see device memory; pass --device_memory to read the TF allocator's
peak instead.

Usage:
    python benchmarks/bench_losses.py [--batches 256 1024 4096]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CODE_BITS = 64
# Naive pairwise L1 keeps about three [B, B, d] float32 tensors alive at
# its peak (the difference, its abs, and the gradient being built).
NAIVE_TENSORS_AT_PEAK = 3


def naive_peak_estimate_bytes(batch, bits=CODE_BITS):
    return NAIVE_TENSORS_AT_PEAK * batch * batch * bits * 4


def run_case(case, batch, repeats, device_memory):
    """Runs one case in this process; returns a dict of measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from shrewd_tf import losses
    from shrewd_tf.ops import target_sampling

    def naive_similarity(codes, targets):
        distances = tf.reduce_sum(
            tf.abs(codes[:, None, :] - codes[None, :, :]), axis=-1
        )
        terms = tf.abs(
            distances / tf.reduce_sum(distances)
            - targets / tf.reduce_sum(targets)
        )
        return tf.reduce_sum(terms * (0.1 / (0.1 + targets)) ** 2)

    def kl_loss(codes, targets):
        del targets
        sample = target_sampling.sample_target_codes(
            tf.shape(codes), "beta", 0.1
        )
        return losses.empirical_kl_loss(codes, sample)

    fn = {
        "sim_chunked": losses.similarity_matching_loss,
        "sim_naive": naive_similarity,
        "kl": kl_loss,
    }[case]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, CODE_BITS], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
        ]
    )
    def step(codes, targets):
        with tf.GradientTape() as tape:
            tape.watch(codes)
            value = fn(codes, targets)
        return value, tape.gradient(value, codes)

    def inputs(size):
        rng = np.random.default_rng(0)
        codes = rng.random((size, CODE_BITS)).astype("float32")
        labels = rng.integers(0, 100, size=size)
        targets = (labels[:, None] != labels[None, :]).astype("float32")
        return tf.constant(codes), tf.constant(targets)

    step(*inputs(8))  # trace and load kernels before the baseline
    codes, targets = inputs(batch)
    if device_memory:
        tf.config.experimental.reset_memory_stats("GPU:0")
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        value, grad = step(codes, targets)
        grad.numpy()
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "case": case,
        "batch": batch,
        "seconds": statistics.median(times[1:]),
        "peak_mib": (peak_kib - baseline_kib) / 1024,
        "value": float(value),
        "finite_grad": bool(np.all(np.isfinite(grad.numpy()))),
    }
    if device_memory:
        info = tf.config.experimental.get_memory_info("GPU:0")
        result["peak_mib"] = info["peak"] / 2**20
    return result


def measure(case, batch, repeats, device_memory):
    """Runs `case` in a fresh subprocess so ru_maxrss is its own."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--case",
        case,
        "--batches",
        str(batch),
        "--repeats",
        str(repeats),
    ]
    if device_memory:
        command.append("--device_memory")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            [root, os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    )
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"case {case} B={batch} failed:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def repeats_for(batch):
    return 5 if batch <= 1024 else 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[256, 1024, 4096]
    )
    parser.add_argument("--naive_limit_gib", type=float, default=6.0)
    parser.add_argument("--device_memory", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:  # child process: one measurement, printed as JSON
        result = run_case(
            args.case, args.batches[0], args.repeats, args.device_memory
        )
        print(json.dumps(result))
        return 0

    started = time.perf_counter()
    print(
        f"d = {CODE_BITS}; forward + backward; median time; peak memory = "
        "growth of the process peak over its warmed-up baseline"
    )
    header = (
        f"{'B':>5} | {'chunked s':>9} {'MiB':>7} | {'naive s':>9} "
        f"{'MiB':>7} | {'time ratio':>10} {'mem ratio':>9} | "
        f"{'L_KL s':>7} {'MiB':>6}"
    )
    print(header)
    print("-" * len(header))
    notes = []
    for batch in args.batches:
        repeats = repeats_for(batch)
        chunked = measure("sim_chunked", batch, repeats, args.device_memory)
        estimate_gib = naive_peak_estimate_bytes(batch) / 2**30
        if estimate_gib > args.naive_limit_gib:
            naive = None
            notes.append(
                f"B={batch}: naive skipped, its estimated peak is "
                f"{estimate_gib:.1f} GiB ({NAIVE_TENSORS_AT_PEAK} x "
                f"[B, B, d] float32) > {args.naive_limit_gib} GiB"
            )
        else:
            naive = measure("sim_naive", batch, repeats, args.device_memory)
            if abs(naive["value"] - chunked["value"]) > 1e-4 * max(
                1.0, abs(naive["value"])
            ):
                notes.append(
                    f"B={batch}: values differ: chunked "
                    f"{chunked['value']:.6g} vs naive {naive['value']:.6g}"
                )
        kl = measure("kl", batch, repeats, args.device_memory)
        if not (chunked["finite_grad"] and kl["finite_grad"]):
            notes.append(f"B={batch}: non-finite gradient")
        if naive is None:
            naive_cells = f"{'skipped':>9} {'-':>7} | {'-':>10} {'-':>9}"
        else:
            time_ratio = naive["seconds"] / chunked["seconds"]
            mem_ratio = naive["peak_mib"] / max(chunked["peak_mib"], 1e-9)
            naive_cells = (
                f"{naive['seconds']:9.3f} {naive['peak_mib']:7.0f} | "
                f"{time_ratio:9.2f}x {mem_ratio:8.1f}x"
            )
        print(
            f"{batch:5d} | {chunked['seconds']:9.3f} "
            f"{chunked['peak_mib']:7.0f} | {naive_cells} | "
            f"{kl['seconds']:7.3f} {kl['peak_mib']:6.0f}"
        )
    print("ratios are naive / chunked (> 1: chunked is faster / smaller)")
    for note in notes:
        print("note:", note)
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

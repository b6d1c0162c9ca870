"""Streaming input pipeline vs the training step it feeds (issue 12).

For each shape, side by side in one run:

* input: images/s of `ExperimentData.train_dataset` over TFRecords (read,
  shuffle, decode, preprocess to the model's size, augment, standardise,
  batch, as `shrewd train` feeds it), iterated without a model;
* step: images/s of the compiled training step (`train_on_batch` of the
  model `shrewd train` builds and compiles, SIM-KL-CLASS) on one batch of
  the same shape, repeated.

The input never bounds a step when input / step > 1 (the pipeline runs
beside the step, so on a shared CPU it also takes cores from the step:
the ratio says how much headroom there is, not that the two overlap for
free).

Records are synthetic and written here: PNGs at 32x32x3 (the CIFAR shape,
ResNet-20) and 256x256x3 JPEGs read at 224x224x3 (the ImageNet shape,
ResNet-50), in `make_tfrecords` layout.

Usage:
    .venv/bin/python benchmarks/bench_input_vs_step.py \
        [--workdir /tmp/shrewd-bench-input] [--shapes 32,224]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from shrewd_tf.config import ExperimentConfig
from shrewd_tf.data import pipelines
from shrewd_tf.data import records
from shrewd_tf.data import tfrecord_splits
from shrewd_tf.training import distribution
from shrewd_tf.training import objective as training
from shrewd_tf.training import trainer

# name: (stored H/W, read H/W, encoder, classes, batch, records, format)
CASES = {
    32: ("ResNet-20 32x32x3", 32, 32, "resnet20", 100, 64, 20_000, "png"),
    224: ("ResNet-50 224x224x3", 256, 224, "resnet50", 1000, 16, 2_000,
          "jpeg"),
}


def synthetic_image(rng, size):
    """A smooth uint8 [size, size, 3] image with noise (compresses like a
    photo, unlike pure noise)."""
    coarse = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    image = tf.image.resize(coarse, (size, size), "bicubic")[0].numpy()
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_records(directory, stored, read, classes, count, image_format):
    if os.path.exists(os.path.join(directory, records.INFO_FILE)):
        return
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    # 256 distinct images reused under new ids: decoding cost is the same.
    if image_format == "jpeg":
        def encode(image):
            return tf.io.encode_jpeg(image, quality=90).numpy()
    else:
        encode = records.encode_png
    pool = [encode(synthetic_image(rng, stored)) for _ in range(256)]
    shards = max(2, records.shard_count(count, 5_000))
    for shard in range(shards):
        path = os.path.join(
            directory, f"train-{shard:05d}-of-{shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard * count // shards,
                           (shard + 1) * count // shards):
                label = i % classes
                writer.write(records.serialize(records.ImageRecord(
                    id=f"train/{i:06d}", image=pool[i % len(pool)],
                    label=label, label_name=f"class{label}")))
    records.DatasetInfo(
        image_shape=(read, read, 3),
        class_names=tuple(f"class{c}" for c in range(classes)),
        splits={"train": count}, source="synthetic",
    ).save(directory)


def experiment_data(directory, classes):
    info = records.DatasetInfo.load(directory)
    train = tfrecord_splits.RecordSource(directory, "train", info)
    rng = np.random.default_rng(1)
    distances = rng.uniform(0.2, 1.0, (classes, classes))
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0.0)
    return pipelines.ExperimentData(
        train=train, test=train, train_count=info.splits["train"],
        test_labels=np.zeros([0], np.int64),
        mean=np.full([3], 120.0, np.float32),
        std=np.full([3], 60.0, np.float32),
        class_names=list(info.class_names), class_distances=distances)


def input_rate(dataset, batch, batches, warmup=3):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def step_rate(train_model, x, y, batch, steps, warmup=2):
    for _ in range(warmup):
        train_model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        train_model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def run_case(workdir, size, input_batches, train_steps):
    name, stored, read, encoder, classes, batch, count, image_format = (
        CASES[size])
    directory = os.path.join(workdir, f"records-{size}")
    write_records(directory, stored, read, classes, count, image_format)
    data = experiment_data(directory, classes)
    config = ExperimentConfig().with_overrides({
        "model.encoder": encoder, "train.per_replica_batch_size": batch,
        "data.augment": True})
    distribution.set_precision_policy("auto")
    model = trainer.build_model(config, classes, data.input_shape)
    train_model = training.compile_shrewd_model(
        model, config, data.class_distances, 1, 100)
    split = training.targets_for(list(train_model.output))
    dataset = data.train_dataset(batch, seed=0, augment=True).repeat().map(
        split)
    x, y = next(iter(dataset))
    inputs = input_rate(dataset, batch, input_batches)
    steps = step_rate(train_model, x, y, batch, train_steps)
    return name, batch, image_format, inputs, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/shrewd-bench-input")
    parser.add_argument("--shapes", default="32,224")
    parser.add_argument("--input-batches", type=int, default=60)
    parser.add_argument("--train-steps", type=int, default=8)
    args = parser.parse_args()
    rows = [run_case(args.workdir, int(size), args.input_batches,
                     args.train_steps)
            for size in args.shapes.split(",")]
    print(f"\nCPU threads visible: {os.cpu_count()}")
    print("| model and input | batch | records | input img/s | "
          "step img/s | input / step |")
    print("|---|---|---|---|---|---|")
    for name, batch, image_format, inputs, steps in rows:
        print(f"| {name} | {batch} | {image_format} | {inputs:,.0f} | "
              f"{steps:,.1f} | {inputs / steps:,.1f}x |")


if __name__ == "__main__":
    main()

"""Input pipeline throughput: augmented training vs plain evaluation batches.

Prints images/s for both on Fashion-MNIST (or random data when the Debian
package is missing) and their ratio, measured side by side in one run.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from shrewd_tf.data import image_dataset
from shrewd_tf.data import tfds_sources as datasets


def throughput(dataset, repeats=2):
    best = 0.0
    for _ in range(repeats):
        start, count = time.perf_counter(), 0
        for images, _ in dataset:
            count += int(images.shape[0])
        best = max(best, count / (time.perf_counter() - start))
    return best


def main():
    try:
        images, labels = datasets.load_fashion_mnist("train")
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 10, 60_000)
    start = time.perf_counter()
    mean, std = image_dataset.channel_statistics(images)
    stats_s = time.perf_counter() - start
    common = dict(global_batch_size=512, mean=mean, std=std, seed=0)
    train = image_dataset.make_image_dataset(
        images, labels, training=True, **common
    )
    evaluate = image_dataset.make_image_dataset(
        images, labels, training=False, **common
    )
    train_rate, eval_rate = throughput(train), throughput(evaluate)
    print(f"channel_statistics on {len(images)} images: {stats_s:.2f} s")
    print(f"train (shuffle+flip+shift): {train_rate:,.0f} images/s")
    print(f"eval (normalise only):      {eval_rate:,.0f} images/s")
    print(f"ratio eval/train: {eval_rate / train_rate:.2f}")


if __name__ == "__main__":
    main()

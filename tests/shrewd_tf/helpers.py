"""Small generated experiments shared by the training tests."""

import numpy as np

from shrewd_tf import inputs
from shrewd_tf import wordnet_corpus

# Four classes: two pairs of near neighbours (0~1, 2~3), far across pairs.
CLASS_DISTANCES = np.array(
    [
        [0.0, 0.2, 0.8, 0.8],
        [0.2, 0.0, 0.8, 0.8],
        [0.8, 0.8, 0.0, 0.2],
        [0.8, 0.8, 0.2, 0.0],
    ]
)


def make_data(train=256, test=96, size=12, channels=1, seed=0):
    """Images whose class is a bright quadrant, plus noise (uint8)."""
    rng = np.random.default_rng(seed)

    def split(count):
        labels = rng.integers(0, 4, count)
        images = rng.integers(0, 60, (count, size, size, channels))
        half = size // 2
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] += 180
        return images.astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = split(train)
    test_x, test_y = split(test)
    mean = train_x.reshape(-1, channels).mean(0).astype(np.float32)
    std = train_x.reshape(-1, channels).std(0).astype(np.float32)
    return inputs.ExperimentData(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        mean=mean,
        std=std,
        class_names=["a", "b", "c", "d"],
        class_distances=CLASS_DISTANCES,
    )


def numpy_target_distances(embeddings, metric):
    """Reference pairwise target distances: 1 - cos or Euclidean, zero diagonal."""
    embeddings = np.asarray(embeddings, np.float64)
    if metric == "cosine":
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        targets = 1.0 - unit @ unit.T
    else:
        targets = np.linalg.norm(
            embeddings[:, None] - embeddings[None], axis=-1
        )
    np.fill_diagonal(targets, 0.0)
    return targets


def make_fake_source(directory, skip=()):
    """Tiny stand-ins for the Debian WordNet files (the build does not parse
    them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in wordnet_corpus.WORDNET_DATA_FILES:
        if name not in skip:
            (directory / name).write_text(f"fake {name}\n")
    return directory

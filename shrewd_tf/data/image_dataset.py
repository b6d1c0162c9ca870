"""The tf.data input pipeline: standardised, augmented image batches.

`make_image_dataset` turns arrays or a `(image, label)` dataset into
batches of per-channel standardised float32 images (`preprocess.
preprocess_image`, the exported model's preprocessing) with the CIFAR
augmentations (random horizontal flip, random shifts) for training;
`channel_statistics` gives the training mean and standard deviation it
standardises with.

Example:
    mean, std = channel_statistics(train_images)
    train = make_image_dataset(train_images, train_labels,
                               global_batch_size=256, training=True,
                               mean=mean, std=std, seed=0)
"""

import logging

import numpy as np
import tensorflow as tf

from shrewd_tf.data import preprocess

logger = logging.getLogger(__name__)

DEFAULT_SHIFT_FRACTION = 0.15


def channel_statistics(images, chunk_size=4096):
    """Per-channel mean and standard deviation of images, in pixel units.

    Uses float64 running sums over chunks, so it needs little memory and is
    exact to float64 rounding. The standard deviation is the population one
    (ddof=0).

    Args:
        images: array-like [N, H, W, C] (any numeric dtype), or a
            tf.data.Dataset yielding `(image [H, W, C], label)` pairs or bare
            images (image sizes may differ between elements).
        chunk_size: images per chunk for array inputs.

    Returns:
        (mean, std): float32 arrays [C].

    Raises:
        ValueError: not a 4-D array, or no pixels.
    """
    total = total_sq = None
    count = 0

    def accumulate(chunk):
        nonlocal total, total_sq, count
        pixels = np.asarray(chunk, dtype=np.float64)
        pixels = pixels.reshape(-1, pixels.shape[-1])
        sums, sq = pixels.sum(axis=0), np.square(pixels).sum(axis=0)
        total = sums if total is None else total + sums
        total_sq = sq if total_sq is None else total_sq + sq
        count += pixels.shape[0]

    if isinstance(images, tf.data.Dataset):
        for element in images.as_numpy_iterator():
            accumulate(element[0] if isinstance(element, tuple) else element)
    else:
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(
                "images must have shape [N, H, W, C]. "
                f"Received: images.shape={images.shape}"
            )
        for start in range(0, images.shape[0], chunk_size):
            accumulate(images[start : start + chunk_size])
    if count == 0:
        raise ValueError("channel_statistics needs at least one pixel.")
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def random_shift(image, max_shift, seed):
    """Shifts an image by a random integer offset, filling with zeros.

    Implemented as zero padding by `max_shift` pixels on every side followed
    by a random crop of the original size, so each axis is shifted by an
    offset drawn uniformly from {-max_shift, ..., max_shift}.

    Args:
        image: float tensor [H, W, C] with static shape.
        max_shift: (int, int), the largest shift in pixels along H and W.
        seed: int tensor [2], seed of the stateless random crop.

    Returns:
        Tensor [H, W, C], same dtype.
    """
    shape = tf.shape(image)
    dy, dx = max_shift
    padded = tf.pad(image, [[dy, dy], [dx, dx], [0, 0]])
    return tf.image.stateless_random_crop(padded, size=shape, seed=seed)


def make_image_dataset(
    images,
    labels=None,
    *,
    global_batch_size,
    training,
    mean=None,
    std=None,
    normalize=True,
    image_size=None,
    num_channels=None,
    augment=None,
    flip=True,
    shift_fraction=DEFAULT_SHIFT_FRACTION,
    shuffle_buffer=None,
    shuffle=None,
    seed=None,
    drop_remainder=None,
    redraw_each_iteration=True,
):
    """Builds a batched tf.data pipeline of standardised images and labels.

    Per element, in order: `preprocess.preprocess_image` (grayscale tiled
    to `num_channels`; resized to `image_size`, bilinear with antialiasing,
    aspect ratio not kept, and rounded to whole pixel values; standardised
    `(x - mean) / std` per channel), then (when augmenting) a random
    horizontal flip and a random shift of up to `shift_fraction` of the
    height/width with zero fill (zero = the channel mean after
    standardisation). Uint8 images of the right size and channel count are
    only standardised. Shuffling happens before the map, batching after it,
    then `prefetch(AUTOTUNE)`.

    Randomness is stateless and seeded: with a `seed`, two pipelines built
    alike yield identical batches; each new iteration (epoch) reshuffles and
    redraws augmentations, still deterministically.

    Batching: `global_batch_size` is the batch of ONE step over all
    replicas. Training passes `per_replica_batch *
    strategy.num_replicas_in_sync`; `strategy.experimental_distribute_dataset`
    (or `model.fit` under the strategy) splits each batch across replicas.

    Args:
        images: uint8/float array [N, H, W, C], or a tf.data.Dataset of
            `(image [H, W, C], label)` pairs (then `labels` must be None).
        labels: array [N] (class ids, or any per-example target such as
            caption embeddings [N, D]) when `images` is an array. In a
            dataset the target may be a nest (a dict of targets).
        global_batch_size: int, examples per batch over all replicas.
        training: bool. True shuffles, augments and drops the last partial
            batch (batch-coupled losses need full batches).
        mean, std: per-channel statistics [C] (or scalars) in input pixel
            units. Defaults: computed from `images` with
            `channel_statistics` when `training`; required otherwise (pass
            the TRAINING statistics for evaluation data).
        normalize: bool; False skips standardisation (for a model that
            normalises inside its graph): images come out as float32
            whole pixel values.
        image_size: None or (height, width) to resize to. Needed for
            datasets whose images differ in size (ImageNet).
        num_channels: None, or 3 to tile 1-channel images to RGB.
        augment: bool, defaults to `training`.
        flip: bool, random horizontal flips when augmenting.
        shift_fraction: float in [0, 1), largest random shift as a fraction
            of the image height/width (0.15 = +-15 %, the CIFAR setting).
        shuffle_buffer: int; default: N for arrays, 10,000 for datasets.
        shuffle: bool, defaults to `training`; False for a dataset that a
            `sources.SplitSource` already shuffled before decoding.
        seed: int or None, seeds shuffling and augmentation.
        drop_remainder: bool, defaults to `training`.
        redraw_each_iteration: new augmentation draws for each new iterator
            (epoch of a repeated dataset); False for an endless stream, so
            that its draws depend on the seed and position only.

    Returns:
        tf.data.Dataset of (image float32 [B, H, W, C], label [B]); integer
        labels come out int64, other targets keep their dtype.

    Raises:
        ValueError: invalid arguments (the message quotes the value).
    """
    # === Validation ===
    if not isinstance(global_batch_size, (int, np.integer)) or (
        global_batch_size < 1
    ):
        raise ValueError(
            "global_batch_size must be a positive int. "
            f"Received: global_batch_size={global_batch_size}"
        )
    if not 0.0 <= shift_fraction < 1.0:
        raise ValueError(
            "shift_fraction must be in [0, 1). "
            f"Received: shift_fraction={shift_fraction}"
        )
    if num_channels not in (None, 3):
        raise ValueError(
            "num_channels must be None or 3 (tile grayscale to RGB). "
            f"Received: num_channels={num_channels}"
        )
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(
                "image_size must be (height, width) with positive entries. "
                f"Received: image_size={image_size}"
            )
    augment = training if augment is None else augment
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder

    # === Source ===
    if isinstance(images, tf.data.Dataset):
        if labels is not None:
            raise ValueError(
                "Pass labels inside the dataset, not separately. "
                f"Received: labels of type {type(labels).__name__}"
            )
        dataset = images
        default_buffer = 10_000
    else:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 4 or labels.shape[:1] != images.shape[:1]:
            raise ValueError(
                "images must be [N, H, W, C] with labels [N, ...]. Received: "
                f"images.shape={images.shape}, labels.shape={labels.shape}"
            )
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        default_buffer = max(len(images), 1)

    source_shape = dataset.element_spec[0].shape
    if source_shape.rank != 3 or source_shape[2] is None or (
        image_size is None and None in source_shape[:2]
    ):
        raise ValueError(
            "images must be [H, W, C] each with a known C, and image_size "
            "is needed when their sizes differ. Received: image shape "
            f"{tuple(source_shape)}"
        )
    shape = (
        *(image_size or (int(source_shape[0]), int(source_shape[1]))),
        num_channels or int(source_shape[2]),
    )

    if normalize and (mean is None) != (std is None):
        raise ValueError(
            f"Give both mean and std or neither. Received: mean={mean}, "
            f"std={std}"
        )
    if normalize and mean is None:
        if not training:
            raise ValueError(
                "Evaluation pipelines need the training mean/std; compute "
                "them with channel_statistics(train_images). Received: "
                "mean=None, std=None, training=False"
            )
        mean, std = channel_statistics(images)
        logger.info("Channel statistics: mean=%s std=%s", mean, std)
    if normalize:
        mean = np.asarray(mean, np.float32)
        std = np.asarray(std, np.float32)
        if np.any(~np.isfinite(std)) or np.any(std <= 0):
            raise ValueError(
                f"std must be finite and positive. Received: std={std}"
            )

    # === Shuffle, augment, batch ===
    if shuffle:
        buffer = shuffle_buffer if shuffle_buffer else default_buffer
        dataset = dataset.shuffle(
            buffer, seed=seed, reshuffle_each_iteration=True
        )
    # One int64 per element seeds that element's flip and shift; a new
    # iteration draws new (but seed-determined) values.
    element_seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=redraw_each_iteration
    )
    dataset = tf.data.Dataset.zip((dataset, element_seeds))

    def map_element(example, element_seed):
        image, label = example
        if normalize:
            image = preprocess.preprocess_image(image, shape, mean, std)
        else:
            image = tf.cast(preprocess.preprocess_image(image, shape),
                            tf.float32)
        if augment:
            if flip:
                image = tf.image.stateless_random_flip_left_right(
                    image, seed=tf.stack([element_seed, 0])
                )
            if shift_fraction > 0:
                height, width = image.shape[0], image.shape[1]
                if height is None or width is None:
                    raise ValueError(
                        "Random shifts need images of a known size; pass "
                        "image_size. Received: image shape "
                        f"{tuple(image.shape)}"
                    )
                max_shift = (
                    int(round(shift_fraction * height)),
                    int(round(shift_fraction * width)),
                )
                if max(max_shift) > 0:
                    image = random_shift(
                        image, max_shift, seed=tf.stack([element_seed, 1])
                    )
        label = tf.nest.map_structure(
            lambda t: tf.cast(t, tf.int64) if t.dtype.is_integer else t,
            label,
        )
        return image, label

    dataset = dataset.map(
        map_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.batch(global_batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)

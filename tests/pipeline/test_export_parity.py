"""Served codes of original images equal the evaluation codes, per source.

For each source a tiny model is built on the data that
`inputs.load_experiment_data` gives (what training and evaluation read),
saved as a run directory and exported. The exported `serving_default`
signature is then fed the ORIGINAL encoded images (the IDX pixels as PNG,
the bytes tfds stored, the files of a captions folder), as a client would
send them, and its codes must equal the codes the Keras model computes on
the evaluation pipeline (`data.eval_dataset()`). Both
sides run `preprocess.preprocess_image`; before it, image-folder sources
were stored antialiased but served without antialiasing, and tfds images
were truncated in training but rounded in serving.
"""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import make_tfrecords
from pipeline import transforms
from shrewd_tf import config as config_lib
from shrewd_tf.data import pipelines as inputs
from shrewd_tf.data import records as data
from shrewd_tf.export import saved_model as export
from shrewd_tf.training import trainer
from tests.support.image_sources import pixels
from tests.support.image_sources import write_fake_fashion_mnist
from tests.support.sources import split_test_images
from tests.support.sources import train_arrays

IMAGE_SIZE = (12, 12)
TFDS_EXAMPLES = 5
ENCODER = "cifar_resnet:8:8"
CODE_BITS = 8


def write_class_distances(path, num_classes, seed=0):
    """A random symmetric C x C matrix in [0, 1], zero diagonal (.npy)."""
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(0.1, 1.0, (num_classes, num_classes))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 0.0)
    np.save(path, matrix)
    return str(path)


def make_records(argv, directory):
    """Runs the make_tfrecords job (its command line); returns the dir."""
    output = os.path.join(directory, "records")
    assert make_tfrecords.main([*argv, "--output-dir", output]) == 0
    return output


def tfds_test_bytes(data_dir):
    """The encoded test images of the mocked cifar100, as tfds stores them."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar100", data_dir=data_dir)
    dataset = builder.as_dataset(
        split="test", shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    return [bytes(e["image"]) for e in dataset.as_numpy_iterator()]


# === Sources ===


def fashion_mnist_source(directory):
    """Fake IDX files (28 x 28 grey), read directly and via make_tfrecords,
    both resized to IMAGE_SIZE.

    Returns:
        ([(data config values, originals in evaluation order)] of the
        direct read and of the records).
    """
    idx = os.path.join(directory, "idx")
    arrays = write_fake_fashion_mnist(idx, counts=(("train", 12), ("test", 5)))
    originals = [data.encode_png(image[..., None])
                 for image in arrays["test"][0]]
    distances = write_class_distances(
        os.path.join(directory, "distances.npy"), 10
    )
    direct = {"dataset": "fashion_mnist", "data_dir": idx,
              "image_size": IMAGE_SIZE, "class_distances_file": distances}
    records = make_records(
        ["--source", "fashion_mnist", "--data-dir", idx,
         "--image-size", ",".join(map(str, IMAGE_SIZE))], directory)
    from_records = {"dataset": "tfrecords", "data_dir": records,
                    "class_distances_file": distances}
    return [(direct, originals), (from_records, originals)]


def tfds_source(directory):
    """Mocked tfds cifar100 (32 x 32 RGB PNGs), read directly and via
    make_tfrecords, both resized to IMAGE_SIZE (as `fashion_mnist_source`)."""
    distances = write_class_distances(
        os.path.join(directory, "distances.npy"), 100
    )
    originals = tfds_test_bytes(directory)
    direct = {"dataset": "cifar100", "data_dir": directory,
              "image_size": IMAGE_SIZE, "class_distances_file": distances}
    records = make_records(
        ["--source", "tfds:cifar100", "--data-dir", directory,
         "--image-size", ",".join(map(str, IMAGE_SIZE))], directory)
    from_records = {"dataset": "tfrecords", "data_dir": records,
                    "class_distances_file": distances}
    return [(direct, originals), (from_records, originals)]


def hashed_id(name, test):
    """`name-k` for the first k that SplitByIdHash puts in test (or not)."""
    k = 0
    while (transforms.id_hash_fraction(f"{name}-{k}") < 0.5) != test:
        k += 1
    return f"{name}-{k}"


# (file name, height, width, channels, encoder, in the test split)
CAPTION_IMAGES = (
    ("wide_rgb.png", 13, 20, 3, "png", True),
    ("tall_grey.png", 17, 9, 1, "png", True),
    ("photo.jpg", 18, 30, 3, "jpeg", True),
    ("grey_photo.jpg", 16, 11, 1, "jpeg", True),
    ("alpha.png", 14, 10, 4, "png", True),
    ("model_size.jpg", 12, 12, 3, "jpeg", True),  # stored as it is
    ("small_rgb.png", 9, 8, 3, "png", True),  # upscaled
    ("train_rgb.png", 15, 21, 3, "png", False),
    ("train_grey.png", 10, 14, 1, "png", False),
)


def write_captions(directory, keep_image_bytes):
    """Captions CSV over the CAPTION_IMAGES files (kept bytes: RGB only,
    the training channel count) -> (records directory, {id: bytes})."""
    folder = os.path.join(directory, "folder")
    os.makedirs(folder, exist_ok=True)
    originals, rows = {}, []
    for seed, (name, height, width, channels, kind, test) in enumerate(
        CAPTION_IMAGES
    ):
        image = pixels(height, width, channels, seed=seed)
        encoded = (tf.io.encode_jpeg(image, quality=90).numpy()
                   if kind == "jpeg" else data.encode_png(image))
        with open(os.path.join(folder, name), "wb") as f:
            f.write(encoded)
        if keep_image_bytes and channels != 3:
            continue
        record_id = hashed_id(name, test)
        originals[record_id] = encoded
        rows.append([record_id, name, f"picture {seed}", "ab"[seed % 2]])
    kind = "kept" if keep_image_bytes else "resized"
    captions = os.path.join(folder, f"captions_{kind}.csv")
    with open(captions, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "caption", "label"])
        writer.writerows(rows)
    argv = ["--source", f"captions:{captions}", "--test-fraction", "0.5",
            "--image-size", ",".join(map(str, IMAGE_SIZE)), "--channels", "3",
            "--min-image-size", "4,4"]
    if keep_image_bytes:
        argv.append("--keep-image-bytes")
    records = make_records(argv, os.path.join(directory, kind))
    return records, originals


# === The check ===


def load(values):
    config = config_lib.ExperimentConfig(name="parity").with_overrides({
        "model.encoder": ENCODER, "model.code_bits": CODE_BITS,
        **{f"data.{key}": value for key, value in values.items()},
    })
    return config, inputs.load_experiment_data(config.data)


def assert_served_codes_equal_evaluation_codes(directory, config, experiment,
                                               originals):
    """Builds a run from `experiment`, exports it, and compares the codes
    `serving_default` gives the original bytes with the evaluation codes."""
    assert experiment.input_shape[:2] == IMAGE_SIZE
    assert len(originals) == len(experiment.test_labels) >= 4
    sizes = {tuple(tf.io.decode_image(b).shape[:2]) for b in originals}
    assert sizes - {IMAGE_SIZE}, "some original must need resizing"

    # A finished run directory, as `shrewd train` leaves it, exported.
    run_dir = os.path.join(directory, "run")
    os.makedirs(run_dir)
    keras.utils.set_random_seed(0)
    model = trainer.build_model(
        config, experiment.num_classes, experiment.input_shape
    )
    config.save_json(os.path.join(run_dir, "config.json"))
    trainer.write_preprocessing(experiment, run_dir)
    trainer.save_model_atomically(model, os.path.join(run_dir, "model.keras"))
    version = export.export_saved_model(
        run_dir, os.path.join(directory, "exports"), "parity"
    )

    evaluated = model.predict(
        experiment.eval_dataset(), verbose=0
    )["code"]
    served = tf.saved_model.load(version).signatures["serving_default"](
        images=tf.constant(originals)
    )["code"].numpy()
    assert np.ptp(evaluated, axis=0).max() > 1e-3  # codes tell images apart
    np.testing.assert_allclose(served, evaluated, rtol=0, atol=1e-5)


def assert_same_pixels(direct, from_records):
    """A direct read and the make_tfrecords records of one source hold the
    same images (records in shard order, ids "<split>/<index>")."""
    order = [int(i.rsplit("/", 1)[1]) for i in from_records.test_ids]
    np.testing.assert_array_equal(
        split_test_images(direct)[order], split_test_images(from_records)
    )

    def rows(images):
        return sorted(image.tobytes() for image in images)

    assert (rows(train_arrays(direct)["images"])
            == rows(train_arrays(from_records)["images"]))
    np.testing.assert_allclose(direct.mean, from_records.mean, rtol=1e-6)
    np.testing.assert_allclose(direct.std, from_records.std, rtol=1e-6)


def test_fashion_mnist_idx(tmp_path):
    (direct, originals), (records, _) = fashion_mnist_source(str(tmp_path))
    config, experiment = load(direct)
    # make_tfrecords stores what the direct read computes, pixel for pixel.
    assert_same_pixels(experiment, load(records)[1])
    assert_served_codes_equal_evaluation_codes(
        str(tmp_path), config, experiment, originals
    )


@pytest.mark.large  # tfds also runs end to end in test_imagenet_shaped_run
def test_tfds_mock(tmp_path):
    import tensorflow_datasets as tfds

    # The tfds split streams, so it is read inside the mock.
    with tfds.testing.mock_data(num_examples=TFDS_EXAMPLES):
        (direct, originals), (records, _) = tfds_source(str(tmp_path))
        config, experiment = load(direct)
        assert_same_pixels(experiment, load(records)[1])
        assert_served_codes_equal_evaluation_codes(
            str(tmp_path), config, experiment, originals
        )


def test_captions_folder(tmp_path):
    distances = write_class_distances(tmp_path / "distances.npy", 2)
    records, originals = write_captions(str(tmp_path), False)
    config, experiment = load({"dataset": "tfrecords", "data_dir": records,
                               "class_distances_file": distances})
    assert_served_codes_equal_evaluation_codes(
        str(tmp_path), config, experiment,
        [originals[i] for i in experiment.test_ids],
    )
    # Files kept as they are, resized when training reads them
    # (records.parse_example), give the pixels make_tfrecords stores.
    kept, kept_originals = write_captions(str(tmp_path), True)
    _, kept_experiment = load({"dataset": "tfrecords", "data_dir": kept,
                               "class_distances_file": distances})
    stored = dict(zip(experiment.test_ids, split_test_images(experiment)))
    assert len(kept_experiment.test_ids) >= 3
    assert any(
        tuple(tf.io.decode_image(kept_originals[i]).shape[:2]) != IMAGE_SIZE
        for i in kept_experiment.test_ids
    )
    for record_id, image in zip(kept_experiment.test_ids,
                                split_test_images(kept_experiment)):
        np.testing.assert_array_equal(image, stored[record_id])

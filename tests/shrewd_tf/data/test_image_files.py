"""A split's images written as PNG files by id (`image_files`)."""

import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.data import image_files
from shrewd_tf.data import records as data


def test_write_image_files_writes_pngs_by_id(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(images[2], quality=100).numpy()
    records = [
        data.ImageRecord(id="test/0", image=data.encode_png(images[0])),
        data.ImageRecord(id="test/1", image=data.encode_png(images[1])),
        data.ImageRecord(id="test/2", image=jpeg),
    ]
    directory = tmp_path / "records"
    directory.mkdir()
    with tf.io.TFRecordWriter(
        str(directory / "test-00000-of-00001.tfrecord")
    ) as writer:
        for record in records:
            writer.write(data.serialize(record))
    data.DatasetInfo(image_shape=(8, 8, 3), splits={"test": 3}).save(str(directory))
    out = tmp_path / "images"
    assert image_files.write_image_files(str(directory), "test", str(out)) == 3
    for i in range(2):
        written = tf.io.decode_png((out / "test" / f"{i}.png").read_bytes()).numpy()
        np.testing.assert_array_equal(written, images[i])
    third = (out / "test" / "2.png").read_bytes()
    assert third.startswith(image_files.PNG_SIGNATURE)
    np.testing.assert_array_equal(
        tf.io.decode_png(third).numpy(), tf.io.decode_jpeg(jpeg).numpy())


def test_write_image_files_refuses_ids_leaving_the_folder(tmp_path):
    directory = tmp_path / "records"
    directory.mkdir()
    with tf.io.TFRecordWriter(
        str(directory / "test-00000-of-00001.tfrecord")
    ) as writer:
        writer.write(data.serialize(data.ImageRecord(
            id="../../evil", image=data.encode_png(np.zeros((2, 2, 1), np.uint8)))))
    data.DatasetInfo(image_shape=(2, 2, 1), splits={"test": 1}).save(str(directory))
    with pytest.raises(data.RecordError, match="leaves the output directory"):
        image_files.write_image_files(str(directory), "test", str(tmp_path / "out"))

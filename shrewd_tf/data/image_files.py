"""A split's images as files named by record id, for the page and reports.

`write_image_files` writes each record of a `make_tfrecords` split to
`<output_dir>/<id>.png` (the serving page and reports show database images
by id).
"""

import os

import tensorflow as tf

from shrewd_tf import io as io_lib
from shrewd_tf.data import preprocess
from shrewd_tf.data import records
from shrewd_tf.io import write_bytes_atomically

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_image_files(directory, split, output_dir, info=None):
    """Writes each record's image of a split to `<output_dir>/<id>.png`.

    For the web page and reports, which show database images by id. Stored
    PNG bytes are written as they are; other formats are decoded and
    re-encoded as PNG. Ids with "/" make subfolders ("test/00042" ->
    `test/00042.png`); ids that would leave `output_dir` are refused.

    Returns:
        the number of files written.
    """
    info = info or records.DatasetInfo.load(directory)
    root = os.path.realpath(output_dir)
    count = 0
    pattern = info.file_pattern(split, directory)
    for serialized in tf.data.TFRecordDataset(io_lib.glob(pattern)):
        record = records.from_example(serialized.numpy())
        path = os.path.realpath(os.path.join(root, record.id + ".png"))
        if os.path.commonpath([path, root]) != root:
            raise records.RecordError(
                f"record {record.id!r}: id leaves the output directory"
            )
        image = bytes(record.image)
        if not image.startswith(PNG_SIGNATURE):
            decoded = preprocess.decode_image(
                image, channels=int(info.image_shape[2])
            )
            image = tf.io.encode_png(decoded).numpy()
        write_bytes_atomically(path, image, fsync=False)
        count += 1
    return count

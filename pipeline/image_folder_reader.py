"""Beam reader of a captions file and the images it names.

`ReadImageFolder` turns a CSV/TSV/JSONL captions file (see
`shrewd_tf.data.image_folder`) into `(records, dead_letters)`: each row is
checked, duplicate ids dropped (the first line wins) and each image read
and checked with `image_folder.prepare_image`.

Dead-letter stages: parse_row (malformed captions line), check_row (empty
image path or caption, missing or unknown label), duplicate_id, read_image
(missing or unreadable file), decode_image (not an image TensorFlow can
decode), check_image (too small, wrong channel count).

Example:
    records, dead = pipeline | ReadImageFolder("captions.csv",
                                               image_size=(32, 32))
"""

import apache_beam as beam

from pipeline.dead_letters import dead_letter
from pipeline.transforms import DEFAULT_MIN_IMAGE_SIZE
from pipeline.transforms import with_dead_letters
from shrewd_tf.data import image_folder
from shrewd_tf.data import records as data


class _CheckRow(beam.DoFn):
    """CaptionRow -> (id, row), or a dead letter for a bad row."""

    def __init__(self, captions_file, class_names):
        self.captions_file = captions_file
        self.class_names = tuple(class_names)

    def process(self, row):
        where = row.id or f"{self.captions_file}:{row.line}"
        if row.problem:
            yield dead_letter(where, "parse_row",
                              f"line {row.line}: {row.problem}")
            return
        reason = ""
        if not row.image_path:
            reason = "field 'image' is empty"
        elif not row.caption:
            reason = "field 'caption' is empty"
        elif row.label_name is not None and not row.label_name:
            reason = "field 'label' is empty"
        elif row.label_name is not None and (
            row.label_name not in self.class_names
        ):
            shown = list(self.class_names[:10])
            more = ", ..." if len(self.class_names) > 10 else ""
            reason = (f"unknown label, not one of the "
                      f"{len(self.class_names)} class names {shown}{more}. "
                      f"Received: label={row.label_name!r}")
        if reason:
            yield dead_letter(where, "check_row", f"line {row.line}: {reason}")
            return
        yield row.id, row


class _FirstRowPerId(beam.DoFn):
    """(id, rows) -> the row on the first line; later ones dead-lettered."""

    def process(self, keyed):
        record_id, rows = keyed
        rows = sorted(rows, key=lambda r: r.line)
        for row in rows[1:]:
            yield dead_letter(
                record_id, "duplicate_id",
                f"line {row.line}: id {record_id!r} already used on line "
                f"{rows[0].line}",
            )
        yield rows[0]


class _LoadImage(beam.DoFn):
    """CaptionRow -> ImageRecord (image read, checked, maybe resized)."""

    def __init__(self, class_names, channels, image_size, min_size):
        self.class_ids = {name: i for i, name in enumerate(class_names)}
        self.channels, self.image_size = channels, image_size
        self.min_size = min_size

    def process(self, row):
        try:
            encoded = image_folder.read_image_file(row.image_path)
            image, _ = image_folder.prepare_image(
                encoded, self.channels, self.image_size, self.min_size
            )
        except image_folder.ImageProblem as problem:
            yield dead_letter(row.id, problem.stage,
                              f"line {row.line}: {problem.reason}")
            return
        labelled = row.label_name is not None
        yield data.ImageRecord(
            id=row.id,
            image=image,
            label=self.class_ids[row.label_name] if labelled else data.NO_LABEL,
            label_name=row.label_name or "",
            caption=row.caption,
        )


class ReadImageFolder(beam.PTransform):
    """A captions file and its images -> `(records, dead_letters)`.

    See `shrewd_tf.data.image_folder` for the file format. Each row is checked
    (caption, label, unique id: the first line with an id wins), its image
    read and checked with `image_folder.prepare_image`; rejected rows become
    dead letters. Label ids index `class_names`.

    Args:
        captions_file: CSV/TSV/JSONL captions file.
        class_names: label names in label-id order; default: the sorted
            distinct labels of the file (() when it has no label column).
        channels: C of the stored images.
        image_size: (H, W) to resize to, or None to keep the files' bytes
            (then images with another channel count are rejected).
        min_size: (h, w); smaller images are rejected.
        format: "csv", "tsv" or "jsonl" (default: from the extension).

    Raises:
        ValueError: header problems, or `class_names` given for a file
            without a label column, or repeated class names.
    """

    def __init__(self, captions_file, class_names=None, channels=3,
                 image_size=None, min_size=DEFAULT_MIN_IMAGE_SIZE,
                 format=None):
        super().__init__()
        self.captions_file = str(captions_file)
        self.format = image_folder.captions_format(self.captions_file, format)
        columns = image_folder.read_columns(self.captions_file, self.format)
        if class_names is None:
            class_names = (image_folder.label_names(
                self.captions_file, self.format) if "label" in columns else ())
        elif "label" not in columns:
            raise ValueError(
                f"{self.captions_file}: class_names given but the file has no "
                f"'label' column. Received: columns={list(columns)}"
            )
        self.class_names = tuple(class_names)
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(
                f"class_names repeat a name. Received: {self.class_names}"
            )
        self.channels = channels
        self.image_size = tuple(image_size) if image_size else None
        self.min_size = tuple(min_size)

    def expand(self, pbegin):
        rows = (
            pbegin
            | "CaptionsFile" >> beam.Create([self.captions_file])
            | "ReadRows" >> beam.FlatMap(
                image_folder.read_captions, self.format
            )
        )
        keyed, bad_rows = with_dead_letters(
            rows, "CheckRows", _CheckRow(self.captions_file, self.class_names),
            output_type=tuple[str, image_folder.CaptionRow],
        )
        unique, duplicates = with_dead_letters(
            keyed | "GroupById" >> beam.GroupByKey(),
            "DropDuplicateIds", _FirstRowPerId(),
        )
        records, bad_images = with_dead_letters(
            unique, "LoadImages",
            _LoadImage(self.class_names, self.channels, self.image_size,
                       self.min_size),
        )
        dead_letters = (
            (bad_rows, duplicates, bad_images)
            | "DeadLetters" >> beam.Flatten()
        )
        return records, dead_letters

"""Images named in a captions file (Conceptual-Captions style), and checks.

A captions file lists one image per row, as CSV, TSV (both with a header
row) or JSON lines (one object per line), chosen by the file extension
(`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`) or given explicitly:

    column    required  meaning
    image     yes       path relative to the captions file's directory, or
                        absolute (local path or a `gs://`-style URL)
    caption   yes       UTF-8 caption
    label     no        class name
    id        no        unique record id; default (and when empty): the
                        `image` value as written

Other columns are ignored. Leading/trailing whitespace of every value is
stripped. A file whose header lacks a required column raises a ValueError at
once; for JSON lines the first line plays the header's role. Problems of
single rows (a malformed line, an empty caption, an unknown label, an image
that is missing or cannot be decoded) are NOT raised here: `read_captions`
yields every row with its line number and `problem` set, and the Beam step
(`pipeline.image_folder_reader.ReadImageFolder`) turns them into dead
letters.

`prepare_image` is the one per-image check, shared by every source: decode
with TensorFlow, reject images that are too small, then either keep the
bytes as they are (they must already have the wanted channel count) or
bring them to the training shape with `preprocess.preprocess_image` (the
function training and the exported model run too) and re-encode as PNG.
"""

import csv
import dataclasses
import io
import json
import os

CAPTIONS_FORMATS = ("csv", "tsv", "jsonl")
REQUIRED_COLUMNS = ("image", "caption")
OPTIONAL_COLUMNS = ("label", "id")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclasses.dataclass(frozen=True)
class CaptionRow:
    """One row of a captions file, not yet checked.

    Attributes:
        id: record id ("" when the row is malformed).
        image_path: resolved image path ("" when missing).
        caption: caption text (stripped).
        label_name: class name; None when the file has no `label` column.
        line: 1-based line number of the row in the captions file.
        problem: why the row is malformed ("" for a well-formed row); the
            Beam step makes a dead letter of it.
    """

    id: str
    image_path: str
    caption: str
    label_name: str | None
    line: int
    problem: str = ""


def _is_remote(path):
    return "://" in str(path)


def captions_format(path, format=None):
    """The format of a captions file: `format`, or from the extension.

    Raises:
        ValueError: unknown format or extension.
    """
    if format is not None:
        if format not in CAPTIONS_FORMATS:
            raise ValueError(
                f"captions format must be one of {CAPTIONS_FORMATS}. "
                f"Received: format={format!r}"
            )
        return format
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in _EXTENSIONS:
        raise ValueError(
            f"{path}: cannot tell the captions format from the extension; "
            f"use one of {sorted(_EXTENSIONS)} or pass the format "
            f"({CAPTIONS_FORMATS}). Received: extension={extension!r}"
        )
    return _EXTENSIONS[extension]


def _open_text(path):
    """A text stream over a local or remote UTF-8 file (BOM dropped)."""
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return io.StringIO(f.read().decode("utf-8-sig"), newline="")
    return open(path, encoding="utf-8-sig", newline="")


def resolve_image_path(captions_path, image):
    """`image` as written in the file -> a path readable from anywhere."""
    if os.path.isabs(image) or _is_remote(image):
        return image
    return os.path.join(os.path.dirname(str(captions_path)), image)


def _check_columns(path, columns):
    """Raises ValueError when the header lacks a required column."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: captions file lacks the required column(s) {missing}; "
            f"it needs {list(REQUIRED_COLUMNS)} (optional "
            f"{list(OPTIONAL_COLUMNS)}). Received: columns={list(columns)}"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValueError(
            f"{path}: captions file repeats column(s) {duplicated}. "
            f"Received: columns={list(columns)}"
        )


def _row(path, values, line, has_label):
    """A CaptionRow from a {column: value} dict of one well-formed line."""
    for name in ("image", "caption", "label", "id"):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            return CaptionRow("", "", "", None, line,
                              f"field {name!r} must be a string. "
                              f"Received: {name}={value!r}")
    image = (values.get("image") or "").strip()
    record_id = (values.get("id") or "").strip() or image
    return CaptionRow(
        id=record_id,
        image_path=resolve_image_path(path, image) if image else "",
        caption=(values.get("caption") or "").strip(),
        label_name=(values.get("label") or "").strip() if has_label else None,
        line=line,
    )


def _read_delimited(path, stream, delimiter):
    reader = csv.reader(stream, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: captions file is empty (no header row)")
    columns = [c.strip() for c in header]
    _check_columns(path, columns)
    yield columns
    start = reader.line_num + 1
    for fields in reader:
        line, start = start, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != len(columns):
            yield CaptionRow("", "", "", None, line,
                             f"row has {len(fields)} fields, the header has "
                             f"{len(columns)}")
            continue
        yield _row(path, dict(zip(columns, fields)), line, "label" in columns)


def _read_jsonl(path, stream):
    columns = None
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            values, error = None, f"invalid JSON: {e}"
        else:
            error = "" if isinstance(values, dict) else (
                f"line is not a JSON object. Received: {text.strip()[:80]}"
            )
        if columns is None:  # the first object plays the header's role
            if error:
                raise ValueError(
                    f"{path}: line {line} must be a JSON object with keys "
                    f"{list(REQUIRED_COLUMNS)}: {error}"
                )
            columns = list(values)
            _check_columns(path, columns)
            yield columns
        if error:
            yield CaptionRow("", "", "", None, line, error)
            continue
        missing = [c for c in REQUIRED_COLUMNS if c not in values]
        if missing:
            yield CaptionRow("", "", "", None, line,
                             f"object lacks the key(s) {missing}")
            continue
        yield _row(path, values, line, "label" in columns)
    if columns is None:
        raise ValueError(f"{path}: captions file is empty (no JSON line)")


def _read(path, format):
    """Yields the column list first, then every CaptionRow."""
    format = captions_format(path, format)
    if not _is_remote(path) and not os.path.isfile(path):
        raise FileNotFoundError(f"captions file {path} not found")
    with _open_text(path) as stream:
        if format == "jsonl":
            yield from _read_jsonl(path, stream)
        else:
            yield from _read_delimited(
                path, stream, "," if format == "csv" else "\t"
            )


def read_columns(path, format=None):
    """The columns of a captions file (its header), checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown format, empty file, a required column missing.
    """
    return tuple(next(_read(path, format)))


def read_captions(path, format=None):
    """Yields every data row of a captions file as a `CaptionRow`.

    Malformed rows come out with `problem` set; they are not raised.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown format, empty file, a required column missing
            (header problems, raised before the first row).
    """
    rows = _read(path, format)
    next(rows)
    yield from rows


def label_names(path, format=None):
    """Sorted distinct non-empty labels of a captions file ((): no labels)."""
    names = {
        row.label_name for row in read_captions(path, format)
        if not row.problem and row.label_name
    }
    return tuple(sorted(names))


# === Image checks ===


class ImageProblem(ValueError):
    """An image that cannot be used; `stage` names the failed check."""

    def __init__(self, stage, reason):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def read_image_file(path):
    """The bytes of an image file (local or remote).

    Raises:
        ImageProblem: stage "read_image" when missing or unreadable.
    """
    try:
        if _is_remote(path):
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageProblem("read_image", f"image file not found: {path}")
    except Exception as e:  # OSError, tf.errors.OpError
        raise ImageProblem(
            "read_image", f"cannot read image file {path}: {e}"
        ) from e


def prepare_image(encoded, channels, image_size=None, min_size=(1, 1)):
    """Checks an encoded image and brings it to the training format.

    Decoding, channel conversion and resizing are
    `preprocess.preprocess_image`, the function training, evaluation and
    the exported SavedModel run too, so a stored image holds the pixels
    the served model computes from the original file.

    Args:
        encoded: image file bytes (PNG, JPEG, GIF, BMP).
        channels: C in (1, 3, 4), the channel count training decodes with.
        image_size: (H, W) to convert and resize to, or None to keep the
            bytes as they are (then the image must already have C channels).
            An image already H x W with C channels is kept as it is too.
            Otherwise `preprocess_image` converts channels, resizes
            (bilinear, antialiased, aspect ratio not kept) and rounds to
            uint8, and the result is re-encoded as PNG.
        min_size: (h, w); smaller images are rejected (not upscaled).

    Returns:
        (image bytes, (height, width, channels) of the stored image).

    Raises:
        ImageProblem: stage "decode_image" (not an image TF can decode) or
            "check_image" (too small, or the wrong channel count when the
            bytes are kept); the reason names the values.
    """
    import tensorflow as tf

    from shrewd_tf.data import preprocess
    from shrewd_tf.data import records as data

    if channels not in (1, 3, 4):
        raise ValueError(
            f"channels must be 1, 3 or 4. Received: channels={channels}"
        )
    try:
        image = preprocess.decode_image(encoded)
    except (tf.errors.OpError, ValueError) as e:
        message = str(getattr(e, "message", e)).strip().splitlines()
        raise ImageProblem(
            "decode_image",
            f"cannot decode image ({len(encoded)} bytes): "
            f"{message[0] if message else type(e).__name__}",
        ) from e
    height, width, have = (int(v) for v in image.shape)
    min_height, min_width = min_size
    if height < min_height or width < min_width:
        raise ImageProblem(
            "check_image",
            f"image is {height}x{width}, smaller than the minimum "
            f"{min_height}x{min_width}",
        )
    if image_size is None or (
        (height, width) == tuple(image_size) and have == channels
    ):
        if have != channels:
            raise ImageProblem(
                "check_image",
                f"image has {have} channels, expected {channels} (bytes are "
                "kept as they are, so no conversion)",
            )
        return bytes(encoded), (height, width, have)
    shape = (*(int(v) for v in image_size), channels)
    pixels = preprocess.preprocess_image(image, shape)
    return data.encode_png(pixels.numpy()), shape

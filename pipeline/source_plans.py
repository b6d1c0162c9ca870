"""The sources of `make_tfrecords`: `--source` resolved into a `SourcePlan`.

`make_plan(options)` reads what the job must know before it builds the
pipeline (headers, class names, split sizes for the shard counts) and
returns a `SourcePlan` whose `build(pipeline)` applies the readers:

* `fashion_mnist`: `dataset_readers.ReadFashionMNIST` per split;
* `tfds:<name>`: `dataset_readers.ReadTfdsSplit` per `name=<tfds split>`;
* `captions:<file>`: `image_folder_reader.ReadImageFolder`, cut into one
  or two splits by `transforms.SplitByIdHash`.

Records of another size or channel count than the options ask for go
through `transforms.PrepareImages` (`preprocess.preprocess_image`).

Example:
    plan = make_plan(MakeTFRecordsOptions("fashion_mnist", "out"))
    per_split, dead_letters = plan.build(pipeline)
"""

import dataclasses
import re

from pipeline import outputs
from pipeline import transforms
from pipeline.dataset_readers import ReadFashionMNIST
from pipeline.dataset_readers import ReadTfdsSplit
from pipeline.image_folder_reader import ReadImageFolder
from shrewd_tf.data import image_folder
from shrewd_tf.data import tfds_sources as datasets

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass
class SourcePlan:
    """A source resolved before the pipeline is built.

    Attributes:
        source: the `DatasetInfo.source` to record ("fashion_mnist",
            "tfds:<name>", "captions").
        image_shape: (H, W, C) of the stored images.
        class_names: label names in label order.
        counts: {split: expected records} (for the shard counts).
        build: `pipeline -> ({split: records}, [dead letters])`.
    """

    source: str
    image_shape: tuple
    class_names: tuple
    counts: dict
    build: object


def _parse_splits(text):
    """'train,val=train[90%:]' -> [('train', 'train'), ('val', ...)]."""
    splits = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        name, _, spec = entry.partition("=")
        name, spec = name.strip(), spec.strip() or name.strip()
        if not _SPLIT_NAME.match(name):
            raise ValueError(
                "split names must be letters, digits or '_' (they start the "
                f"shard file names). Received: split={name!r}"
            )
        splits.append((name, spec))
    names = [n for n, _ in splits]
    if not names or len(set(names)) != len(names):
        raise ValueError(
            f"--splits must name distinct splits. Received: --splits={text!r}"
        )
    return splits


def _image_shape(options, native):
    """(H, W, C) training decodes to; `native` may hold None."""
    size = options.image_size or native[:2]
    channels = options.channels or native[2]
    shape = (*size, channels)
    if any(v is None for v in shape):
        raise ValueError(
            f"--source {options.source}: images differ in size; pass "
            f"--image-size H,W (and --channels). Received: native "
            f"shape={native}"
        )
    return tuple(int(v) for v in shape)


def _prepare_step(options, native, image_shape):
    """PrepareImages for records of shape `native`, or None if not needed."""
    if options.keep_image_bytes:
        if native[2] == image_shape[2]:
            return None
        return transforms.PrepareImages(
            image_shape[2], None, options.min_image_size)
    if tuple(native) == image_shape:
        return None
    return transforms.PrepareImages(
        image_shape[2], image_shape[:2], options.min_image_size)


def _apply_prepare(step, split, records, dead_letters):
    if step is None:
        return records
    records, rejected = records | f"{split}/PrepareImages" >> step
    dead_letters.append(rejected)
    return records


def _build_from_reads(reads, step, label):
    """A plan's `build`: each split's read, labelled `<split>/<label>`,
    then the prepare step; returns (records per split, dead letters)."""

    def build(pipeline):
        per_split, dead_letters = {}, []
        for split, read in reads.items():
            records = pipeline | f"{split}/{label}" >> read
            per_split[split] = _apply_prepare(step, split, records,
                                              dead_letters)
        return per_split, dead_letters

    return build


def _fashion_mnist_plan(options, splits):
    reads = {}
    for split, spec in splits:
        reads[split] = ReadFashionMNIST(
            spec, options.data_dir, limit=options.limit)
    native = ReadFashionMNIST.image_shape
    image_shape = _image_shape(options, native)
    step = _prepare_step(options, native, image_shape)

    return SourcePlan(
        source="fashion_mnist",
        image_shape=image_shape,
        class_names=tuple(datasets.FASHION_MNIST_CLASS_NAMES),
        counts={split: read.num_records() for split, read in reads.items()},
        build=_build_from_reads(reads, step, "ReadFashionMNIST"),
    )


def _tfds_plan(options, splits, name):
    reads = {
        split: ReadTfdsSplit(name, spec, options.data_dir, id_prefix=split)
        for split, spec in splits
    }
    descriptions = {split: read.describe() for split, read in reads.items()}
    native, class_names, _ = next(iter(descriptions.values()))
    image_shape = _image_shape(options, native)
    step = _prepare_step(options, native, image_shape)

    return SourcePlan(
        source=f"tfds:{name}",
        image_shape=image_shape,
        class_names=class_names,
        counts={split: d[2] or 0 for split, d in descriptions.items()},
        build=_build_from_reads(reads, step, "ReadTfds"),
    )


def _captions_plan(options, splits, captions_file):
    if any(spec != name for name, spec in splits) or len(splits) > 2:
        raise ValueError(
            "captions sources take one or two plain split names (the second "
            f"gets --test-fraction of the ids). Received: --splits="
            f"{options.splits!r}"
        )
    class_names = None
    if options.class_names_file:
        lines = outputs.read_text(options.class_names_file).splitlines()
        class_names = [line.strip() for line in lines if line.strip()]
    image_shape = _image_shape(options, (None, None, 3))
    read = ReadImageFolder(
        captions_file,
        class_names=class_names,
        channels=image_shape[2],
        image_size=None if options.keep_image_bytes else image_shape[:2],
        min_size=options.min_image_size,
        format=options.captions_format,
    )
    names = [name for name, _ in splits]
    fraction = options.test_fraction
    counts = dict.fromkeys(names, 0)
    for row in image_folder.read_captions(captions_file, read.format):
        test = (len(names) == 2
                and transforms.id_hash_fraction(row.id) < fraction)
        counts[names[int(test)]] += 1

    def build(pipeline):
        records, dead_letters = pipeline | "ReadImageFolder" >> read
        if len(names) == 1:
            return {names[0]: records}, [dead_letters]
        train, test = records | "SplitByIdHash" >> transforms.SplitByIdHash(
            fraction)
        return {names[0]: train, names[1]: test}, [dead_letters]

    return SourcePlan(
        source="captions",
        image_shape=image_shape,
        class_names=read.class_names,
        counts=counts,
        build=build,
    )


def make_plan(options):
    """Resolves `--source` into a `SourcePlan` (reads headers and counts).

    Args:
        options: `make_tfrecords.MakeTFRecordsOptions`.

    Raises:
        ValueError: an unknown source, bad splits, or a source whose
            images differ in size without `image_size`.
    """
    splits = _parse_splits(options.splits)
    kind, _, value = options.source.partition(":")
    if options.source == "fashion_mnist":
        return _fashion_mnist_plan(options, splits)
    if kind == "tfds" and value:
        return _tfds_plan(options, splits, value)
    if kind == "captions" and value:
        return _captions_plan(options, splits, value)
    raise ValueError(
        "--source must be fashion_mnist, tfds:<name> or captions:<file>. "
        f"Received: --source={options.source!r}"
    )

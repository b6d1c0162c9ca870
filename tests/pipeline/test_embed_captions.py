"""End-to-end tests of the embed_captions job on a small TFRecord directory.

The sentence encoder is the fake of tests/support/sentence_encoders (a hashed
bag of words), injected with `run(options, model_handler=...)`; expected
embeddings are computed here from each caption. The command line is tested
through `main(argv)` and `parse_args`.
"""

import glob
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402

from pipeline import dead_letters  # noqa: E402
from pipeline import embed_captions  # noqa: E402
from shrewd_tf.data import records as data  # noqa: E402
from tests.paths import REPO_ROOT  # noqa: E402
from tests.support.sentence_encoders import FAKE_DIM  # noqa: E402
from tests.support.sentence_encoders import FAKE_ENCODER_NAME  # noqa: E402
from tests.support.sentence_encoders import NAN_MARK  # noqa: E402
from tests.support.sentence_encoders import FakeEncoderHandler  # noqa: E402
from tests.support.sentence_encoders import fake_embedding  # noqa: E402
from tests.support.records import write_shards  # noqa: E402

IMAGE_SHAPE = (4, 5, 1)
WORDS = "dog cat runs sleeps on a the beach sofa red blue".split()


def write_caption_records_dir(directory, split_sizes, shards, bad_ids=()):
    """Writes records with random 4x5 images and captions, like
    make_tfrecords; ids in `bad_ids` get an empty or a nan-marked caption.

    Returns:
        {split: {id: (image uint8 [4, 5, 1], label, caption)}}.
    """
    rng = np.random.default_rng(0)
    os.makedirs(directory)
    written = {}
    for split, size in split_sizes.items():
        written[split] = {}
        records = []
        for i in range(size):
            record_id = f"{split}/{i:03d}"
            image = rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
            label = int(rng.integers(0, 2))
            caption = " ".join(rng.choice(WORDS, size=rng.integers(2, 6)))
            if record_id in bad_ids:
                caption = "" if i % 2 else f"the {NAN_MARK}"
            written[split][record_id] = (image, label, caption)
            records.append(data.ImageRecord(
                id=record_id, image=data.encode_png(image), label=label,
                label_name=("zero", "one")[label], caption=caption,
            ))
        per_shard = -(-size // shards[split])
        write_shards(directory, split, [
            records[shard * per_shard:(shard + 1) * per_shard]
            for shard in range(shards[split])
        ])
    data.DatasetInfo(
        image_shape=IMAGE_SHAPE, class_names=("zero", "one"),
        splits=dict(split_sizes), source="test fixture",
    ).save(directory)
    return written


def test_job_embeds_every_split_and_writes_dead_letters(tmp_path):
    input_dir = str(tmp_path / "in")
    output_dir = str(tmp_path / "out")
    bad = {"train/002": "nan embedding", "train/005": "empty caption",
           "test/001": "empty caption"}
    written = write_caption_records_dir(input_dir, {"train": 7, "test": 3},
                                 {"train": 3, "test": 1}, bad_ids=bad)

    result = embed_captions.run(
        embed_captions.EmbedCaptionsOptions(input_dir, output_dir),
        test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"),
        model_handler=FakeEncoderHandler(max_batch_size=4),
    )

    assert result.output_dir == os.path.abspath(output_dir)
    assert result.splits == {"train": 5, "test": 2}
    assert result.dead_letters == {"embed_captions": 3}
    assert result.embedding_dim == FAKE_DIM
    assert result.text_encoder == FAKE_ENCODER_NAME
    info = data.DatasetInfo.load(output_dir)
    assert info.splits == {"train": 5, "test": 2}
    assert info.embedding_dim == FAKE_DIM
    assert info.text_encoder == FAKE_ENCODER_NAME
    assert info.class_names == ("zero", "one")
    assert info.image_shape == IMAGE_SHAPE
    assert info.source == "test fixture"
    for split, num_shards in (("train", 3), ("test", 1)):
        shards = glob.glob(info.file_pattern(split, output_dir))
        assert len(shards) == num_shards, shards
        arrays = data.load_split_arrays(output_dir, split)
        expected = {k: v for k, v in written[split].items() if k not in bad}
        assert sorted(arrays["ids"]) == sorted(expected)
        for i, record_id in enumerate(arrays["ids"]):
            image, label, caption = expected[record_id]
            np.testing.assert_array_equal(arrays["images"][i], image)
            assert arrays["labels"][i] == label
            assert arrays["captions"][i] == caption
            np.testing.assert_allclose(arrays["embeddings"][i],
                                       fake_embedding(caption), atol=1e-7)

    files = glob.glob(os.path.join(output_dir, "dead_letters*.jsonl"))
    letters = dead_letters.read_dead_letters(files)
    assert sorted((d.id, d.reason.split(":")[0]) for d in letters) == sorted(
        bad.items())
    assert {d.stage for d in letters} == {"embed_captions"}
    assert not glob.glob(str(tmp_path / ".staging-*"))


def test_failed_run_leaves_existing_output_untouched(tmp_path):
    input_dir = str(tmp_path / "in")
    output_dir = tmp_path / "out"
    write_caption_records_dir(input_dir, {"train": 3}, {"train": 1})
    output_dir.mkdir()
    (output_dir / "marker.txt").write_text("previous run")

    with pytest.raises(Exception, match="fake encoder failure"):
        embed_captions.run(
            embed_captions.EmbedCaptionsOptions(input_dir, str(output_dir)),
            test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"),
            model_handler=FakeEncoderHandler(fail=True),
        )

    assert sorted(os.listdir(output_dir)) == ["marker.txt"]
    assert (output_dir / "marker.txt").read_text() == "previous run"
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]


def test_output_dir_may_be_the_input_dir(tmp_path):
    directory = str(tmp_path / "data")
    written = write_caption_records_dir(directory, {"train": 3}, {"train": 2})

    embed_captions.run(
        embed_captions.EmbedCaptionsOptions(directory, directory),
        test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"),
        model_handler=FakeEncoderHandler(),
    )

    arrays = data.load_split_arrays(directory, "train")
    assert sorted(arrays["ids"]) == sorted(written["train"])
    for record_id, caption, embedding in zip(
            arrays["ids"], arrays["captions"], arrays["embeddings"]):
        assert caption == written["train"][record_id][2]
        np.testing.assert_allclose(embedding, fake_embedding(caption),
                                   atol=1e-7)
    assert len(glob.glob(os.path.join(directory, "train-*"))) == 2
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        embed_captions.run(embed_captions.EmbedCaptionsOptions(
            str(tmp_path / "none"), str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_run_takes_options_not_a_command_line(tmp_path):
    argv = ["--input-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    with pytest.raises(TypeError, match="EmbedCaptionsOptions.*main"):
        embed_captions.run(argv)


def test_runner_defaults_to_fn_api_runner_and_flags_pass_through():
    pipeline = embed_captions.new_pipeline(["--direct_num_workers=2"])
    options = pipeline.options.get_all_options()
    assert options["runner"] == "FnApiRunner"
    assert type(pipeline.runner).__name__ == "FnApiRunner"
    assert options["direct_num_workers"] == 2
    # A named runner is the user's (building a Dataflow pipeline would
    # validate GCP options here, so check the options it gets).
    from pipeline import options as options_lib

    options = options_lib.pipeline_options(
        ["--runner", "DataflowRunner"]).get_all_options()
    assert options["runner"] == "DataflowRunner"
    args, beam_args = embed_captions.parse_args(
        ["--input-dir", "a", "--output-dir", "b", "--max-batch-size", "8",
         "--direct_running_mode=multi_processing"])
    assert (args.input_dir, args.output_dir, args.max_batch_size) == (
        "a", "b", 8)
    assert beam_args == ["--direct_running_mode=multi_processing"]


def test_module_runs_as_a_script():
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.embed_captions", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--input-dir" in completed.stdout
    assert "--text-encoder" in completed.stdout

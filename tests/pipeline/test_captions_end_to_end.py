"""Captions end to end: image folder -> Beam -> TFRecords -> fit -> metrics.

A generated Conceptual-Captions-style folder (coloured shapes described by
captions, plus one missing image and one empty caption) goes through the
real jobs: make_tfrecords, embed_captions with the real all-MiniLM-L6-v2
encoder, then SIM-KL-REG training on the caption embeddings and the caption
metrics.
"""

import json
import os

import numpy as np
import tensorflow as tf

from pipeline import embed_captions
from pipeline import make_tfrecords
from shrewd_tf import config as config_lib
from shrewd_tf.data import records as data
from shrewd_tf.training import trainer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 220)}
SHAPES = ("square", "stripe")


def write_captioned_folder(directory, per_kind=12, seed=0):
    """PNG images + captions.jsonl; returns the number of good rows."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(directory, "img"), exist_ok=True)
    rows = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for i in range(per_kind):
                image = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
                if shape == "square":
                    image[4:12, 4:12] = rgb
                else:
                    image[:, 6:10] = rgb
                name = f"img/{colour}_{shape}_{i}.png"
                with open(os.path.join(directory, name), "wb") as f:
                    f.write(tf.io.encode_png(image).numpy())
                rows.append({"image": name,
                             "caption": f"a {colour} {shape} on a dark background"})
    good = len(rows)
    rows.append({"image": "img/missing.png", "caption": "a lost picture"})
    rows.append({"image": "img/red_square_0.png", "caption": "  ", "id": "blank"})
    path = os.path.join(directory, "captions.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path, good


def test_captions_folder_to_trained_codes(tmp_path):
    captions, good = write_captioned_folder(str(tmp_path / "photos"))
    beam = ("--runner=FnApiRunner",)
    records = make_tfrecords.run(make_tfrecords.MakeTFRecordsOptions(
        source=f"captions:{captions}", image_size=(16, 16),
        test_fraction=0.3, output_dir=str(tmp_path / "tfr"), beam_args=beam,
    ))
    assert sum(records.splits.values()) == good
    assert records.dead_letters == {"read_image": 1, "check_row": 1}

    embedded = embed_captions.run(embed_captions.EmbedCaptionsOptions(
        input_dir=str(tmp_path / "tfr"),
        output_dir=str(tmp_path / "tfr_emb"), beam_args=beam,
    ))
    info = data.DatasetInfo.load(str(tmp_path / "tfr_emb"))
    assert info.embedding_dim == embedded.embedding_dim == 384
    assert embedded.splits == records.splits
    test = data.load_split_arrays(str(tmp_path / "tfr_emb"), "test")
    norms = np.linalg.norm(test["embeddings"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)

    config = config_lib.ExperimentConfig(
        name="captions",
        data=config_lib.DataConfig(
            dataset="tfrecords", data_dir=str(tmp_path / "tfr_emb"),
            semantics="captions", validation_subset=8),
        model=config_lib.ModelConfig(encoder="cifar_resnet:8:4", code_bits=16),
        loss=config_lib.LossConfig(losses="SIM-KL-REG"),
        train=config_lib.TrainConfig(
            epochs=2, per_replica_batch_size=16, eval_every=0,
            output_dir=str(tmp_path / "run")),
    )
    result = trainer.train(config, verbose=0)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["captions"]
    for key in ("mahp_caption_float", "mahp_caption_binary",
                "kendall_tau_float", "kendall_tau_binary", "binary_entropy"):
        assert np.isfinite(metrics[key]), key
    assert -1.0 <= metrics["kendall_tau_float"] <= 1.0
    assert result.test_outputs["code"].shape == (len(test["ids"]), 16)
    assert result.test_outputs["embedding"].shape == (len(test["ids"]), 384)

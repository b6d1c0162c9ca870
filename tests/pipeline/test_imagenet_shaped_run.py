"""`shrewd pipeline run --config configs/imagenet2012.yaml` end to end, on
a mocked tfds imagenet2012 (JPEGs of many sizes, 1000 classes): ExampleGen
writes 224² TFRecords, Semantics the 1000 x 1000 WUP matrix, the Trainer
streams the records into ResNet-50, then evaluation, export and both
indexes. Only what must shrink is overridden: epochs, steps, batch,
subsets, and the Beam runner (in-process, so that it sees the mock)."""

import json
import os

import numpy as np
import pytest

from pipeline import runner
from shrewd_tf.data import records as data_lib
from tests.paths import REPO_ROOT

EXAMPLES = 12


@pytest.mark.large  # 2.5-3.5 min on 2 cores: ResNet-50 at 224, 1000 classes
def test_the_imagenet_config_runs_on_imagenet_shaped_data(tmp_path):
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    overrides = {
        "data.data_dir": str(data_dir),
        "data.validation_subset": 4,
        "train.epochs": 1,
        "train.steps_per_epoch": 1,
        "train.per_replica_batch_size": 2,
        "train.eval_every": 0,
        "pipeline.runs_dir": str(tmp_path / "runs"),
        "pipeline.beam_options": ["--runner=FnApiRunner"],
        "pipeline.k": 5,
    }
    config = os.path.join(REPO_ROOT, "configs", "imagenet2012.yaml")
    with tfds.testing.mock_data(num_examples=EXAMPLES):
        results = runner.run(config, overrides)
    run_dir = tmp_path / "runs" / "imagenet2012"
    for stage in results:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "complete", stage
    info = data_lib.DatasetInfo.load(
        results["example_gen"][0].outputs["tfrecord_dir"])
    assert tuple(info.image_shape) == (224, 224, 3)
    assert len(info.class_names) == 1000
    distances = np.load(results["semantics"][0].outputs["class_distances"])
    assert distances.shape == (1000, 1000)
    trained = results["trainer"][0]
    assert trained.metrics, trained
    exported = results["exporter"][0].outputs
    assert os.path.isdir(exported["export_root"])
    assert set(results["index_builder"][0].outputs) >= {"binary", "scann"}

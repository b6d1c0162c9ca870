"""One finished run and its export, shared by the export tests."""

import pytest
import tensorflow as tf

from shrewd_tf.export import saved_model as export
from tests.support.exports import make_run_dir


@pytest.fixture(scope="package")
def run(tmp_path_factory):
    """(run_dir, model, mean, std) of a tiny random-weight run."""
    run_dir = tmp_path_factory.mktemp("run")
    model, mean, std = make_run_dir(run_dir)
    return run_dir, model, mean, std


@pytest.fixture(scope="package")
def exported(run, tmp_path_factory):
    """(export_root, version dir, the version loaded by tf.saved_model)."""
    root = tmp_path_factory.mktemp("exports")
    path = export.export_saved_model(run[0], root, "shrewd")
    return root, path, tf.saved_model.load(path)

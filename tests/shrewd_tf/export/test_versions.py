"""Tests for shrewd_tf.export.versions: reading `<model_name>/<version>/`."""

import os

import pytest

from shrewd_tf.export import versions
from tests.support import encoders as encoder_fixtures


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return encoder_fixtures.versioned_model_root(
        tmp_path_factory.mktemp("export")
    )


def test_next_version_skips_files_and_staging_dirs(tmp_path):
    assert versions.next_version(str(tmp_path / "missing")) == 1
    for name in ("2", "10", ".tmp-export-abc", "latest", "1" * 19, "٣"):
        (tmp_path / name).mkdir()
    (tmp_path / "11").write_text("a file, not a version")
    assert versions.existing_versions(str(tmp_path)) == [2, 10]
    assert versions.next_version(str(tmp_path)) == 11


def test_saved_models_only_skips_empty_versions(model_root):
    assert versions.existing_versions(model_root) == [2, 10, 12]
    assert versions.existing_versions(
        model_root, saved_models_only=True
    ) == [2, 10]


def test_resolve_saved_model_dir_picks_highest_integer_version(model_root):
    assert versions.resolve_saved_model_dir(model_root) == os.path.join(
        model_root, "10"
    )
    version = os.path.join(model_root, "2")
    assert versions.resolve_saved_model_dir(version) == version
    with pytest.raises(FileNotFoundError, match="12"):
        versions.resolve_saved_model_dir(os.path.join(model_root, "12"))


@pytest.mark.parametrize("version", [-1, 10**18, 1.0, True, "3"])
def test_check_version_refuses_what_names_no_version(version):
    with pytest.raises(ValueError, match="version="):
        versions.check_version(version)
    versions.check_version(10**18 - 1)


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", None])
def test_check_model_name(name):
    with pytest.raises(ValueError, match="model_name="):
        versions.check_model_name(name)
    versions.check_model_name("shrewd-v1.2_b")

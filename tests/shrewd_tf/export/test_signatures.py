"""Tests for shrewd_tf.export.signatures: saved_model.pb read unloaded."""

import os

import pytest

from shrewd_tf import contract
from shrewd_tf.export import signatures
from tests.support import encoders as encoder_fixtures
from tests.support.exports import save_text_op_saved_model
from tests.support.saved_models import write_broken_version


@pytest.fixture(scope="module")
def fake_version(tmp_path_factory):
    """A version of the fake encoder: serving_default and "pixels"."""
    path = str(tmp_path_factory.mktemp("fake") / "2")
    encoder_fixtures.save_fake_encoder(path, seed=2)
    return path


# === Signatures ===


def test_signature_defs_of_the_serve_meta_graph(exported):
    defs = signatures.signature_defs(exported[1])
    assert set(contract.SIGNATURES) <= set(defs)
    images = defs[contract.IMAGES_SIGNATURE]
    assert list(images.inputs) == [contract.IMAGES_INPUT]
    assert sorted(images.outputs) == sorted(
        [contract.CODE_OUTPUT, contract.BITS_OUTPUT, contract.LOGITS_OUTPUT]
    )
    with pytest.raises(ValueError, match="no MetaGraphDef tagged 'gpu'"):
        signatures.signature_defs(exported[1], tag="gpu")


def test_inspect_signature_finds_input_and_rejects_pixel_signature(
    fake_version,
):
    info = signatures.inspect_signature(fake_version)
    assert info.input_name == "encoded_images"
    assert info.outputs["code"] == (None, 32)
    assert info.outputs["bits"] == (None, 4)
    with pytest.raises(ValueError, match="one tf.string input"):
        signatures.inspect_signature(fake_version, "pixels")
    with pytest.raises(ValueError, match="no signature 'nope'"):
        signatures.inspect_signature(fake_version, "nope")
    with pytest.raises(ValueError, match="no output 'embedding'"):
        signatures.inspect_signature(fake_version, output_key="embedding")


def test_inspect_signature_of_an_export(exported):
    info = signatures.inspect_signature(exported[1])
    assert info.input_name == contract.IMAGES_INPUT
    assert info.outputs == {
        contract.CODE_OUTPUT: (None, 16), contract.BITS_OUTPUT: (None, 2),
        contract.LOGITS_OUTPUT: (None, 4),
    }


def test_a_broken_saved_model_is_an_error(tmp_path):
    from google.protobuf.message import DecodeError

    path = write_broken_version(str(tmp_path / "1"))
    with pytest.raises(DecodeError):
        signatures.signature_defs(path)
    assert os.path.exists(os.path.join(path, contract.SAVED_MODEL_FILE))


# === Ops ===


def test_graph_has_only_core_tensorflow_ops(exported):
    op_types = signatures.saved_model_op_types(exported[1])
    assert {"DecodeImage", "ScaleAndTranslate", "Conv2D"} <= op_types
    assert signatures.non_core_ops(op_types) == []
    assert not [
        op for op in op_types
        if op.lower().startswith(("scann", "addons"))
        or "utf8" in op.lower()
        or "wordpiece" in op.lower()
        or "sentencepiece" in op.lower()
    ]


def test_text_op_is_reported_as_non_core(tmp_path):
    save_text_op_saved_model(str(tmp_path / "text"))
    op_types = signatures.saved_model_op_types(str(tmp_path / "text"))
    assert "CaseFoldUTF8" in op_types
    assert signatures.non_core_ops(op_types) == ["CaseFoldUTF8"]

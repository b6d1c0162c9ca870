"""Tests for shrewd_tf.contract: the one vocabulary, and that the modules
which speak it use it rather than a copy."""

import subprocess
import sys

import pytest

from shrewd_tf import contract


def test_contract_imports_only_the_standard_library():
    script = (
        "import sys\n"
        "import shrewd_tf.contract\n"
        "heavy = {'numpy', 'tensorflow', 'keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_each_index_kind_has_one_row_and_one_serving_mode():
    table = contract.INDEX_KIND_TABLE
    assert tuple(kind.name for kind in table) == contract.INDEX_KINDS
    assert tuple(kind.serving_mode for kind in table) == (
        contract.SERVING_MODES
    )
    index_types = [kind.index_type for kind in table]
    assert len(set(index_types)) == len(index_types)
    # A manifest name is its own kind's name or no kind's name at all.
    for kind in table:
        assert kind.index_type == kind.name or (
            kind.index_type not in contract.INDEX_KINDS
        )


@pytest.mark.parametrize(
    "name, kind, index_type, mode",
    [
        ("binary", "binary", "binary_hamming", "binary"),
        ("binary_hamming", "binary", "binary_hamming", "binary"),
        ("scann", "scann", "scann", "float"),
    ],
)
def test_index_kind_reads_kind_and_manifest_names(
    name, kind, index_type, mode
):
    found = contract.index_kind(name)
    assert (found.name, found.index_type, found.serving_mode) == (
        kind, index_type, mode
    )
    assert contract.index_kind_for_mode(mode) is found


def test_unknown_kinds_and_modes_are_refused_quoting_them():
    with pytest.raises(ValueError, match="kind='annoy'"):
        contract.index_kind("annoy")
    with pytest.raises(ValueError, match="mode='exact'"):
        contract.index_kind_for_mode("exact")


def test_the_speakers_use_the_contract():
    from serving import client
    from serving import config as serving_config
    from serving import encoders
    from serving import retrieval as serving_retrieval
    from serving import servables
    from shrewd_tf import retrieval
    from shrewd_tf.training import objective

    assert objective.CODE_OUTPUT is contract.CODE_OUTPUT
    assert objective.KL_OUTPUT is contract.KL_OUTPUT
    assert encoders.CODE_OUTPUT is contract.CODE_OUTPUT
    assert encoders.BITS_OUTPUT is contract.BITS_OUTPUT
    for module in (client, servables, serving_config):
        assert module.DEFAULT_SIGNATURE is contract.SERVING_SIGNATURE
    assert servables.SERVE_TAG is contract.SERVE_TAG
    assert (serving_retrieval.BINARY, serving_retrieval.FLOAT) == (
        contract.SERVING_MODES
    )
    for kind in contract.INDEX_KIND_TABLE:
        cls = getattr(retrieval, kind.class_name)
        assert (cls.kind, cls.index_type) == (kind.name, kind.index_type)

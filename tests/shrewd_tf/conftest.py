"""Fixtures shared by the shrewd_tf tests."""

from pathlib import Path

import pytest

from shrewd_tf.semantics import distances as semantics
from shrewd_tf.semantics import wordnet_corpus

DEBIAN_DIR = Path(wordnet_corpus.DEBIAN_WORDNET_DIR)


@pytest.fixture(scope="session")
def wordnet(tmp_path_factory):
    """A reader over a corpus built into the session's temp dir."""
    if not (DEBIAN_DIR / "data.noun").is_file():
        pytest.skip(
            f"Debian WordNet missing in {DEBIAN_DIR}: apt-get install "
            "wordnet-base wordnet-sense-index"
        )
    root = tmp_path_factory.getbasetemp() / "shrewd_nltk_data"
    wordnet_corpus.build_nltk_wordnet(target_root=root)
    return semantics.load_wordnet(root)

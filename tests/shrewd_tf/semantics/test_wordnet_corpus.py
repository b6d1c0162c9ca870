"""Tests for the offline NLTK WordNet corpus built from Debian's files."""

import filecmp
import gzip
import os
import re
import sys
from pathlib import Path

import pytest

from shrewd_tf.semantics import distances as semantics
from shrewd_tf.semantics import wordnet_corpus
from tests.support.sources import make_fake_source

DEBIAN_DIR = Path(wordnet_corpus.DEBIAN_WORDNET_DIR)
LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")

needs_debian_wordnet = pytest.mark.skipif(
    not (DEBIAN_DIR / "data.noun").is_file(),
    reason="Debian WordNet missing: apt-get install wordnet-base "
    "wordnet-sense-index",
)


@pytest.fixture(scope="session")
def nltk_data_root(tmp_path_factory):
    """One corpus per session, shared by the test files (idempotent build)."""
    if not (DEBIAN_DIR / "data.noun").is_file():
        pytest.skip(f"Debian WordNet missing in {DEBIAN_DIR}")
    root = tmp_path_factory.getbasetemp() / "shrewd_nltk_data"
    wordnet_corpus.build_nltk_wordnet(target_root=root)
    return root


def test_lexnames_format_and_categories():
    lines = wordnet_corpus.lexnames_text().splitlines()
    assert len(lines) == 45
    category_of_prefix = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}
    for number, line in enumerate(lines):
        match = re.fullmatch(r"(\d\d)\t(\w+\.\w+)\t([1-4])", line)
        assert match, line
        assert int(match.group(1)) == number
        prefix = match.group(2).split(".")[0]
        assert match.group(3) == category_of_prefix[prefix]
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3"


@pytest.mark.skipif(
    not LEXNAMES_MAN_PAGE.is_file(), reason="lexnames(5WN) man page missing"
)
def test_lexnames_matches_man_page_table():
    with gzip.open(LEXNAMES_MAN_PAGE, "rt", encoding="latin-1") as page:
        text = page.read()
    rows = re.findall(r"^(\d\d)\t(\S+)\s*\t", text, flags=re.MULTILINE)
    embedded = [(f"{n:02d}", name) for n, name, _ in wordnet_corpus.LEXNAMES]
    assert rows == embedded


def test_data_files_cover_what_nltk_opens():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    provided = set(wordnet_corpus.WORDNET_DATA_FILES) | {"lexnames"}
    assert set(WordNetCorpusReader._FILES) <= provided


def test_default_root_is_an_nltk_data_path():
    import nltk

    root = wordnet_corpus.default_nltk_data_root()
    assert root == Path(sys.prefix) / "nltk_data"
    assert str(root) in nltk.data.path
    assert wordnet_corpus.wordnet_corpus_dir() == root / "corpora" / "wordnet"


@needs_debian_wordnet
def test_build_copies_debian_files(nltk_data_root):
    corpus_dir = nltk_data_root / "corpora" / "wordnet"
    for name in wordnet_corpus.WORDNET_DATA_FILES:
        assert not (corpus_dir / name).is_symlink()
        assert filecmp.cmp(DEBIAN_DIR / name, corpus_dir / name, shallow=False)
    lexnames = (corpus_dir / "lexnames").read_text(encoding="ascii")
    assert lexnames == wordnet_corpus.lexnames_text()
    leftovers = [p.name for p in corpus_dir.parent.iterdir()]
    assert leftovers == ["wordnet"]


@needs_debian_wordnet
def test_nltk_reads_the_corpus_with_princeton_noun_offsets(nltk_data_root):
    wordnet = semantics.load_wordnet(nltk_data_root)
    # Princeton WordNet 3.0: entity is n00001740, dog is n02084071.
    assert wordnet.synset("entity.n.01").offset() == 1740
    assert wordnet.synset("dog.n.01").offset() == 2084071
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"
    assert wordnet.synset("run.v.01").lexname() == "verb.motion"
    # index.sense is used for sense keys.
    assert wordnet.lemma_from_key("dog%1:05:00::").synset().name() == (
        "dog.n.01"
    )


def test_build_is_idempotent_and_force_rebuilds(tmp_path):
    source = make_fake_source(tmp_path / "debian")
    root = tmp_path / "nltk_data"
    corpus_dir = wordnet_corpus.build_nltk_wordnet(root, source_dir=source)
    assert corpus_dir == root / "corpora" / "wordnet"
    inode = os.stat(corpus_dir).st_ino
    (source / "data.noun").write_text("changed\n")

    assert wordnet_corpus.build_nltk_wordnet(root, source_dir=source) == (
        corpus_dir
    )
    assert os.stat(corpus_dir).st_ino == inode
    assert (corpus_dir / "data.noun").read_text() == "fake data.noun\n"

    wordnet_corpus.build_nltk_wordnet(root, source_dir=source, force=True)
    assert (corpus_dir / "data.noun").read_text() == "changed\n"
    assert [p.name for p in corpus_dir.parent.iterdir()] == ["wordnet"]


def test_missing_source_file_names_file_and_fix(tmp_path):
    source = make_fake_source(tmp_path / "debian", skip=("index.sense",))
    root = tmp_path / "nltk_data"
    with pytest.raises(wordnet_corpus.WordNetSourceError) as error:
        wordnet_corpus.build_nltk_wordnet(root, source_dir=source)
    assert "index.sense" in str(error.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in str(
        error.value
    )
    assert not (root / "corpora" / "wordnet").exists()


def test_incomplete_target_is_left_alone_without_force(tmp_path):
    source = make_fake_source(tmp_path / "debian")
    corpus_dir = tmp_path / "nltk_data" / "corpora" / "wordnet"
    corpus_dir.mkdir(parents=True)
    (corpus_dir / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="force"):
        wordnet_corpus.build_nltk_wordnet(corpus_dir.parents[1], source)
    assert (corpus_dir / "mine.txt").read_text() == "keep me"

    wordnet_corpus.build_nltk_wordnet(corpus_dir.parents[1], source, force=True)
    assert wordnet_corpus.is_complete_corpus(corpus_dir)
    assert not (corpus_dir / "mine.txt").exists()

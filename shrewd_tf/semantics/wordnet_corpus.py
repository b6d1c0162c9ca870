"""An offline NLTK WordNet 3.0 corpus built from the Debian WordNet files.

NLTK reads corpora only under its ``nltk_data`` roots (``nltk.data.path``,
which includes ``<sys.prefix>/nltk_data``) and refuses symlinks that point
outside them, so the Debian files (packages ``wordnet-base`` and
``wordnet-sense-index``, in ``/usr/share/wordnet``) are *copied* into
``<root>/corpora/wordnet/``. NLTK's reader also needs the ``lexnames`` table,
which Debian does not ship; it is the standard WordNet 3.0 table of
lexicographer files (``man 5 lexnames``) and is embedded here as data.

The noun graph equals Princeton WordNet 3.0 (noun byte offsets match), but
the verb and adjective byte offsets of Debian's files differ from
Princeton's, so callers key synsets by name (``"dog.n.01"``).
"""

import logging
import os
import shutil
import sys
from pathlib import Path

from shrewd_tf.io import staged_directory

DEBIAN_WORDNET_DIR = "/usr/share/wordnet"
DEBIAN_WORDNET_LICENSE = "/usr/share/doc/wordnet-base/copyright"
INSTALL_HINT = "apt-get install wordnet-base wordnet-sense-index"
CORPUS_SUBDIR = Path("corpora") / "wordnet"

_LOG = logging.getLogger(__name__)

# Files NLTK's WordNetCorpusReader opens, other than `lexnames` (generated).
WORDNET_DATA_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

# WordNet 3.0 lexicographer files: (file number, name, syntactic category),
# category 1 noun, 2 verb, 3 adjective, 4 adverb (lexnames(5WN)).
LEXNAMES = (
    (0, "adj.all", 3),
    (1, "adj.pert", 3),
    (2, "adv.all", 4),
    (3, "noun.Tops", 1),
    (4, "noun.act", 1),
    (5, "noun.animal", 1),
    (6, "noun.artifact", 1),
    (7, "noun.attribute", 1),
    (8, "noun.body", 1),
    (9, "noun.cognition", 1),
    (10, "noun.communication", 1),
    (11, "noun.event", 1),
    (12, "noun.feeling", 1),
    (13, "noun.food", 1),
    (14, "noun.group", 1),
    (15, "noun.location", 1),
    (16, "noun.motive", 1),
    (17, "noun.object", 1),
    (18, "noun.person", 1),
    (19, "noun.phenomenon", 1),
    (20, "noun.plant", 1),
    (21, "noun.possession", 1),
    (22, "noun.process", 1),
    (23, "noun.quantity", 1),
    (24, "noun.relation", 1),
    (25, "noun.shape", 1),
    (26, "noun.state", 1),
    (27, "noun.substance", 1),
    (28, "noun.time", 1),
    (29, "verb.body", 2),
    (30, "verb.change", 2),
    (31, "verb.cognition", 2),
    (32, "verb.communication", 2),
    (33, "verb.competition", 2),
    (34, "verb.consumption", 2),
    (35, "verb.contact", 2),
    (36, "verb.creation", 2),
    (37, "verb.emotion", 2),
    (38, "verb.motion", 2),
    (39, "verb.perception", 2),
    (40, "verb.possession", 2),
    (41, "verb.social", 2),
    (42, "verb.stative", 2),
    (43, "verb.weather", 2),
    (44, "adj.ppl", 3),
)


class WordNetSourceError(FileNotFoundError):
    """A Debian WordNet file needed to build the NLTK corpus is missing."""


def lexnames_text():
    """Returns the `lexnames` file: one `NN<TAB>name<TAB>category` per line."""
    return "".join(f"{n:02d}\t{name}\t{cat}\n" for n, name, cat in LEXNAMES)


def default_nltk_data_root():
    """Returns `<sys.prefix>/nltk_data`, one of NLTK's default data roots."""
    return Path(sys.prefix) / "nltk_data"


def wordnet_corpus_dir(target_root=None):
    """Returns `<target_root>/corpora/wordnet` (default root: the venv's)."""
    root = default_nltk_data_root() if target_root is None else target_root
    return Path(root) / CORPUS_SUBDIR


def is_complete_corpus(corpus_dir):
    """True when `corpus_dir` holds `lexnames` and every WordNet data file."""
    corpus_dir = Path(corpus_dir)
    names = WORDNET_DATA_FILES + ("lexnames",)
    return all((corpus_dir / name).is_file() for name in names)


def build_nltk_wordnet(
    target_root=None, source_dir=DEBIAN_WORDNET_DIR, force=False
):
    """Builds an NLTK WordNet corpus from the Debian WordNet files.

    Copies the Debian files into a staging directory beside the target,
    writes `lexnames`, then renames the directory into place
    (`shrewd_tf.io.staged_directory`), so a reader never sees a
    half-written corpus. Does nothing when a complete corpus
    is already there, unless `force`.

    Args:
        target_root: an nltk_data root; the corpus goes to
            `<target_root>/corpora/wordnet`. Default `<sys.prefix>/nltk_data`.
        source_dir: directory with the Debian files (`data.noun`, ...).
        force: rebuild even when a complete corpus is present.

    Returns:
        The corpus directory, a `Path`.

    Raises:
        WordNetSourceError: a file is missing from `source_dir`.
        FileExistsError: the target exists but is not a complete corpus
            (it is left alone unless `force`).
    """
    corpus_dir = wordnet_corpus_dir(target_root)
    if not force and is_complete_corpus(corpus_dir):
        _LOG.info("WordNet corpus already present: %s", corpus_dir)
        return corpus_dir
    if corpus_dir.exists() and not force:
        raise FileExistsError(
            f"{corpus_dir} exists but is not a complete WordNet corpus; "
            f"rebuild it with force=True (`shrewd setup-wordnet --force`). "
            f"Received: target_root={target_root}"
        )

    source_dir = Path(source_dir)
    for name in WORDNET_DATA_FILES:
        if not (source_dir / name).is_file():
            raise WordNetSourceError(
                f"WordNet file {source_dir / name} is missing; install the "
                f"Debian packages with `{INSTALL_HINT}` or pass the directory "
                f"holding them. Received: source_dir={source_dir}"
            )

    try:
        with staged_directory(corpus_dir, prefix=".staging-") as staging:
            staging = Path(staging)
            for name in WORDNET_DATA_FILES:
                shutil.copyfile(source_dir / name, staging / name)
            (staging / "lexnames").write_text(
                lexnames_text(), encoding="ascii"
            )
            if os.path.isfile(DEBIAN_WORDNET_LICENSE):
                shutil.copyfile(DEBIAN_WORDNET_LICENSE, staging / "LICENSE")
            for path in staging.iterdir():
                path.chmod(0o644)
            staging.chmod(0o755)
    except FileExistsError:
        # A concurrent build won the race; keep its (identical) corpus.
        if not is_complete_corpus(corpus_dir):
            raise
        _LOG.info("WordNet corpus built concurrently: %s", corpus_dir)
        return corpus_dir
    _LOG.info("Built WordNet corpus %s from %s", corpus_dir, source_dir)
    return corpus_dir

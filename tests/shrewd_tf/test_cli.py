"""Tests for the `shrewd` command line."""

import subprocess
import sys

import pytest

from shrewd_tf import cli
from shrewd_tf import wordnet_corpus


def make_fake_source(directory, skip=()):
    """Tiny stand-ins for the Debian WordNet files."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in wordnet_corpus.WORDNET_DATA_FILES:
        if name not in skip:
            (directory / name).write_text(f"fake {name}\n")
    return directory


def test_setup_wordnet_builds_corpus(tmp_path, capsys):
    source = make_fake_source(tmp_path / "debian")
    target = tmp_path / "nltk_data"
    argv = ["setup-wordnet", "--target", str(target), "--source", str(source)]
    assert cli.main(argv) == 0
    corpus_dir = target / "corpora" / "wordnet"
    assert capsys.readouterr().out.strip() == str(corpus_dir)
    assert wordnet_corpus.is_complete_corpus(corpus_dir)

    (source / "data.noun").write_text("new\n")
    assert cli.main(argv) == 0
    assert (corpus_dir / "data.noun").read_text() == "fake data.noun\n"
    assert cli.main(argv + ["--force"]) == 0
    assert (corpus_dir / "data.noun").read_text() == "new\n"


def test_setup_wordnet_missing_files_fails_with_fix(tmp_path, capsys):
    source = make_fake_source(tmp_path / "debian", skip=("data.verb",))
    argv = ["setup-wordnet", "--target", str(tmp_path / "t"), "--source"]
    assert cli.main(argv + [str(source)]) == 1
    error = capsys.readouterr().err
    assert "data.verb" in error
    assert "apt-get install wordnet-base wordnet-sense-index" in error


def test_subcommand_is_required():
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_help_is_fast_and_imports_no_tensorflow():
    code = (
        "import sys\n"
        "from shrewd_tf import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "heavy = ('tensorflow', 'keras', 'nltk')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "setup-wordnet" in result.stdout
    assert "HEAVY []" in result.stdout

"""The `shrewd` command: one entry point, one library call per subcommand.

Heavy imports (TensorFlow, NLTK) happen inside the subcommand functions, so
`shrewd --help` stays fast; `wordnet_corpus` needs only the standard library.
"""

import argparse
import logging
import sys

from shrewd_tf import wordnet_corpus


def _setup_wordnet(args):
    try:
        corpus_dir = wordnet_corpus.build_nltk_wordnet(
            target_root=args.target, source_dir=args.source, force=args.force
        )
    except (wordnet_corpus.WordNetSourceError, FileExistsError) as error:
        print(f"shrewd setup-wordnet: error: {error}", file=sys.stderr)
        return 1
    print(corpus_dir)
    return 0


def build_parser():
    """Returns the `argparse` parser of the `shrewd` command."""
    parser = argparse.ArgumentParser(
        prog="shrewd",
        description="SHREWD semantic deep hashing for image retrieval.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    wordnet = commands.add_parser(
        "setup-wordnet",
        help="build the offline NLTK WordNet corpus from Debian's files",
        description=(
            "Copy the Debian WordNet 3.0 files (wordnet-base, "
            "wordnet-sense-index) into an nltk_data root as "
            "corpora/wordnet, adding the lexnames table NLTK needs."
        ),
    )
    wordnet.add_argument(
        "--target",
        metavar="DIR",
        default=None,
        help="nltk_data root (default: <sys.prefix>/nltk_data)",
    )
    wordnet.add_argument(
        "--source",
        metavar="DIR",
        default=wordnet_corpus.DEBIAN_WORDNET_DIR,
        help="directory with the Debian WordNet files (default: %(default)s)",
    )
    wordnet.add_argument(
        "--force", action="store_true", help="rebuild an existing corpus"
    )
    wordnet.set_defaults(run=_setup_wordnet)
    return parser


def main(argv=None):
    """Runs the `shrewd` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

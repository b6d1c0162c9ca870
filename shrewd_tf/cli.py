"""The `shrewd` command: one entry point, one library call per subcommand.

Heavy imports (TensorFlow, NLTK) happen inside the subcommand functions, so
`shrewd --help` stays fast; `wordnet_corpus` needs only the standard library.
"""

import argparse
import logging
import os
import sys

from shrewd_tf import contract
from shrewd_tf import verbosity
from shrewd_tf.semantics import wordnet_corpus

# Errors a user can fix (a missing file, a bad value): one line, no
# traceback, unless -v.
EXPECTED_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError,
                   PermissionError, ValueError, KeyError)


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


def _load_config(args):
    from shrewd_tf import config as config_lib

    config = (
        config_lib.ExperimentConfig.from_file(args.config)
        if args.config
        else config_lib.ExperimentConfig()
    )
    overrides = _overrides(args)
    if getattr(args, "output_dir", None):
        overrides["train.output_dir"] = args.output_dir
    return config.with_overrides(overrides)


def _overrides(args):
    """--preset's overrides, then each --set KEY=VALUE on top."""
    from shrewd_tf import config as config_lib

    overrides = {}
    preset = getattr(args, "preset", None)
    if preset:
        overrides.update(config_lib.PRESETS[preset])
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(
                f"shrewd: error: --set expects key=value. Received: {item!r}"
            )
        overrides[key] = _parse_value(value)
    return overrides


def _parse_value(text):
    """YAML scalars and lists: 3 -> int, 0.5 -> float, [1,2] -> list."""
    import yaml

    return yaml.safe_load(text)


def _train(args):
    from shrewd_tf.evaluation import evaluate as evaluation
    from shrewd_tf.training import trainer

    result = trainer.train(_load_config(args))
    print(evaluation.markdown_table({result.output_dir: result.metrics}))
    return 0


def _evaluate(args):
    from shrewd_tf.evaluation import evaluate as evaluation

    result = evaluation.evaluate_run(args.run_dir, args.output, k=args.k)
    print(evaluation.markdown_table({args.run_dir: result}))
    return 0


def _ablation(args):
    from shrewd_tf.evaluation import evaluate as evaluation
    from shrewd_tf.evaluation import experiments

    config = _load_config(args)
    rows = experiments.run_ablation(
        config, args.output_dir, loss_sets=args.losses.split(",")
    )
    print(evaluation.markdown_table(rows, f"{config.name}: loss ablation"))
    return 0


def _zero_shot(args):
    from shrewd_tf.evaluation import experiments

    config = _load_config(args)
    holdout = [int(c) for c in args.holdout.split(",")]
    experiments.run_zero_shot(
        config, args.output_dir, holdout, loss_sets=args.losses.split(","),
        database=args.database,
    )
    table = os.path.join(args.output_dir, experiments.ZERO_SHOT_TABLE_FILE)
    with open(table) as f:
        print(f.read())
    return 0


def _demo(args):
    from pipeline import demo

    return demo.run(args.runs_dir, quick=args.quick)


def _index_build(args):
    from pipeline import build_index
    from pipeline import build_index_options

    try:
        result = build_index.run(build_index_options.options_from_args(args))
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"shrewd index build: error: {error}", file=sys.stderr)
        return 1
    for kind, path in sorted(result.index_dirs.items()):
        print(f"{kind}: {path}")
    return 0


def _export(args):
    from shrewd_tf.export import saved_model as export

    try:
        path = export.export_saved_model(
            args.run_dir, args.export_root, args.model_name,
            version=args.version,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"shrewd export: error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _serve(args):
    from serving import server as serving_server

    logging.getLogger().setLevel(logging.INFO)
    try:
        config = serving_server.config_from_args(args)
    except ValueError as error:
        print(f"shrewd serve: error: {error}", file=sys.stderr)
        return 2
    return serving_server.serve(config)


def _pipeline_run(args):
    from pipeline import runner

    overrides = _overrides(args)
    runner.run(args.config, overrides, force=args.force or ())
    return 0


def _add_preset_argument(parser):
    from shrewd_tf.config import PRESETS

    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="apply a named bundle of overrides before --set; 'paper' is "
        "the paper-literal KL setting (docs/kl_binarisation.md)",
    )


def _add_config_arguments(parser, output_default=None):
    parser.add_argument("--config", metavar="FILE", help="JSON/YAML config")
    _add_preset_argument(parser)
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", default=output_default,
        help="where the run writes its artefacts",
    )


def build_parser():
    """Returns the `argparse` parser of the `shrewd` command."""
    parser = argparse.ArgumentParser(
        prog="shrewd",
        description="SHREWD semantic deep hashing for image retrieval.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="log at INFO level, with the internals of TensorFlow, Beam, "
        "absl and ScaNN (quiet by default) and full tracebacks",
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

    train = commands.add_parser(
        "train", help="train one configuration with model.fit",
        description="Train, save and evaluate one ExperimentConfig.",
    )
    _add_config_arguments(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help=(
            f"evaluate a finished run ({contract.METRICS_FILE} + "
            f"{contract.METRICS_TABLE_FILE})"
        ),
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--output", metavar="DIR", default=None)
    evaluate.add_argument("--k", type=int, default=250)
    evaluate.set_defaults(run=_evaluate)

    ablation = commands.add_parser(
        "ablation", help="train each loss set; one metrics table",
    )
    _add_config_arguments(ablation, output_default="runs/ablation")
    ablation.add_argument(
        "--losses", default="CLASS,SIM,KL-CLASS,SIM-KL,SIM-KL-CLASS",
        help="comma-separated loss sets (default: %(default)s)",
    )
    ablation.set_defaults(run=_ablation)

    zero_shot = commands.add_parser(
        "zero-shot", help="hold classes out of training; flat hit@K",
    )
    _add_config_arguments(zero_shot, output_default="runs/zero_shot")
    zero_shot.add_argument(
        "--holdout", required=True, help="comma-separated class ids"
    )
    zero_shot.add_argument("--losses", default="CLASS,SIM-KL-CLASS")
    zero_shot.add_argument(
        "--database", choices=("unseen", "all"), default="unseen",
        help="retrieve among the unseen-class test images only (the "
        "paper's Table 5, default) or among all test images",
    )
    zero_shot.set_defaults(run=_zero_shot)

    export = commands.add_parser(
        "export", help="export a run as a TF-Serving SavedModel version",
        description=(
            "Write EXPORT_ROOT/MODEL_NAME/VERSION/ (atomically) with the "
            f"{contract.SERVING_SIGNATURE} (= {contract.IMAGES_SIGNATURE}: "
            f"encoded images) and {contract.PIXELS_SIGNATURE} signatures "
            "and warm-up requests; prints the version directory."
        ),
    )
    export.add_argument(
        "--run-dir", required=True, metavar="DIR",
        help=(
            f"finished run: {contract.MODEL_FILE}, "
            f"{contract.PREPROCESSING_FILE}, {contract.CONFIG_FILE}"
        ),
    )
    export.add_argument(
        "--export-root", required=True, metavar="DIR",
        help="TF Serving's model base paths live here",
    )
    export.add_argument("--model-name", required=True, metavar="NAME")
    export.add_argument(
        "--version", type=int, default=None,
        help="version number (default: one after the largest existing)",
    )
    export.set_defaults(run=_export)

    serve = commands.add_parser(
        "serve", help="TF-Serving-compatible REST + gRPC server with retrieval",
        description=(
            "Serve the SavedModels under --export-root with TF Serving's "
            "REST and gRPC APIs, /v1/search over the indexes and a web page "
            "at /."
        ),
    )
    from serving import config as serving_config

    serving_config.add_arguments(serve)
    serve.set_defaults(run=_serve)

    pipeline_parser = commands.add_parser(
        "pipeline", help="the TFX-style pipeline (TFRecords to served index)",
    )
    pipeline_commands = pipeline_parser.add_subparsers(
        dest="pipeline_command", metavar="COMMAND")
    pipeline_commands.required = True
    pipeline_run = pipeline_commands.add_parser(
        "run", help="run the stages, reusing the unchanged ones",
        description=(
            "ExampleGen -> Semantics -> Trainer -> Evaluator -> Exporter -> "
            "IndexBuilder under runs/<name>/<stage>/; a stage whose config "
            "and inputs are unchanged is reused."
        ),
    )
    pipeline_run.add_argument(
        "--config", metavar="FILE", default="configs/fashion_mnist.yaml",
        help="pipeline config (default: %(default)s)")
    pipeline_run.add_argument(
        "--set", metavar="KEY=VALUE", action="append",
        help="override, e.g. --set train.epochs=1 "
             "--set pipeline.configurations=[CLASS] (repeatable)")
    _add_preset_argument(pipeline_run)
    pipeline_run.add_argument(
        "--force", metavar="STAGE", action="append",
        help="rerun this stage even if cached ('all': every stage)")
    pipeline_run.set_defaults(run=_pipeline_run)

    index = commands.add_parser("index", help="retrieval indexes")
    index_commands = index.add_subparsers(dest="index_command", metavar="COMMAND")
    index_commands.required = True
    index_build = index_commands.add_parser(
        "build", help="encode a TFRecord split with a SavedModel and index it",
        description=(
            "Bulk-encode one split of a TFRecord directory with an exported "
            "SavedModel (a Beam job) and build binary Hamming and/or ScaNN "
            "indexes under --output-dir."
        ),
    )
    from pipeline import build_index_options

    build_index_options.add_arguments(index_build, beam_options=True)
    index_build.set_defaults(run=_index_build)

    demo = commands.add_parser(
        "demo", help="the Fashion-MNIST pipeline end to end (make demo)",
    )
    demo.add_argument("--runs-dir", default="runs", metavar="DIR")
    demo.add_argument(
        "--quick", action="store_true", help="a small subset (for CI)"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Runs the `shrewd` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    verbosity.configure(verbose=args.verbose)
    try:
        return args.run(args)
    except EXPECTED_ERRORS as error:
        if args.verbose:
            raise
        message = " ".join(str(error).split())
        print(f"shrewd {args.command}: error: {message} (-v shows the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

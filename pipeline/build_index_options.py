"""What a `pipeline.build_index` run does: its typed options and its flags.

`BuildIndexOptions` is the job's typed interface (the pipeline's
index_builder stage builds one and calls `build_index.run(options)`);
`add_arguments` and `options_from_args` are its command line, shared by
`python -m pipeline.build_index` and `shrewd index build`. This module
imports no Beam, so the `shrewd` parser stays fast.
"""

import dataclasses

from shrewd_tf import contract
from shrewd_tf.retrieval.builder import INDEX_KINDS
from shrewd_tf.retrieval.builder import parse_kinds

BINARY_FLAGS = (
    "nlist", "nprobe", "nhash", "nflip", "M", "ef_construction", "ef_search",
    "rerank_candidates",
)
SCANN_FLAGS = (
    "num_leaves", "num_leaves_to_search", "reorder_k", "dimensions_per_block",
    "training_sample_size",
)


@dataclasses.dataclass(frozen=True)
class BuildIndexOptions:
    """Options of one `build_index` run.

    Attributes:
        tfrecord_dir: a TFRecord directory (dataset_info.json + shards).
        saved_model: a SavedModel version directory, or a model directory
            (its highest integer version is used).
        output_dir: gets `binary/`, `scann/` and `codes/`.
        split: the split that is the database.
        kinds: index kinds, a tuple of "binary" / "scann" ("both" and a
            single kind are accepted and normalised).
        binary_method: "auto" (flat up to 1M codes, else ivf when its
            recall@10 measured at build reaches 0.99, see
            `shrewd_tf.retrieval.method_policy`), "flat", "mih", "ivf" or
            "hnsw".
        rerank: re-rank the Hamming shortlist by float L1 distance.
        binary_params: extra `BinaryHammingIndex` arguments (nlist, ...).
        scann_params: `ScannIndex` arguments (distance, brute_force, ...).
        num_threads: threads for faiss and ScaNN.
        signature: SavedModel signature taking encoded images tf.string [N].
        output_key: its output holding float codes [N, d].
        batch_size: images per signature call (at most).
        image_uri_prefix: prepended to record ids to make image_uri, or a
            template with "{id}" ("images/{id}.png").
        codes_shards: codes shards to write (0: the runner chooses).
        beam_args: Beam pipeline flags (`pipeline.options`: FnApiRunner
            unless they name a runner).
    """

    tfrecord_dir: str
    saved_model: str
    output_dir: str
    split: str = "test"
    kinds: tuple = INDEX_KINDS
    binary_method: str = "auto"
    rerank: bool = True
    binary_params: dict = dataclasses.field(default_factory=dict)
    scann_params: dict = dataclasses.field(default_factory=dict)
    num_threads: int = 1
    signature: str = contract.SERVING_SIGNATURE
    output_key: str = contract.CODE_OUTPUT
    batch_size: int = 256
    image_uri_prefix: str = ""
    codes_shards: int = 0
    beam_args: tuple = ()

    def __post_init__(self):
        # Bad kinds fail here, before any work.
        object.__setattr__(self, "kinds", parse_kinds(self.kinds))
        for name in ("binary_params", "scann_params"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        object.__setattr__(self, "beam_args", tuple(self.beam_args))


def add_arguments(parser, beam_options=False):
    """Adds the job's flags to an `argparse` parser.

    Args:
        parser: an `argparse.ArgumentParser` (or subcommand parser).
        beam_options: also add a repeatable `--beam-option FLAG` for
            parsers that do not pass unknown flags through to Beam (the
            `shrewd` CLI), e.g. `--beam-option=--direct_num_workers=2`.

    Returns:
        `parser`.
    """
    defaults = BuildIndexOptions

    def flag(name, *args, **kwargs):
        # --dash-names, with --underscore_names as Beam spells its own.
        names = {f"--{name.replace('_', '-')}", f"--{name}"}
        parser_or_group = kwargs.pop("group", parser)
        parser_or_group.add_argument(*sorted(names), *args, **kwargs)

    flag("tfrecord_dir", required=True,
         help="TFRecord directory (dataset_info.json and shards)")
    flag("split", default=defaults.split,
         help="the split that is the database")
    flag("saved_model", required=True,
         help="SavedModel version directory, or a model directory (its "
         "highest integer version)")
    flag("output_dir", required=True, help="gets binary/, scann/, codes/")
    flag("index", default="both", choices=("both",) + INDEX_KINDS)
    flag("signature", default=defaults.signature,
         help="signature taking encoded images tf.string [N]")
    flag("output_key", default=defaults.output_key,
         help="its output with float codes")
    flag("batch_size", type=int, default=defaults.batch_size,
         help="images per call")
    flag("image_uri_prefix", default=defaults.image_uri_prefix,
         help="prepended to record ids to make image_uri, or a template "
              "with {id}, e.g. images/{id}.png")
    flag("codes_shards", type=int, default=defaults.codes_shards,
         help="codes shards (0: the runner chooses)")
    flag("num_threads", type=int, default=defaults.num_threads,
         help="faiss / ScaNN threads")
    binary = parser.add_argument_group("binary (Hamming) index")
    flag("binary_method", default=defaults.binary_method,
         choices=("auto", "flat", "mih", "ivf", "hnsw"), group=binary,
         help="auto: flat up to 1M codes, else ivf when its recall@10 "
         "measured at build reaches 0.99 (default: %(default)s)")
    flag("no_rerank", dest="rerank", action="store_false", group=binary,
         help="Hamming distances only (no float L1 re-ranking)")
    for name in BINARY_FLAGS:
        flag(name, type=int, dest=f"binary_{name}", group=binary)
    scann = parser.add_argument_group("ScaNN index")
    flag("scann_distance", default="squared_l2",
         choices=("squared_l2", "dot_product"), group=scann)
    flag("scann_brute_force", action="store_true", group=scann)
    for name in SCANN_FLAGS:
        flag(f"scann_{name}", type=int, group=scann)
    if beam_options:
        parser.add_argument(
            "--beam-option", action="append", default=[],
            dest="beam_options", metavar="FLAG",
            help="a Beam pipeline flag, repeatable "
            "(--beam-option=--direct_num_workers=2)",
        )
    return parser


def options_from_args(args, beam_args=()):
    """`BuildIndexOptions` of parsed `add_arguments` flags.

    Unset method flags are left out, so the index defaults apply; a flag
    the chosen method does not take raises ValueError at the build.

    Args:
        args: the `argparse.Namespace`.
        beam_args: Beam flags (the unknown flags of `parse_known_args`);
            `--beam-option` values, when the parser has them, come first.
    """
    return BuildIndexOptions(
        tfrecord_dir=args.tfrecord_dir,
        saved_model=args.saved_model,
        output_dir=args.output_dir,
        split=args.split,
        kinds=args.index,
        binary_method=args.binary_method,
        rerank=args.rerank,
        binary_params={
            name: getattr(args, f"binary_{name}")
            for name in BINARY_FLAGS
            if getattr(args, f"binary_{name}") is not None
        },
        scann_params={
            "distance": args.scann_distance,
            "brute_force": args.scann_brute_force,
            **{
                name: getattr(args, f"scann_{name}")
                for name in SCANN_FLAGS
                if getattr(args, f"scann_{name}") is not None
            },
        },
        num_threads=args.num_threads,
        signature=args.signature,
        output_key=args.output_key,
        batch_size=args.batch_size,
        image_uri_prefix=args.image_uri_prefix,
        codes_shards=args.codes_shards,
        beam_args=(*getattr(args, "beam_options", ()), *beam_args),
    )

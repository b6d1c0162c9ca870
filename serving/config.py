"""`ServerConfig`: what the server serves and its limits, and its command line.

`add_arguments(parser)` adds every field as a dashed option (`shrewd serve`,
`python -m serving`); `config_from_args(args)` builds the frozen config
back, validated.
"""

import dataclasses
import urllib.parse

from shrewd_tf import contract

DEFAULT_SIGNATURE = contract.SERVING_SIGNATURE


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What to serve and the limits.

    Attributes:
        export_root: folder of `<model name>/<int version>/` SavedModels
            (None: serve no models; image search needs `encoder_url`).
        model_names: names under export_root to serve (None: all).
        encoder_url: REST URL of a TF Serving server that encodes search
            images (`:predict` forwarded there) instead of a local model.
        encoder_signature: signature taking image bytes, for search.
        search_model: model used for image search requests without
            "model" (None: the only model served, if there is one).
        binary_index: directory of a saved `BinaryHammingIndex`.
        float_index: directory of a saved `ScannIndex`.
        image_root: folder the web page's images are served from
            (metadata image_uri resolved inside it; None: no images).
        class_distances: the `[C, C]` class-distance `.npy` of the
            dataset (the pipeline's `<run>/semantics/class_distances.npy`):
            search answers then give each result's class similarity to the
            query's class (`serving.semantic`; None: no similarities).
        host: address to bind; 127.0.0.1 (loopback only) by default.
        rest_port: REST port (0: any free port).
        grpc_port: gRPC port (0: any free port; None: no gRPC).
        poll_interval_s: seconds between scans for new model versions.
        max_request_bytes: largest request body / message accepted (bytes).
        max_batch_size: largest first dimension of a predict input.
        max_k: largest k of a search request.
        encoder_timeout_s: timeout of a forwarded encoder request (s).
        request_timeout_s: time a REST request body may take to arrive (s;
            408 after).
        idle_timeout_s: keep-alive: a REST or gRPC connection without a
            request for this long is closed (s).
        max_connections: open REST connections; more get 503 and close.
        max_in_flight: REST requests waiting for or running on the
            workers; more get 503 UNAVAILABLE. gRPC has its own count of
            the same size; more get RESOURCE_EXHAUSTED.
        rest_workers: threads running REST requests (TensorFlow, faiss).
        shutdown_grace_s: on stop, time in-flight requests get to finish.
        grpc_workers: threads answering gRPC calls.
        warmup: replay `assets.extra/tf_serving_warmup_requests` on load.
        batching: `serving.batching_parameters.BatchingParameters` to batch
            concurrent predicts and image-search encodes (TF Serving's
            --enable_batching), or None: each request runs alone.
    """

    export_root: str = None
    model_names: tuple = None
    encoder_url: str = None
    encoder_signature: str = DEFAULT_SIGNATURE
    search_model: str = None
    binary_index: str = None
    float_index: str = None
    image_root: str = None
    class_distances: str = None
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_interval_s: float = 2.0
    max_request_bytes: int = 8 * 2**20
    max_batch_size: int = 64
    max_k: int = 1000
    encoder_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    max_connections: int = 4096
    max_in_flight: int = 64
    rest_workers: int = 4
    shutdown_grace_s: float = 10.0
    grpc_workers: int = 8
    warmup: bool = True
    batching: object = None

    def __post_init__(self):
        for name in (
            "max_request_bytes",
            "max_batch_size",
            "max_k",
            "max_connections",
            "max_in_flight",
            "rest_workers",
            "grpc_workers",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < 1
            ):
                raise ValueError(
                    f"`{name}` must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        for name in (
            "poll_interval_s",
            "encoder_timeout_s",
            "request_timeout_s",
            "idle_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` must be > 0. "
                    f"Received: {name}={getattr(self, name)!r}"
                )
        if self.batching is not None:
            from serving.batching_parameters import BatchingParameters

            if not isinstance(self.batching, BatchingParameters):
                raise ValueError(
                    "`batching` must be a BatchingParameters or None. "
                    f"Received: batching={self.batching!r}"
                )
        if not self.shutdown_grace_s >= 0:
            raise ValueError(
                "`shutdown_grace_s` must be >= 0. "
                f"Received: shutdown_grace_s={self.shutdown_grace_s!r}"
            )
        has_index = bool(self.binary_index or self.float_index)
        if self.export_root is None and not has_index:
            raise ValueError(
                "Nothing to serve: give export_root and/or an index "
                "(binary_index, float_index)."
            )
        if self.encoder_url is not None:
            parsed = urllib.parse.urlparse(self.encoder_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(
                    "`encoder_url` must be an http(s) URL like "
                    "http://host:8501. "
                    f"Received: encoder_url={self.encoder_url!r}"
                )
            if not has_index:
                raise ValueError(
                    "`encoder_url` encodes images for /v1/search only: give "
                    f"binary_index or float_index. Received: encoder_url="
                    f"{self.encoder_url!r} without an index"
                )
        if self.class_distances is not None and not has_index:
            raise ValueError(
                "`class_distances` annotates /v1/search results: give "
                "binary_index or float_index. Received: class_distances="
                f"{self.class_distances!r} without an index"
            )


# === Command line ===


def add_arguments(parser):
    """Adds the ServerConfig options (dashed, like `shrewd`) to a parser."""
    defaults = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    parser.add_argument(
        "--export-root",
        metavar="DIR",
        help="folder of <model>/<version>/ SavedModels",
    )
    parser.add_argument(
        "--model-names",
        nargs="+",
        metavar="NAME",
        help="models to serve (default: every folder under --export-root)",
    )
    parser.add_argument(
        "--encoder-url",
        metavar="URL",
        help="TF Serving REST URL (http://host:8501) that encodes search "
        "images, instead of a local model",
    )
    parser.add_argument("--encoder-signature", default=DEFAULT_SIGNATURE)
    parser.add_argument(
        "--search-model",
        metavar="NAME",
        help="model for image searches (default: the only model served)",
    )
    parser.add_argument(
        "--binary-index", metavar="DIR", help="saved BinaryHammingIndex"
    )
    parser.add_argument(
        "--float-index", metavar="DIR", help="saved ScannIndex"
    )
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder the database images are served from "
        "(image_uri inside it)",
    )
    parser.add_argument(
        "--class-distances",
        metavar="FILE",
        help="the dataset's C x C class-distance matrix (.npy, e.g. the "
        "pipeline's <run>/semantics/class_distances.npy): search results "
        "get their class similarity to the query's class",
    )
    parser.add_argument("--host", default=defaults["host"])
    parser.add_argument("--rest-port", type=int, default=defaults["rest_port"])
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=defaults["grpc_port"],
        help="gRPC port; -1 disables gRPC (default: %(default)s)",
    )
    for name, kind in (
        ("poll_interval_s", float),
        ("max_request_bytes", int),
        ("max_batch_size", int),
        ("max_k", int),
        ("encoder_timeout_s", float),
        ("request_timeout_s", float),
        ("idle_timeout_s", float),
        ("max_connections", int),
        ("max_in_flight", int),
        ("rest_workers", int),
        ("shutdown_grace_s", float),
        ("grpc_workers", int),
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=defaults[name],
            help="(default: %(default)s)",
        )
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the warmup requests"
    )
    parser.add_argument(
        "--enable-batching",
        action="store_true",
        help="batch concurrent predicts and image-search encodes, as "
        "tensorflow_model_server --enable_batching",
    )
    parser.add_argument(
        "--batching-parameters-file",
        metavar="FILE",
        help="TF Serving BatchingParameters text proto (max_batch_size, "
        "batch_timeout_micros, num_batch_threads, ...); implies "
        "--enable-batching (default parameters without it)",
    )
    return parser


def config_from_args(args):
    """ServerConfig from parsed `add_arguments` options."""
    return ServerConfig(
        export_root=args.export_root,
        model_names=tuple(args.model_names) if args.model_names else None,
        encoder_url=args.encoder_url,
        encoder_signature=args.encoder_signature,
        search_model=args.search_model,
        binary_index=args.binary_index,
        float_index=args.float_index,
        image_root=args.image_root,
        class_distances=args.class_distances,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        poll_interval_s=args.poll_interval_s,
        max_request_bytes=args.max_request_bytes,
        max_batch_size=args.max_batch_size,
        max_k=args.max_k,
        encoder_timeout_s=args.encoder_timeout_s,
        request_timeout_s=args.request_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        max_connections=args.max_connections,
        max_in_flight=args.max_in_flight,
        rest_workers=args.rest_workers,
        shutdown_grace_s=args.shutdown_grace_s,
        grpc_workers=args.grpc_workers,
        warmup=not args.no_warmup,
        batching=_batching_from_args(args),
    )


def _batching_from_args(args):
    """BatchingParameters of the batching options, or None (off).

    Raises:
        ValueError: an unreadable or invalid parameters file.
    """
    from serving import batching_parameters

    path = args.batching_parameters_file
    if path is not None:
        try:
            return batching_parameters.read_batching_parameters_file(path)
        except OSError as e:
            raise ValueError(
                f"--batching-parameters-file {path}: cannot be read ({e})."
            ) from None
    if args.enable_batching:
        return batching_parameters.BatchingParameters()
    return None

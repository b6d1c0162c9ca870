"""The server: TF Serving's REST and gRPC APIs, retrieval and a web page.

```
python -m serving --export-root exports --binary-index index/binary \\
    --image-root data/images --rest-port 8501 --grpc-port 8500
```

`Server(ServerConfig(...)).start()` loads the models (`serving.models`) and
indexes (`shrewd_tf.retrieval.load_index`), then answers REST on `rest_port`
(`serving.rest`) and gRPC on `grpc_port` (`serving.grpc_service`), each on
its own threads, until `stop()` (REST: one asyncio event loop for every
connection and a bounded worker pool, `serving.rest_server`).
`serve(config)` does the same and blocks until SIGINT / SIGTERM. Ports 0
pick free ports (read them back from `server.rest_port` /
`server.grpc_port`).
"""

import argparse
import dataclasses
import logging
import signal
import threading
import urllib.parse

from shrewd_tf import contract

# TensorFlow, faiss and ScaNN load in `Server.start`, so a CLI can import
# this module (add_arguments, ServerConfig) cheaply.
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
        idle_timeout_s: REST keep-alive: a connection without a request
            for this long is closed (s).
        max_connections: open REST connections; more get 503 and close.
        max_in_flight: REST requests waiting for or running on the
            workers; more get 503 UNAVAILABLE.
        rest_workers: threads running REST requests (TensorFlow, faiss).
        shutdown_grace_s: on stop, time in-flight requests get to finish.
        grpc_workers: threads answering gRPC calls.
        warmup: replay `assets.extra/tf_serving_warmup_requests` on load.
    """

    export_root: str = None
    model_names: tuple = None
    encoder_url: str = None
    encoder_signature: str = DEFAULT_SIGNATURE
    search_model: str = None
    binary_index: str = None
    float_index: str = None
    image_root: str = None
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


def _load_indexes(config):
    """{mode: index} from the configured directories (modes and the index
    kind serving each: `shrewd_tf.contract.INDEX_KIND_TABLE`)."""
    from shrewd_tf.retrieval.base import load_index

    indexes = {}
    for mode, directory in (
        (contract.BINARY_MODE, config.binary_index),
        (contract.FLOAT_MODE, config.float_index),
    ):
        if directory is None:
            continue
        index = load_index(directory)
        kind = contract.index_kind_for_mode(mode)
        if index.kind != kind.name:
            raise ValueError(
                f"The {mode} index must be a {kind.index_type!r} index. "
                f"Received: {directory} holds {index.index_type!r}"
            )
        logging.info(
            "Loaded %s index %s (%d codes)", mode, directory, len(index)
        )
        indexes[mode] = index
    return indexes


class _DefaultModel:
    """The search model: configured, or the only model served."""

    def __init__(self, name, repository):
        self.name, self.repository = name, repository

    def __call__(self):
        if self.name or self.repository is None:
            return self.name
        names = self.repository.model_names_served()
        return names[0] if len(names) == 1 else None


class Server:
    """REST + gRPC server over a `ServerConfig`; `start()` / `stop()`.

    Attributes (after start):
        rest_port: bound REST port.
        grpc_port: bound gRPC port, or None.
        repository: `ModelRepository` or None.
        search: `SearchService` or None.
        metrics: `serving.metrics.Metrics` of REST and gRPC requests.
    """

    def __init__(self, config):
        self.config = config
        self.repository = None
        self.search = None
        self.metrics = None
        self.rest_port = None
        self.grpc_port = None
        self._rest = None
        self._grpc = None
        self._stopped = threading.Event()

    def start(self):
        """Loads models and indexes, binds the ports, starts answering.

        Raises:
            ValueError, IndexFormatError, OSError: on a bad index or an
                address in use; whatever started is stopped again.
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        from serving.encoders import LocalEncoder
        from serving.metrics import Metrics
        from serving.encoders import RemoteEncoder
        from serving.models import ModelRepository
        from serving.rest import RestApi
        from serving.rest_server import RestServer
        from serving.retrieval import SearchService

        config = self.config
        self.metrics = Metrics()
        if config.export_root is not None:
            self.repository = ModelRepository(
                config.export_root,
                model_names=config.model_names,
                poll_interval_s=config.poll_interval_s,
                warmup=config.warmup,
            ).start()
        indexes = _load_indexes(config)
        if config.encoder_url is not None:
            encoder = RemoteEncoder(
                config.encoder_url,
                config.encoder_signature,
                config.encoder_timeout_s,
            )
        elif self.repository is not None:
            encoder = LocalEncoder(self.repository, config.encoder_signature)
        else:
            encoder = None
        if indexes:
            self.search = SearchService(
                indexes,
                encoder=encoder,
                default_model=_DefaultModel(
                    config.search_model, self.repository
                ),
                max_k=config.max_k,
                image_root=config.image_root,
            )
        api = RestApi(self.repository, self.search, config.max_batch_size)
        self._rest = RestServer(
            api,
            config.host,
            config.rest_port,
            max_request_bytes=config.max_request_bytes,
            request_timeout_s=config.request_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
            max_connections=config.max_connections,
            max_in_flight=config.max_in_flight,
            workers=config.rest_workers,
            metrics=self.metrics,
        ).start()
        self.rest_port = self._rest.server_address[1]
        if config.grpc_port is not None and self.repository is not None:
            from serving.grpc_service import make_grpc_server

            self._grpc, self.grpc_port = make_grpc_server(
                self.repository,
                config.host,
                config.grpc_port,
                config.max_request_bytes,
                config.max_batch_size,
                config.grpc_workers,
                self.metrics,
            )
            self._grpc.start()
        logging.info(
            "Serving REST on http://%s:%d%s",
            config.host,
            self.rest_port,
            (
                f", gRPC on {config.host}:{self.grpc_port}"
                if self.grpc_port
                else ""
            ),
        )
        return self

    def stop(self, grace_s=None):
        """Stops accepting, lets in-flight requests finish (up to `grace_s`,
        default `config.shutdown_grace_s`), then closes and stops polling."""
        if grace_s is None:
            grace_s = self.config.shutdown_grace_s
        if self._grpc is not None:
            grpc_stopped = self._grpc.stop(grace_s)
        if self._rest is not None:
            self._rest.stop(grace_s)
            self._rest = None
        if self._grpc is not None:
            grpc_stopped.wait()
            self._grpc = None
        if self.repository is not None:
            self.repository.stop()
            self.repository = None
        self._stopped.set()

    def wait(self):
        """Blocks until `stop()`."""
        self._stopped.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def serve(config):
    """Runs the server until SIGINT / SIGTERM (for `shrewd serve`).

    Returns:
        0 (the exit code).
    """
    _raise_open_file_limit(config.max_connections + 256)
    server = Server(config).start()

    def stop(signum, frame):
        logging.info("Signal %d: stopping", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, stop)
    server.wait()
    return 0


def _raise_open_file_limit(wanted):
    """Raises the soft RLIMIT_NOFILE towards `wanted` (within the hard
    limit), so max_connections sockets can be open at once."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        logging.info("Open file limit raised from %d to %d", soft, wanted)


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
    )


def main(argv=None):
    """`python -m serving ...`; returns the exit code."""
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="python -m serving", description=__doc__.split("\n")[0]
        )
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return serve(config)

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
import logging
import signal
import threading

from serving.config import ServerConfig  # noqa: F401 (re-export)
from serving.config import add_arguments  # noqa: F401 (re-export)
from serving.config import config_from_args  # noqa: F401 (re-export)
from shrewd_tf import contract

# TensorFlow, faiss and ScaNN load in `Server.start`, so a CLI can import
# this module (add_arguments, ServerConfig: `serving.config`) cheaply.


def _load_indexes(config):
    """{mode: index} from the configured directories (modes and the index
    kind serving each: `shrewd_tf.contract.INDEX_KIND_TABLE`)."""
    from shrewd_tf.retrieval.registry import load_index

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
        _warn_unmeasured(mode, directory, index)
        indexes[mode] = index
    return indexes


def _warn_unmeasured(mode, directory, index):
    """Warns when a sub-linear binary index has no recall >= its target on
    record (served all the same; the answers say "exact": false)."""
    if mode != contract.BINARY_MODE or index.hamming_exact:
        return
    report = index.recall_report
    recall = index.measured_recall
    if recall is None or recall < report.target:
        logging.warning(
            "The %s index %s (%s) is approximate and its recorded recall "
            "is %s: rebuild it with `shrewd index build --binary-method "
            "auto` (measures recall, falls back to flat) for answers of "
            "known quality",
            mode, directory, index.method,
            "missing" if recall is None else f"{recall:.4f} < "
            f"{report.target}",
        )


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
        scheduler: `serving.batching.BatchScheduler` when batching is on.
    """

    def __init__(self, config):
        self.config = config
        self.repository = None
        self.search = None
        self.scheduler = None
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
        class_similarity = None  # A bad matrix fails before models load.
        if config.class_distances is not None:
            from serving.semantic import ClassSimilarity

            class_similarity = ClassSimilarity.load(config.class_distances)
        if config.batching is not None and config.export_root is not None:
            from serving.batching import BatchScheduler

            self.scheduler = BatchScheduler(config.batching).start()
        self.metrics = Metrics(scheduler=self.scheduler)
        if config.export_root is not None:
            self.repository = ModelRepository(
                config.export_root,
                model_names=config.model_names,
                poll_interval_s=config.poll_interval_s,
                warmup=config.warmup,
                scheduler=self.scheduler,
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
                class_similarity=class_similarity,
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
                max_in_flight=config.max_in_flight,
                idle_timeout_s=config.idle_timeout_s,
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
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
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

"""Quiet by default: what the `shrewd` commands print, and what `-v` adds.

By default a command prints its own banners, Keras' progress lines and its
results, and warnings and errors of shrewd-tf. The internals of the
libraries underneath stay out of the way:

* TensorFlow's C++ log (`cpu_feature_guard`, oneDNN, "failed call to
  cuInit" on a machine without a GPU, `local_rendezvous`) —
  `TF_CPP_MIN_LOG_LEVEL=3` before TensorFlow loads; gRPC's C core likewise
  (`GRPC_VERBOSITY`);
* Python log records of third-party libraries (Beam's workers, state cache
  and file sinks, TensorFlow, absl, faiss, matplotlib, tfds) below ERROR;
* their Python warnings (deprecations, retracing notes);
* the native stderr of C++ libraries that log by themselves (ScaNN's
  absl log while it trains its partitioner), inside
  `native_stderr_silenced()`.

`-v` (`configure(verbose=True)`) shows all of it at INFO. Errors always
show; the CLI turns an expected error into one line with its fix
(`shrewd_tf.cli.main`).

Environment variables that are already set are left alone, so a user's
`TF_CPP_MIN_LOG_LEVEL=0` still wins.
"""

import contextlib
import logging
import os
import sys
import warnings

QUIET_ENV = "SHREWD_QUIET"  # "1" while quiet: read by native_stderr_silenced
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Python packages whose records below ERROR are internals.
THIRD_PARTY = (
    "absl", "apache_beam", "faiss", "grpc", "h5py", "jax", "keras",
    "matplotlib", "PIL", "scann", "tensorflow", "tensorflow_datasets",
    "tensorflow_hub", "urllib3",
)
# Our packages (folders beside this one): their records pass at the
# configured level, also when they use the root logger.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_DIRS = tuple(os.path.join(_ROOT, name) + os.sep
                 for name in ("shrewd_tf", "pipeline", "serving",
                              "benchmarks"))


def _is_third_party(record):
    top = record.name.split(".", 1)[0]
    if top in THIRD_PARTY:
        return True
    if record.name != "root":
        return False
    # The root logger: Beam and others call logging.warning() directly.
    return not os.path.abspath(record.pathname).startswith(OWN_DIRS)


class ThirdPartyFilter(logging.Filter):
    """Drops third-party log records below ERROR."""

    def filter(self, record):
        return record.levelno >= logging.ERROR or not _is_third_party(record)


def configure(verbose=False, stream=None):
    """Sets up logging for a command; call before TensorFlow is imported.

    Args:
        verbose: True shows everything at INFO (`shrewd -v`).
        stream: where log records go (default: stderr).
    """
    if verbose:
        os.environ.pop(QUIET_ENV, None)
    else:
        os.environ[QUIET_ENV] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("KMP_WARNINGS", "0")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if not verbose:
        handler.addFilter(ThirdPartyFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    for package in THIRD_PARTY:
        warnings.filterwarnings("ignore", module=rf"{package}(\.|$)")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; not needed for --help
        pass


def quiet():
    """Whether the process runs quiet (`configure(verbose=False)`)."""
    return os.environ.get(QUIET_ENV) == "1"


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null while quiet (a no-op otherwise).

    For C++ libraries that write their own log to stderr (ScaNN). Python
    exceptions still propagate; only the native chatter inside the block is
    dropped.
    """
    if not quiet():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

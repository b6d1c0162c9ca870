"""Quiet by default (`shrewd_tf.verbosity`), `-v` for the internals."""

import io
import logging
import os
import subprocess
import sys

import pytest

from shrewd_tf import verbosity
from tests.paths import REPO_ROOT


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = os.environ.get(verbosity.QUIET_ENV)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    if quiet is None:
        os.environ.pop(verbosity.QUIET_ENV, None)
    else:
        os.environ[verbosity.QUIET_ENV] = quiet


def emit_all():
    logging.getLogger("apache_beam.runners.worker.statecache").warning(
        "beam chatter")
    logging.getLogger("tensorflow").error("tensorflow failure")
    logging.getLogger("shrewd_tf.training").warning("our warning")
    logging.getLogger("pipeline.stages").info("our info")
    logging.warning("root record from a test module")


def test_quiet_keeps_our_warnings_and_every_error(restore_logging):
    stream = io.StringIO()
    verbosity.configure(verbose=False, stream=stream)
    emit_all()
    text = stream.getvalue()
    assert "beam chatter" not in text
    assert "tensorflow failure" in text  # errors always show
    assert "our warning" in text and "our info" not in text
    # Root records are kept or dropped by the file that logged them; this
    # test module is not one of our packages' files.
    assert "root record" not in text
    assert verbosity.quiet()


def test_verbose_shows_everything(restore_logging):
    stream = io.StringIO()
    verbosity.configure(verbose=True, stream=stream)
    emit_all()
    text = stream.getvalue()
    for message in ("beam chatter", "tensorflow failure", "our warning",
                    "our info", "root record"):
        assert message in text, message
    assert not verbosity.quiet()


def run_python(code, quiet):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop(verbosity.QUIET_ENV, None)
    if quiet:
        env[verbosity.QUIET_ENV] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)


NATIVE = (
    "import os\n"
    "from shrewd_tf import verbosity\n"
    "with verbosity.native_stderr_silenced():\n"
    "    os.write(2, b'native chatter\\n')\n"
    "os.write(2, b'after the block\\n')\n"
)


def test_native_stderr_is_silenced_only_while_quiet():
    quiet = run_python(NATIVE, quiet=True)
    assert quiet.returncode == 0
    assert "native chatter" not in quiet.stderr
    assert "after the block" in quiet.stderr
    loud = run_python(NATIVE, quiet=False)
    assert "native chatter" in loud.stderr


def test_expected_errors_are_one_line_without_a_traceback(tmp_path):
    command = [sys.executable, "-m", "shrewd_tf.cli", "train", "--config",
               str(tmp_path / "missing.yaml")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("shrewd train: error:")
    assert "missing.yaml" in lines[0]
    verbose = subprocess.run(command[:3] + ["-v"] + command[3:], env=env,
                             capture_output=True, text=True, timeout=120)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr

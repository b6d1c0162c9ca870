"""`python -m serving`: runs `serving.server.main`."""

import os
import sys

# TF logs every rejected request's op error at INFO; keep warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from serving.server import main  # noqa: E402 (after the TF log level)

if __name__ == "__main__":
    sys.exit(main())

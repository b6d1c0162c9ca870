"""Paths the tests read: `../shared/reference` beside the checkout."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"

"""Where the tests find the real MATH500/AIME24 files: ``S1RAY_DATA_DIR`` (CI sets it to
``../shared/data``), else ``../shared/data`` beside the checkout. s1ray itself ships neither.

With ``S1RAY_DATA_DIR`` set, a missing file fails the test: CI must not pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("S1RAY_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def eval_file(name: str) -> Path:
    """``<data dir>/<name>.jsonl``; skips the test where no data dir is configured or beside."""
    path = DATA_DIR / f"{name}.jsonl"
    if path.is_file():
        return path
    if os.environ.get("S1RAY_DATA_DIR"):
        pytest.fail(f"S1RAY_DATA_DIR={DATA_DIR} has no {path.name}")
    pytest.skip(f"no {path.name}: set S1RAY_DATA_DIR (CI keeps the files in ../shared/data)")

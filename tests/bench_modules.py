"""Load a script from bench/ as a module (bench/ is not a package), for its tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str, module_name: str | None = None):
    spec = importlib.util.spec_from_file_location(module_name or name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

"""The package layering, read from the source with ``ast`` (function-local imports included):
the foundation imports no stage, and no two s1ray packages import each other, directly or
through others."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "s1ray"
# Modules and packages every stage may import; they import no stage.
FOUNDATION = {"answers", "config", "console", "data", "dataio", "formats", "storage"}
STAGES = {"curation", "engine", "eval", "pipeline", "serve", "traces", "train"}


def _unit(module: str) -> str | None:
    """``s1ray.engine.planner`` -> ``engine``; ``s1ray.formats`` -> ``formats``; else None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "s1ray" and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(code: str, package: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``code`` (a module of ``package``), at any
    depth; relative imports resolved against ``package``."""
    out = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from s1ray import formats` imports s1ray.formats.
            out += [(f"{base}.{a.name}" if base == "s1ray" else base, node.lineno) for a in node.names]
    return out


def _package(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _edges() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the import sites (``file:line``), for imports across units."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        src = _unit(_module_name(path))
        if src is None:
            continue
        for module, line in _imports(path.read_text(encoding="utf-8"), _package(path)):
            dst = _unit(module)
            if dst is not None and dst != src:
                edges[src][dst].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return edges


def _cycle(edges: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the unit graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(edges.get(u, {})):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        state[u] = 2
        path.pop()
        return None

    for u in sorted(edges):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_the_units_are_found():
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert FOUNDATION <= units and STAGES <= units, sorted(units)


def test_the_foundation_imports_no_stage():
    edges = _edges()
    bad = {f"{u} -> {v}": sites for u in sorted(FOUNDATION) for v, sites in edges.get(u, {}).items() if v in STAGES}
    assert not bad, f"foundation modules import stages: {bad}"


def test_the_engine_imports_no_evaluation():
    assert "eval" not in _edges().get("engine", {}), _edges()["engine"]["eval"]


def test_no_package_cycles():
    edges = _edges()
    cycle = _cycle(edges)
    if cycle:
        sites = {f"{a} -> {b}": edges[a][b][:3] for a, b in zip(cycle, cycle[1:])}
        raise AssertionError(f"import cycle {' -> '.join(cycle)}: {sites}")


def test_the_checker_sees_local_relative_and_package_imports():
    """The checks above would pass vacuously if imports inside functions, relative imports or
    `from s1ray import x` were missed."""
    code = (
        "def f():\n    from s1ray.eval import data\n"
        "from . import budget\nfrom .. import formats\nfrom s1ray import answers\nimport s1ray.train.data\n"
    )
    found = {m for m, _ in _imports(code, "s1ray.engine")}
    assert found == {"s1ray.eval", "s1ray.engine", "s1ray.formats", "s1ray.answers", "s1ray.train.data"}
    assert _cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": []}, "b": {}}) is None

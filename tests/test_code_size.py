"""The library's size rules, checked on the source: no module under ``s1ray/`` over 400 lines and
no function (or method) over 80. A module or function that must break a rule goes in the
allow-list below with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s1ray"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# "path relative to s1ray/" or "path::function" -> why it may be longer. Keep it short.
ALLOWED: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_the_package_is_found():
    assert len(_modules()) > 20


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path):
    rel = str(path.relative_to(PACKAGE))
    src = path.read_text()
    problems = []
    lines = len(src.splitlines())
    if lines > MAX_MODULE_LINES and rel not in ALLOWED:
        problems.append(f"{rel}: {lines} lines (max {MAX_MODULE_LINES})")
    for fn in _functions(ast.parse(src, filename=rel)):
        n = fn.end_lineno - fn.lineno + 1  # decorators not counted; the signature and body are
        if n > MAX_FUNCTION_LINES and f"{rel}::{fn.name}" not in ALLOWED:
            problems.append(f"{rel}:{fn.lineno} {fn.name}: {n} lines (max {MAX_FUNCTION_LINES})")
    assert not problems, "split these along a natural seam:\n" + "\n".join(problems)


def test_allow_list_entries_still_exist():
    """A stale entry would let a new long module or function through under an old name."""
    for key in ALLOWED:
        rel, _, fn = key.partition("::")
        path = PACKAGE / rel
        assert path.is_file(), key
        if fn:
            assert fn in {f.name for f in _functions(ast.parse(path.read_text()))}, key

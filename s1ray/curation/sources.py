"""Input adapters, pure: raw records -> the curation's rows; input fingerprints.

* Questions: any record -> the project's question schema (:func:`s1ray.data.schema.question_from_record`:
  ``fields`` maps schema fields to columns; a record without an id gets the SHA-1 of its
  question, so ids are stable across runs), plus ``ingest_source`` (the adapter's name) and
  ``metadata`` as a JSON string (Arrow needs one type per column; s1K stores it as a string too).
* Traces: the trace job's rows (``id, sample_index, thinking, answer, error, thinking_tokens,
  finish_reason, extracted_answer, teacher_model``; ``answer`` is the attempt) or any file
  mapped with ``fields`` (an s1K's ``thinking_trajectories`` list is joined).
* Solver samples: ``id, sample_index, extracted_answer`` (else extracted from ``answer``), ``error``.
* The miniature: :func:`s1ray.miniature.problems.make_pool` / ``teacher_trace`` / ``weak_solver``.

The Ray side (reading files and the trace job's shards) lives in :mod:`s1ray.curation.stages.inputs`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from s1ray.answers import extract_answer
from s1ray.data.schema import SchemaError, question_from_record

QUESTION_COLUMNS = ("id", "source", "question", "solution", "answer", "metadata", "ingest_source")
TRACE_COLUMNS = ("id", "sample_index", "thinking", "attempt", "error", "thinking_tokens", "finish_reason",
                 "extracted_answer", "teacher_model", "input_index")
SOLVER_COLUMNS = ("solver", "id", "sample_index", "extracted_answer", "error")


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def question_rows(records: Iterable[Mapping[str, Any]], src: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Schema rows of one source's records; a record that cannot be a question comes back with
    ``reason = "schema_error"`` (kept in the ingest rejects) instead of raising."""
    out = []
    name = src["name"]
    for n, rec in enumerate(records):
        rec = {k: v for k, v in rec.items() if not k.startswith("__")}  # Ray/HF internals
        try:
            q = question_from_record(rec, src.get("fields") or {}, src.get("source") or name,
                                     src.get("keep_extra", True), where=f"{name} record")
        except SchemaError as exc:
            raw_id = rec.get((src.get("fields") or {}).get("id", "id"))
            out.append({"id": f"{src.get('id_prefix') or ''}{raw_id if raw_id is not None else f'{name}#{n}'}",
                        "source": src.get("source") or name, "question": "", "solution": None, "answer": None,
                        "metadata": "{}", "ingest_source": name, "reason": "schema_error", "detail": str(exc)[:300]})
            continue
        answer = q.answer
        if answer is None and src.get("answer_from_solution") and q.solution:
            answer = extract_answer(q.solution)
        out.append({"id": f"{src.get('id_prefix') or ''}{q.id}", "source": q.source, "question": q.question,
                    "solution": q.solution, "answer": answer, "metadata": _json(q.metadata),
                    "ingest_source": name, "reason": None, "detail": None})
    return out


_OPS = {"le": lambda a, b: a <= b, "lt": lambda a, b: a < b, "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
        "ne": lambda a, b: a != b, "eq": lambda a, b: a == b, "in": lambda a, b: a in b}


def record_matches(rec: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    """``{column: value}`` (equality) or ``{column: {le: 2021, ...}}`` (all must hold)."""
    for col, cond in flt.items():
        v = rec.get(col)
        if isinstance(cond, Mapping):
            for op, arg in cond.items():
                try:
                    if not _OPS[op](v, arg):
                        return False
                except (TypeError, KeyError):
                    return False
        elif v != cond:
            return False
    return True


# ------------------------------------------------------------------------------- traces
def _first(rec: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):  # s1K 1.0: thinking_trajectories is a list of one string
        return "\n".join(str(x) for x in v)
    return str(v)


def _int(v: Any) -> int | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def trace_row(rec: Mapping[str, Any], fields: Mapping[str, str] | None = None, input_index: int = 0,
              id_prefix: str = "") -> dict[str, Any]:
    """One teacher trace in the curation's columns (see the module docstring). A row without an
    id gets its question's id (:func:`s1ray.data.schema.question_id`), as ingest gives it."""
    f = dict(fields or {})

    def get(name: str, *fallbacks: str) -> Any:
        return rec.get(f[name]) if name in f else _first(rec, name, *fallbacks)

    rid = get("id")
    if rid is None and get("question") is not None:
        from s1ray.data.schema import question_id

        rid = question_id(str(get("question")))
    return {
        "id": f"{id_prefix}{rid}",
        "sample_index": _int(get("sample_index")) or 0,
        "thinking": _text(get("thinking", "thinking_trajectories")),
        "attempt": _text(get("attempt", "answer")),
        "error": _text(get("error")),
        "thinking_tokens": _int(get("thinking_tokens")),
        "finish_reason": _text(get("finish_reason")),
        "extracted_answer": _text(get("extracted_answer")),
        "teacher_model": _text(get("teacher_model")),
        "input_index": input_index,
    }


def solver_row(rec: Mapping[str, Any], solver: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    f = dict(fields or {})

    def get(name: str) -> Any:
        return rec.get(f.get(name, name))

    extracted = _text(get("extracted_answer"))
    if extracted is None and get("answer") is not None and not get("error"):
        text = _text(get("answer")) or ""
        extracted = extract_answer(text) or (text.strip() or None)
    return {"solver": solver, "id": str(get("id")), "sample_index": _int(get("sample_index")) or 0,
            "extracted_answer": extracted, "error": _text(get("error"))}


# ------------------------------------------------------------------------------- miniature
@functools.lru_cache(maxsize=4)
def _pool(n: int, seed: int, max_steps: int | None):
    from s1ray.miniature.problems import make_pool

    return tuple(make_pool(n, seed, max_steps) if max_steps else make_pool(n, seed))


def miniature_records(n: int, seed: int = 0, max_steps: int | None = None) -> list[dict[str, Any]]:
    return [p.to_row() for p in _pool(n, seed, max_steps)]


def miniature_traces(n: int, seed: int = 0, max_steps: int | None = None, fail_every: int | None = None,
                     input_index: int = 0, self_check: float = 0.0) -> list[dict[str, Any]]:
    from s1ray.miniature.problems import teacher_trace

    out = []
    for i, p in enumerate(_pool(n, seed, max_steps)):
        t = teacher_trace(p, self_check)
        if fail_every and i % fail_every == fail_every - 1:
            t = {**t, "thinking": "", "attempt": "", "error": "miniature: injected failure"}
        out.append(trace_row({**t, "sample_index": 0, "teacher_model": "miniature_teacher",
                              "finish_reason": None if t.get("error") else "stop"}, input_index=input_index))
    return out


def miniature_solver(n: int, seed: int = 0, max_steps: int | None = None, name: str = "weak_solver") -> list[dict[str, Any]]:
    from s1ray.miniature.problems import weak_solver

    return [{"solver": name, "id": p.id, "sample_index": 0, "extracted_answer": weak_solver(p), "error": None}
            for p in _pool(n, seed, max_steps)]


# ------------------------------------------------------------------------------- fingerprints
HASH_LIMIT = 256 * 1024**2  # files up to this size are fingerprinted by content, larger by size+mtime


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        return {"dir": str(p), "files": [file_fingerprint(f) for f in sorted(p.rglob("*"))
                                          if f.is_file() and not f.name.startswith(".")]}
    if not p.exists():
        return {"path": str(p), "missing": True}
    st = p.stat()
    if st.st_size <= HASH_LIMIT:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return {"path": p.name, "size": st.st_size, "sha256": h.hexdigest()}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def traces_dir_files(path: str | Path) -> list[Path]:
    """The shards a trace job's ``manifest.json`` lists as complete (the only ones that count)."""
    p = Path(path)
    m = p / "manifest.json"
    if not m.is_file():
        raise FileNotFoundError(f"{p}: no manifest.json (not a trace job output_dir?)")
    data = json.loads(m.read_text())
    return [p / s["file"] for s in data.get("shards", [])]


def traces_dir_fingerprint(path: str | Path) -> dict[str, Any]:
    """The manifest lists every completed shard with its row count; shards are immutable once
    listed, so the manifest's content identifies the data."""
    m = Path(path) / "manifest.json"
    if not m.is_file():
        return {"path": str(path), "missing": True}
    data = json.loads(m.read_text())
    return {"path": str(path), "shards": [(s["file"], s.get("rows")) for s in data.get("shards", [])],
            "generation": data.get("generation")}


def input_fingerprint(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies an input's data: file contents, a manifest, or a hub name + revision
    (unpinned hub datasets cannot be fingerprinted: pin ``revision`` to be exact)."""
    kind = spec.get("kind")
    if kind in ("jsonl", "parquet"):
        paths = expand_paths(spec["path"])
        return {"kind": kind, "files": [file_fingerprint(p) for p in paths] or [{"path": spec["path"], "missing": True}]}
    if kind == "traces_dir":
        return {"kind": kind, **traces_dir_fingerprint(spec["path"])}
    if kind == "hf":
        p = Path(spec["path"])
        if p.is_dir():
            return {"kind": kind, "disk": file_fingerprint(p)}
        return {"kind": kind, "hub": spec["path"], "config": spec.get("config"), "split": spec.get("split"),
                "revision": spec.get("revision"), "data_files": spec.get("data_files")}
    return {"kind": kind}  # miniature*: the spec itself (n, seed) determines the data


def expand_paths(path: str) -> list[Path]:
    """A file, a directory (its *.jsonl/*.parquet files) or a glob."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".jsonl", ".json", ".parquet") and not f.name.startswith("."))
    if any(c in path for c in "*?["):
        import glob

        return sorted(Path(f) for f in glob.glob(path))
    return [p] if p.exists() else []

"""Reading a question dataset into the question schema (:mod:`s1ray.data.schema`).

``input.path`` may be a ``.jsonl``/``.json``/``.parquet`` file, a directory written by
``datasets.Dataset.save_to_disk``, or a hub dataset name (``datasets.load_dataset``; needs the
network). The driver reads the questions: a question list is small next to its traces, and the
driver needs every id anyway to know what a rerun still has to generate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from s1ray.data.schema import Question, SchemaError, check_unique_ids, question_from_record
from s1ray.traces.config import InputConfig


class InputError(ValueError):
    """The input dataset cannot be read; the message names the file and the row."""


_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")


def _detect(cfg: InputConfig) -> str:
    p = Path(cfg.path)
    suffix = p.suffix.lower()
    if not p.exists() and (suffix in _FILE_SUFFIXES or cfg.format in ("jsonl", "json", "parquet")):
        raise InputError(f"input.path {cfg.path!r} does not exist")
    if cfg.format != "auto":
        return cfg.format
    if p.is_dir():
        return "hf"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if p.exists():
        raise InputError(f"input.path {cfg.path!r}: unknown file type {suffix!r}; set input.format")
    if "/" in cfg.path and not cfg.path.startswith((".", "/")):
        return "hf"  # owner/name on the hub
    raise InputError(f"input.path {cfg.path!r} does not exist")


def _records(cfg: InputConfig, fmt: str) -> Iterator[dict[str, Any]]:
    path = Path(cfg.path)
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{cfg.path}:{n}: not valid JSON ({exc})") from None
                if not isinstance(rec, dict):
                    raise InputError(f"{cfg.path}:{n}: expected a JSON object per line")
                yield rec
    elif fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} or {"questions": [...]}
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else None
        if not isinstance(data, list):
            raise InputError(f"{cfg.path}: expected a JSON list of objects")
        yield from data
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif fmt == "hf":
        import datasets

        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise InputError(f"{cfg.path}: no split {cfg.split!r}; has {sorted(ds)}")
                ds = ds[cfg.split]
        else:
            ds = datasets.load_dataset(cfg.path, cfg.subset, split=cfg.split)
        yield from ds
    else:
        raise InputError(f"input.format {fmt!r} is not supported")


def read_questions(cfg: InputConfig) -> list[Question]:
    """All questions of ``cfg`` (first ``limit``), mapped and checked (unique, non-empty ids)."""
    fmt = _detect(cfg)
    source = cfg.source or (Path(cfg.path).stem if fmt != "hf" else cfg.path)
    out: list[Question] = []
    try:
        for n, rec in enumerate(_records(cfg, fmt)):
            if cfg.limit is not None and len(out) >= cfg.limit:
                break
            out.append(question_from_record(rec, cfg.fields, source, cfg.keep_extra, where=f"{cfg.path} row {n}"))
        check_unique_ids(out)
    except SchemaError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"input.path {cfg.path!r}: {exc}") from None
    if not out:
        raise InputError(f"input.path {cfg.path!r}: no questions")
    return out

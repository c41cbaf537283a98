"""The final s1K-style dataset: rows and files (no Ray).

Columns (s1K's names where s1K has one, so s1K readers -- and ``s1ray.train`` with its default
``question/thinking/attempt`` fields -- read it as is):

    id, question, solution (reference), answer (reference final answer),
    thinking (str) and thinking_trajectories ([str], as s1K 1.0 stores it), attempt,
    domain, source, thinking_tokens, teacher_model, selected_by (trusted | sampled),
    metadata (JSON string: the row's own metadata plus a ``curation`` record)

Files, in the export stage's directory (``<output_dir>/dataset``): ``hf/`` (``save_to_disk``),
``s1k.parquet``, optionally ``s1k.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

S1K_COLUMNS = ("id", "question", "solution", "answer", "thinking", "thinking_trajectories", "attempt", "domain",
               "source", "thinking_tokens", "teacher_model", "selected_by", "metadata")


def s1k_rows(rows: Sequence[Mapping[str, Any]], texts: Mapping[tuple, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        t = texts[(r["id"], r["trace_input"], r["trace_sample"])]
        try:
            meta = json.loads(r.get("metadata") or "{}")
        except json.JSONDecodeError:
            meta = {"metadata": r.get("metadata")}
        if not isinstance(meta, dict):
            meta = {"metadata": meta}
        meta["curation"] = {
            "ingest_source": r.get("ingest_source"), "trusted": bool(r.get("trusted")),
            "teacher_correct": r.get("teacher_correct"), "solver_samples": r.get("solver_samples"),
            "solver_correct": r.get("solver_correct"), "select_order": r.get("select_order"),
            "trace_sample": r.get("trace_sample"),
        }
        thinking = t.get("thinking") or ""
        out.append({
            "id": r["id"], "question": r["question"], "solution": r.get("solution"), "answer": r.get("answer"),
            "thinking": thinking, "thinking_trajectories": [thinking], "attempt": t.get("attempt") or "",
            "domain": r.get("domain"), "source": r.get("source"), "thinking_tokens": r.get("thinking_tokens"),
            "teacher_model": r.get("teacher_model"), "selected_by": r.get("selected_by"),
            "metadata": json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str),
        })
    return out


def _arrow(rows: list[dict[str, Any]]):
    import pyarrow as pa

    s, i = pa.string(), pa.int64()
    schema = pa.schema([("id", s), ("question", s), ("solution", s), ("answer", s), ("thinking", s),
                        ("thinking_trajectories", pa.list_(s)), ("attempt", s), ("domain", s), ("source", s),
                        ("thinking_tokens", i), ("teacher_model", s), ("selected_by", s), ("metadata", s)])
    return pa.Table.from_pylist(rows, schema=schema)


def write_dataset(rows: list[dict[str, Any]], out_dir: Path, cfg: Mapping[str, Any]) -> list[str]:
    import pyarrow.parquet as pq

    table = _arrow(rows)
    files = []
    if cfg.get("parquet", True):
        pq.write_table(table, out_dir / "s1k.parquet")
        files.append("s1k.parquet")
    if cfg.get("jsonl"):
        with (out_dir / "s1k.jsonl").open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        files.append("s1k.jsonl")
    if cfg.get("hf", True):
        import datasets

        datasets.Dataset(table).save_to_disk(str(out_dir / "hf"))
        files.append("hf")
    return files


def load_s1k(dataset_dir: str | Path):
    """The exported dataset as a ``datasets.Dataset`` (from ``hf/``, else the parquet file)."""
    import datasets

    d = Path(dataset_dir)
    if (d / "hf").is_dir():
        return datasets.load_from_disk(str(d / "hf"))
    return datasets.Dataset.from_parquet(str(d / "s1k.parquet"))

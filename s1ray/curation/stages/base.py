"""What every curation stage shares: the row schemas, the broadcast cache of the tasks, the
``kept``/``rejects`` writer, and :class:`StageContext` (the config, the store and the Ray Data
helpers a stage's ``run`` works through)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from s1ray.curation.config import STAGES, CurationConfig
from s1ray.curation.store import StageStore

_S, _I, _B = pa.string(), pa.int64(), pa.bool_()
Q_FIELDS = [("id", _S), ("source", _S), ("question", _S), ("solution", _S), ("answer", _S), ("metadata", _S),
            ("ingest_source", _S)]
STAGE_FIELDS = {
    "ingest": [],
    "dedupe": [],
    "quality": [("trusted", _B), ("trace_input", _I), ("trace_sample", _I), ("thinking_tokens", _I),
                ("teacher_answer", _S), ("teacher_correct", _B), ("teacher_model", _S)],
    "difficulty": [("solver_samples", _I), ("solver_correct", _I)],
    "domains": [("domain", _S)],
    "select": [("select_order", _I), ("selected_by", _S)],
}
REASON_FIELDS = [("reason", _S), ("detail", _S)]
TRACE_SCHEMA = pa.schema([("id", _S), ("sample_index", _I), ("thinking", _S), ("attempt", _S), ("error", _S),
                          ("thinking_tokens", _I), ("finish_reason", _S), ("extracted_answer", _S),
                          ("teacher_model", _S), ("input_index", _I)])
SOLVER_SCHEMA = pa.schema([("solver", _S), ("id", _S), ("sample_index", _I), ("extracted_answer", _S), ("error", _S)])


def stage_schema(stage: str, with_reason: bool = False) -> pa.Schema:
    fields = list(Q_FIELDS)
    for s in STAGES:
        fields += STAGE_FIELDS.get(s, [])
        if s == stage:
            break
    return pa.schema(fields + (REASON_FIELDS if with_reason else []))


class CurationError(RuntimeError):
    """The pipeline failed; the message names the stage."""


# ------------------------------------------------------------------------------- task-side helpers
_BCAST: dict[str, Any] = {}


def _bcast(ref) -> Any:
    """A driver-side object (``ray.put``) inside a task; cached per worker process (last 2)."""
    import ray

    key = ref.hex()
    if key not in _BCAST:
        if len(_BCAST) >= 2:
            _BCAST.pop(next(iter(_BCAST)))
        _BCAST[key] = ray.get(ref)
    return _BCAST[key]


def _to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def _mark_batch(batch: pa.Table, decisions_ref, schema: pa.Schema, extra_ref=None,
                extra_fields: tuple[str, ...] = ()) -> pa.Table:
    """Annotate rows with the driver's decisions: ``{id: (reason, detail)}`` and optional
    per-id extra columns ``{id: {col: value}}``."""
    decisions = _bcast(decisions_ref)
    extra = _bcast(extra_ref) if extra_ref is not None else {}
    rows = batch.to_pylist()
    for r in rows:
        d = decisions.get(r["id"])
        r["reason"], r["detail"] = (d[0], d[1]) if d else (None, None)
        for k, v in (extra.get(r["id"]) or {}).items():
            r[k] = v
    return _to_table(rows, schema)


# ------------------------------------------------------------------------------- the driver side
class _Writer:
    """Streams annotated batches into ``kept/`` and ``rejects/`` parquet files (new file every
    ``rows_per_file`` rows, so the next stage reads them with that many parallel tasks)."""

    def __init__(self, tmp: Path, kept_schema: pa.Schema, reject_schema: pa.Schema, rows_per_file: int):
        self.dirs = {"kept": tmp / "kept", "rejects": tmp / "rejects"}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.schemas = {"kept": kept_schema, "rejects": reject_schema}
        self.rows_per_file = rows_per_file
        self.writers: dict[str, pq.ParquetWriter | None] = {"kept": None, "rejects": None}
        self.in_file = {"kept": 0, "rejects": 0}
        self.files = {"kept": 0, "rejects": 0}
        self.reasons: Counter = Counter()
        self.rows_in = 0
        self.rows_out = 0

    def _write(self, which: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        w = self.writers[which]
        if w is None or self.in_file[which] >= self.rows_per_file:
            if w is not None:
                w.close()
            path = self.dirs[which] / f"part-{self.files[which]:05d}.parquet"
            self.files[which] += 1
            w = self.writers[which] = pq.ParquetWriter(path, self.schemas[which])
            self.in_file[which] = 0
        w.write_table(table.select(self.schemas[which].names).cast(self.schemas[which]))
        self.in_file[which] += table.num_rows

    def add(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        self.rows_in += table.num_rows
        reason = table.column("reason")
        kept_mask = pc.is_null(reason)
        kept = table.filter(kept_mask)
        rej = table.filter(pc.invert(kept_mask))
        self.rows_out += kept.num_rows
        if rej.num_rows:
            self.reasons.update(rej.column("reason").to_pylist())
        self._write("kept", kept)
        self._write("rejects", rej)

    def close(self) -> dict[str, Any]:
        for which, w in self.writers.items():
            if w is not None:
                w.close()
            else:  # an empty side still gets a (0-row) file so readers see its schema
                pq.write_table(self.schemas[which].empty_table(), self.dirs[which] / "part-00000.parquet")
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "rejected": dict(sorted(self.reasons.items()))}


class StageContext:
    """The config, the stage store and the eval sets, plus the Ray Data helpers the stages use."""

    def __init__(self, cfg: CurationConfig):
        self.cfg = cfg
        self.store = StageStore(cfg.output_dir)
        self.eval_sets: Any = None  # resolved by the pipeline before the first stage

    def map(self, ds, fn, **kw):
        return ds.map_batches(fn, batch_format="pyarrow", batch_size=self.cfg.batch_size,
                              num_cpus=self.cfg.map_num_cpus, **kw)

    def read_kept(self, stage: str):
        import ray.data

        return ray.data.read_parquet(str(self.store.kept(stage)))

    def blocks(self, n: int) -> int:
        return max(1, min(64, math.ceil(n / self.cfg.batch_size)))

    def from_rows(self, rows: list[dict], schema: pa.Schema):
        import ray.data

        table = _to_table(rows, schema)
        k = self.blocks(len(rows))
        step = max(1, math.ceil(len(rows) / k))
        return ray.data.from_arrow([table.slice(i, step) for i in range(0, max(len(rows), 1), step)])

    @property
    def rows_per_file(self) -> int:
        return self.cfg.batch_size * 4

    def writer(self, tmp: Path, stage: str) -> _Writer:
        """The ``kept``/``rejects`` writer of ``stage``'s output under ``tmp``."""
        return _Writer(tmp, stage_schema(stage), stage_schema(stage, with_reason=True), self.rows_per_file)

    def mark_and_write(self, upstream: str, stage: str, tmp: Path, decisions, extra: dict | None = None) -> dict:
        """``upstream``'s kept rows, annotated with ``decisions`` (a dict, or an ObjectRef of one
        that a task made) and ``extra`` columns, written as ``stage``'s output."""
        import ray

        schema = stage_schema(stage, with_reason=True)
        ref = decisions if isinstance(decisions, ray.ObjectRef) else ray.put(decisions)
        ds = self.map(self.read_kept(upstream), _mark_batch,
                      fn_kwargs={"decisions_ref": ref, "schema": schema,
                                 "extra_ref": ray.put(extra) if extra is not None else None})
        w = self.writer(tmp, stage)
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            w.add(b)
        return w.close()

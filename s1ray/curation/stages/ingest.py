"""Stage ingest: every source's rows in the question schema; ids unique over the whole pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s1ray.curation.stages.base import StageContext, _to_table, stage_schema
from s1ray.curation.stages.inputs import _question_rows_batch, source_dataset


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    schema = stage_schema("ingest", with_reason=True)
    w = ctx.writer(tmp, "ingest")
    seen: set[str] = set()
    per_source: dict[str, int] = {}
    for src in ctx.cfg.sources:
        ds = ctx.map(source_dataset(ctx, src), _question_rows_batch,
                     fn_kwargs={"src": src.model_dump(), "schema": schema})
        n = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
            rows = batch.to_pylist()
            for r in rows:  # ids are unique over the whole pool; the first (source order) wins
                if r["reason"] is None:
                    if r["id"] in seen:
                        r["reason"], r["detail"] = "duplicate_id", "an earlier row has this id (set id_prefix?)"
                    else:
                        seen.add(r["id"])
            n += len(rows)
            w.add(_to_table(rows, schema))
        per_source[src.name] = n
    return {**w.close(), "per_source": per_source}

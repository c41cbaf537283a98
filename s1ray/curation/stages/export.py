"""Stage export: the selected rows with their trace text (fetched only now, for the selected
rows), written as the s1K-style dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from s1ray.curation.stages.base import TRACE_SCHEMA, CurationError, StageContext, _bcast, _to_table
from s1ray.curation.stages.inputs import trace_dataset


def _pick_traces_batch(batch: pa.Table, keys_ref) -> pa.Table:
    keys = _bcast(keys_ref)
    rows = [t for t in batch.to_pylist() if (t["id"], t["input_index"], t["sample_index"]) in keys]
    return _to_table(rows, TRACE_SCHEMA)


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    import ray

    rows = []
    for b in ctx.read_kept("select").iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        rows.extend(b.to_pylist())
    rows.sort(key=lambda r: r["select_order"])
    keys = {(r["id"], r["trace_input"], r["trace_sample"]) for r in rows}
    keys_ref = ray.put(keys)
    texts: dict[tuple, dict] = {}
    for i, spec in enumerate(ctx.cfg.quality.traces):
        ds = ctx.map(trace_dataset(ctx, spec, i), _pick_traces_batch, fn_kwargs={"keys_ref": keys_ref})
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
            for t in b.to_pylist():
                texts.setdefault((t["id"], t["input_index"], t["sample_index"]), t)
    missing = [k for k in keys if k not in texts]
    if missing:
        raise CurationError(f"export: traces of {len(missing)} selected rows vanished (e.g. {missing[:3]}); "
                            "did the trace inputs change?")
    from s1ray.curation.export import s1k_rows, write_dataset

    out = s1k_rows(rows, texts)
    files = write_dataset(out, tmp, ctx.cfg.export.model_dump())
    return {"rows_in": len(rows), "rows_out": len(out), "rejected": {}, "rows": len(out), "files": files}

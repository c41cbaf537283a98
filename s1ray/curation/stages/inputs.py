"""The stages' inputs as Ray Data datasets: the question sources (ingest), the trace inputs
(quality, export) and the solver samples (difficulty), mapped into the pipeline's row schemas."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from s1ray.curation import sources as S
from s1ray.curation.stages.base import SOLVER_SCHEMA, TRACE_SCHEMA, CurationError, StageContext, _to_table


def _question_rows_batch(batch: pa.Table, src: dict, schema: pa.Schema) -> pa.Table:
    return _to_table(S.question_rows(batch.to_pylist(), src), schema)


def _trace_rows_batch(batch: pa.Table, fields: dict, input_index: int, id_prefix: str = "") -> pa.Table:
    return _to_table([S.trace_row(r, fields, input_index, id_prefix) for r in batch.to_pylist()], TRACE_SCHEMA)


def _solver_rows_batch(batch: pa.Table, solver: str, fields: dict) -> pa.Table:
    return _to_table([S.solver_row(r, solver, fields) for r in batch.to_pylist()], SOLVER_SCHEMA)


def _load_hf(spec, **load_kwargs):
    """An HF dataset from a ``save_to_disk`` directory or the hub (``spec``: path, config, split,
    revision), as one split."""
    from s1ray.dataio import DataError, load_hf

    try:
        return load_hf(spec.path, split=spec.split, config=spec.config, revision=spec.revision, **load_kwargs)
    except DataError as exc:
        raise CurationError(str(exc)) from None


def source_dataset(ctx: StageContext, src) -> Any:
    import ray.data

    d = src.model_dump()
    if src.kind == "miniature":
        recs = S.miniature_records(src.n, src.seed, src.max_steps)
        if src.limit:
            recs = recs[: src.limit]
        for r in recs:
            r["metadata"] = json.dumps(r["metadata"])
        return ray.data.from_items(recs, override_num_blocks=ctx.blocks(len(recs)))
    if src.kind == "hf":
        hf = _load_hf(src, data_files=src.data_files)
        if src.filter:
            flt = d["filter"]
            hf = hf.filter(lambda r: S.record_matches(r, flt))
        if src.limit:
            hf = hf.select(range(min(src.limit, len(hf))))
        return ray.data.from_huggingface(hf)
    paths = [str(p) for p in S.expand_paths(src.path)]
    if not paths:
        raise FileNotFoundError(f"source {src.name}: no files at {src.path!r}")
    ds = ray.data.read_json(paths, lines=True) if src.kind == "jsonl" else ray.data.read_parquet(paths)
    return ds.limit(src.limit) if src.limit else ds


def hf_dataset(ctx: StageContext, spec):
    import ray.data

    return ray.data.from_huggingface(_load_hf(spec))


def trace_dataset(ctx: StageContext, spec, index: int):
    import ray.data

    if spec.kind == "miniature_teacher":
        rows = S.miniature_traces(spec.n, spec.seed, spec.max_steps, spec.fail_every, input_index=index,
                                  self_check=spec.self_check)
        return ctx.from_rows(rows, TRACE_SCHEMA)
    if spec.kind == "hf":
        return ctx.map(hf_dataset(ctx, spec), _trace_rows_batch,
                       fn_kwargs={"fields": spec.fields, "input_index": index, "id_prefix": spec.id_prefix})
    if spec.kind == "traces_dir":
        files = [str(f) for f in S.traces_dir_files(spec.path)]
        fields: dict = {}
    else:
        files = [str(f) for f in S.expand_paths(spec.path)]
        fields = spec.fields
    if not files:
        raise FileNotFoundError(f"traces at {spec.path}: no (completed) files")
    if all(f.endswith(".parquet") for f in files):
        ds = ray.data.read_parquet(files)
    else:
        ds = ray.data.read_json(files, lines=True)
    return ctx.map(ds, _trace_rows_batch, fn_kwargs={"fields": fields, "input_index": index})


def solver_dataset(ctx: StageContext, spec):
    import ray.data

    if spec.kind == "miniature_weak_solver":
        rows = S.miniature_solver(spec.n, spec.seed, spec.max_steps, spec.name)
        return ctx.from_rows(rows, SOLVER_SCHEMA)
    if spec.kind == "traces_dir":
        files, fields = [str(f) for f in S.traces_dir_files(spec.path)], {}
    else:
        files, fields = [str(f) for f in S.expand_paths(spec.path)], spec.fields
    if not files:
        raise FileNotFoundError(f"solver {spec.name}: no (completed) files at {spec.path}")
    ds = ray.data.read_parquet(files) if all(f.endswith(".parquet") for f in files) else ray.data.read_json(files, lines=True)
    return ctx.map(ds, _solver_rows_batch, fn_kwargs={"solver": spec.name, "fields": fields})

"""Stage dedupe: decontamination against the eval sets (an 8-gram index broadcast to the tasks),
exact and MinHash near-duplicates, as a Ray Data computation that never holds the pool in one
process, the driver included. Also writes ``questions.parquet``, the input of the trace and
solver jobs.

The steps are those of :mod:`s1ray.curation.duplicates`, which has the pure logic: features
(map) -> band and exact keys (map) -> buckets (one hash partition on the key) -> candidate pairs
-> the candidates' keys and signatures (a map that keeps the candidate rows) -> decisions, in one
task over the candidates (O(duplicates and band collisions), not O(rows)).

A bucket is handled a whole hash partition at a time, vectorised: ``groupby().map_groups()`` would
make one Python call per group, and almost every key is a group of one. Fetching the candidates'
signatures by a filtering map, rather than two joins, keeps the stage at one shuffle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from s1ray.curation import duplicates as D
from s1ray.curation import filters as F
from s1ray.curation.stages.base import _S, Q_FIELDS, StageContext, _bcast, _to_table

DEDUPE_FEATURES = pa.schema([("id", _S), ("priority", _S), ("exact_key", _S), ("minhash", pa.binary()),
                             ("contaminated", _S), ("contam_detail", _S)])
DROPS = pa.schema([("id", _S), ("reason", _S), ("detail", _S)])
ROWS_PER_PARTITION = 50_000


def _dedupe_features_batch(batch: pa.Table, cfg: dict, eval_ref, source_order: dict, trusted: list) -> pa.Table:
    from s1ray.curation.text import MinHasher, exact_key

    index = _bcast(eval_ref) if eval_ref is not None else None
    hasher = MinHasher(cfg["num_perm"], cfg["seed"]) if cfg["near"] else None
    out = []
    for r in batch.select(["id", "source", "ingest_source", "question"]).to_pylist():
        q = r["question"] or ""
        hit = index.match(q) if index is not None else None
        out.append({"id": r["id"], "priority": D.priority_key(r, source_order, trusted), "exact_key": exact_key(q),
                    "minhash": hasher.of_text(q, cfg["shingle"]).tobytes() if hasher else b"",
                    "contaminated": hit[0] if hit else None, "contam_detail": f"8-gram: {hit[1]!r}" if hit else None})
    return _to_table(out, DEDUPE_FEATURES)


def _contaminated_batch(batch: pa.Table) -> pa.Table:
    hit = batch.filter(pc.is_valid(batch.column("contaminated")))
    sets, detail = (hit.column(c).cast(_S) for c in ("contaminated", "contam_detail"))
    reasons = pc.binary_join_element_wise("contaminated:", sets, "")
    return pa.table({"id": hit.column("id"), "reason": reasons, "detail": pc.fill_null(detail, "")}, schema=DROPS)


def _signatures(batch: pa.Table) -> np.ndarray:
    col = batch.column("minhash").combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.uint32)
    width = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    offsets = np.frombuffer(col.buffers()[1], dtype=width)[col.offset:col.offset + len(col) + 1]
    flat = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return flat.view(np.uint32).reshape(len(col), -1)


def _key_rows(batch: pa.Table, exact: bool, near: bool, bands: int) -> pa.Table:
    """One row per (question, key): the exact key and each LSH band, for the rows not contaminated."""
    clean = batch.filter(pc.is_null(batch.column("contaminated")))
    keys = []
    if exact:
        keys.append(D.exact_band_keys(clean.column("exact_key").to_pylist(), bands)[:, None])
    if near and clean.num_rows:
        keys.append(D.band_keys(_signatures(clean), bands))
    if not keys or clean.num_rows == 0:
        return pa.table({"key": pa.array([], pa.int64()), "priority": pa.array([], _S)})
    grid = np.concatenate(keys, axis=1)
    prios = np.asarray(clean.column("priority").to_pylist(), dtype=object)
    return pa.table({"key": grid.ravel(), "priority": pa.array(np.repeat(prios, grid.shape[1]).tolist(), _S)})


def _bucket_partition(block: pa.Table) -> pa.Table:
    """One hash partition on the key, so every bucket is whole: its candidate pairs."""
    prios = np.asarray(block.column("priority").to_pylist(), dtype=object)
    pairs = D.bucket_pairs(block.column("key").to_numpy(), prios)
    return pa.table({"a": pa.array([a for a, _ in pairs], _S), "b": pa.array([b for _, b in pairs], _S)})


def _candidate_set(pair_refs: list) -> pa.Array:
    import ray

    ids: set[str] = set()
    for t in ray.get(list(pair_refs)):
        ids.update(t.column("a").to_pylist())
        ids.update(t.column("b").to_pylist())
    return pa.array(sorted(ids), _S)


def _candidate_rows(batch: pa.Table, candidates_ref) -> pa.Table:
    keep = pc.is_in(batch.column("priority"), value_set=_bcast(candidates_ref))
    return batch.filter(keep).select(["priority", "exact_key", "minhash"])


def _decide(drop_refs: list, pair_refs: list, row_refs: list, exact: bool, threshold: float) -> tuple[dict, dict]:
    """The decisions ``{id: (reason, detail)}`` and the graph's sizes."""
    import ray

    out: dict[str, tuple[str, str]] = {}
    for t in ray.get(list(drop_refs)):
        for i, r, d in zip(t.column("id").to_pylist(), t.column("reason").to_pylist(), t.column("detail").to_pylist()):
            out[i] = (r, d)
    pairs = [p for t in ray.get(list(pair_refs)) for p in zip(t.column("a").to_pylist(), t.column("b").to_pylist())]
    rows: dict[str, tuple[str, np.ndarray]] = {}
    for t in ray.get(list(row_refs)):
        for p, k, sig in zip(t.column("priority").to_pylist(), t.column("exact_key").to_pylist(), _signatures(t)):
            rows[p] = (k, sig)
    found, edges = D.candidate_decisions(pairs, rows, exact=exact, threshold=threshold)
    out.update(found)
    comps = D.components(edges)
    return out, {"candidate_pairs": len(set(pairs)), "candidate_rows": len(rows), "edges": len(edges),
                 "components": len(comps), "largest_component": max(map(len, comps), default=0)}


def dedupe_in_ray_data(feats, *, exact: bool, near: bool, bands: int, threshold: float, partitions: int):
    """The decisions over a features dataset (:data:`DEDUPE_FEATURES`), as ``(ObjectRef of
    {id: (reason, detail)}, sizes)``; the decisions stay in the object store."""
    import ray

    drop_refs = feats.map_batches(_contaminated_batch, batch_format="pyarrow").to_arrow_refs()
    pair_refs = (feats.map_batches(_key_rows, batch_format="pyarrow", fn_kwargs={"exact": exact, "near": near, "bands": bands})
                 .repartition(partitions, keys=["key"], sort=True)
                 .map_batches(_bucket_partition, batch_format="pyarrow", batch_size=None).to_arrow_refs())
    candidates_ref = ray.remote(_candidate_set).remote(pair_refs)
    row_refs = feats.map_batches(_candidate_rows, batch_format="pyarrow",
                                 fn_kwargs={"candidates_ref": candidates_ref}).to_arrow_refs()
    decisions_ref, sizes_ref = ray.remote(num_returns=2)(_decide).remote(drop_refs, pair_refs, row_refs, exact, threshold)
    return decisions_ref, ray.get(sizes_ref)


def _questions_file(kept: Path, out: Path) -> None:
    """The candidates in the question schema, one file: the input of the trace and solver jobs."""
    cols = [n for n, _ in Q_FIELDS if n != "ingest_source"]
    with pq.ParquetWriter(out, pa.schema([f for f in Q_FIELDS if f[0] != "ingest_source"])) as w:
        for f in sorted(kept.glob("*.parquet")):
            w.write_table(pq.read_table(f, columns=cols))


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    import ray

    c = ctx.cfg
    eval_ref = None
    eval_sizes: dict = {}
    boilerplate: list = []
    if ctx.eval_sets.questions:
        index = F.EvalIndex(ctx.eval_sets.questions, c.decontamination.ngram, c.decontamination.short_exact,
                            c.decontamination.boilerplate_df)
        eval_sizes, boilerplate = index.sizes, index.boilerplate[:50]
        eval_ref = ray.put(index)
    kwargs = {"cfg": c.dedupe.model_dump(), "eval_ref": eval_ref,
              "source_order": {s.name: i for i, s in enumerate(c.sources)},
              "trusted": [r.source for r in c.quality.trusted]}
    feats = ctx.map(ctx.read_kept("ingest"), _dedupe_features_batch, fn_kwargs=kwargs).materialize()
    partitions = max(2, min(64, feats.count() // ROWS_PER_PARTITION))
    decisions_ref, sizes = dedupe_in_ray_data(feats, exact=c.dedupe.exact, near=c.dedupe.near, bands=c.dedupe.bands,
                                              threshold=c.dedupe.threshold, partitions=partitions)
    out = ctx.mark_and_write("ingest", "dedupe", tmp, decisions_ref)
    _questions_file(tmp / "kept", tmp / "questions.parquet")
    return {**out, "near_duplicate_graph": sizes, "eval_sets": eval_sizes, "boilerplate_ngrams": boilerplate}

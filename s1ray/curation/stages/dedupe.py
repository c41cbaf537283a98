"""Stage dedupe: exact and MinHash near-duplicates, and decontamination against the eval sets
(an 8-gram index broadcast to the tasks); which copy to keep is decided on the driver over ids and
signatures only. Also writes ``questions.parquet``, the input of the trace and solver jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from s1ray.curation import filters as F
from s1ray.curation.stages.base import _S, Q_FIELDS, StageContext, _bcast, _to_table


DEDUPE_FEATURES = pa.schema([("id", _S), ("source", _S), ("ingest_source", _S), ("exact_key", _S),
                             ("minhash", pa.binary()), ("contaminated", _S), ("contam_detail", _S)])


def _dedupe_features_batch(batch: pa.Table, cfg: dict, eval_ref) -> pa.Table:
    from s1ray.curation.text import MinHasher, exact_key

    index = _bcast(eval_ref) if eval_ref is not None else None
    hasher = MinHasher(cfg["num_perm"], cfg["seed"]) if cfg["near"] else None
    out = []
    for r in batch.select(["id", "source", "ingest_source", "question"]).to_pylist():
        q = r["question"] or ""
        hit = index.match(q) if index is not None else None
        out.append({"id": r["id"], "source": r["source"], "ingest_source": r["ingest_source"], "exact_key": exact_key(q),
                    "minhash": hasher.of_text(q, cfg["shingle"]).tobytes() if hasher else b"",
                    "contaminated": hit[0] if hit else None, "contam_detail": f"8-gram: {hit[1]!r}" if hit else None})
    return _to_table(out, DEDUPE_FEATURES)


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
    dcfg = c.dedupe.model_dump()
    feats = ctx.map(ctx.read_kept("ingest"), _dedupe_features_batch, fn_kwargs={"cfg": dcfg, "eval_ref": eval_ref})
    rows = []
    for b in feats.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        rows.extend(b.to_pylist())
    decisions = F.dedupe_decisions(
        rows, exact=c.dedupe.exact, near=c.dedupe.near, bands=c.dedupe.bands, threshold=c.dedupe.threshold,
        source_order={s.name: i for i, s in enumerate(c.sources)}, trusted=[r.source for r in c.quality.trusted])
    del rows
    out = ctx.mark_and_write("ingest", "dedupe", tmp, decisions)
    _questions_file(tmp / "kept", tmp / "questions.parquet")
    return {**out, "eval_sets": eval_sizes, "boilerplate_ngrams": boilerplate}

"""Stage domains: a domain label per question (a field, an LLM, or embeddings on an actor pool)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from s1ray.curation.stages.base import StageContext, _to_table, stage_schema


def _domain_rows(rows: list[dict], classifier) -> list[dict]:
    labels = classifier.classify(rows)
    for r, d in zip(rows, labels):
        r["domain"], r["reason"], r["detail"] = d, None, None
    return rows


def _domain_batch(batch: pa.Table, cfg: dict, schema: pa.Schema) -> pa.Table:
    from s1ray.curation.domains import make_classifier

    return _to_table(_domain_rows(batch.to_pylist(), make_classifier(cfg)), schema)


class _EmbeddingDomains:
    """Ray Data actor: loads the embedding model once."""

    def __init__(self, cfg: dict, schema: pa.Schema):
        from s1ray.curation.domains import make_classifier

        self.classifier = make_classifier(cfg)
        self.schema = schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _to_table(_domain_rows(batch.to_pylist(), self.classifier), self.schema)


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    from ray.data import ActorPoolStrategy

    cfg = ctx.cfg.domains.model_dump()
    schema = stage_schema("domains", with_reason=True)
    ds = ctx.read_kept("difficulty")
    if ctx.cfg.domains.method == "embedding":
        e = ctx.cfg.domains.embedding
        ds = ds.map_batches(_EmbeddingDomains, batch_format="pyarrow", batch_size=e.batch_size,
                            fn_constructor_kwargs={"cfg": cfg, "schema": schema},
                            compute=ActorPoolStrategy(size=e.actors), num_cpus=e.num_cpus)
    else:
        ds = ctx.map(ds, _domain_batch, fn_kwargs={"cfg": cfg, "schema": schema})
    w = ctx.writer(tmp, "domains")
    hist: Counter = Counter()
    for b in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        hist.update(b.column("domain").to_pylist())
        w.add(b)
    return {**w.close(), "method": ctx.cfg.domains.method, "domains": dict(hist.most_common())}

"""Stage select: the final sample over domains and thinking lengths (:mod:`s1ray.curation.selection`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from s1ray.curation.stages.base import StageContext

log = logging.getLogger("s1ray.curation")


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    from s1ray.curation.selection import Candidate, select

    s = ctx.cfg.selection
    cands = []
    for b in ctx.read_kept("domains").select_columns(["id", "domain", "thinking_tokens", "trusted"]).iter_batches(
            batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        cands.extend(Candidate(r["id"], r["domain"] or "", int(r["thinking_tokens"] or 0), bool(r["trusted"]))
                     for r in b.to_pylist())
    picks = select(cands, s.size, s.seed, s.method, s.include_trusted, s.rank_base)
    chosen = {p.id: p for p in picks}
    decisions = {c.id: ("not_selected", s.method) for c in cands if c.id not in chosen}
    extra = {p.id: {"select_order": p.order, "selected_by": p.how} for p in picks}
    out = ctx.mark_and_write("domains", "select", tmp, decisions, extra)
    if len(picks) < s.size:
        log.warning("curation: select: only %d candidates for size %d", len(picks), s.size)
    return {**out, "method": s.method, "size": s.size, "seed": s.seed, "selected": len(picks),
            "trusted": sum(p.how == "trusted" for p in picks)}

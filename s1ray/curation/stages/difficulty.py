"""Stage difficulty: weak solvers' samples graded against the reference (optionally by an LLM
judge); questions a solver gets right are dropped, per :func:`~s1ray.curation.filters.difficulty_reason`."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from s1ray.curation import filters as F
from s1ray.curation.stages.base import _B, _S, StageContext, _bcast, _to_table
from s1ray.curation.stages.inputs import solver_dataset


GRADE_SCHEMA = pa.schema([("solver", _S), ("id", _S), ("correct", _B), ("judged", _B), ("judge_error", _S)])


def _grade_batch(batch: pa.Table, refs_ref, judge: dict | None) -> pa.Table:
    from s1ray.answers import is_equivalent

    refs = _bcast(refs_ref)
    out, ask = [], []
    for r in batch.to_pylist():
        ref = refs.get(r["id"])
        if ref is None:
            continue  # not a question of this stage (dropped earlier, or another pool's)
        g = {"solver": r["solver"], "id": r["id"], "correct": None, "judged": False, "judge_error": None}
        if ref["answer"] is None or (r["error"] and r["extracted_answer"] is None):
            out.append(g)  # ungradable: no reference, or the sample failed
            continue
        pred = r["extracted_answer"]
        g["correct"] = bool(pred is not None and is_equivalent(pred, ref["answer"]))
        if judge and pred is not None and (judge.get("mode") == "always" or not g["correct"]):
            ask.append((g, ref, pred))
        out.append(g)
    if ask:
        from s1ray.curation.llm import ChatClient, LLMError, judge_messages, map_concurrent, parse_judge

        with ChatClient(judge) as client:
            def one(item):
                g, ref, pred = item
                try:
                    reply = client.chat(judge_messages(ref["question"], ref["solution"] or ref["answer"], pred))
                except LLMError as exc:
                    g["judge_error"] = str(exc)[:200]
                    return
                verdict = parse_judge(reply)
                if verdict is None:
                    g["judge_error"] = f"unparsed reply: {reply[:100]!r}"
                else:
                    g["correct"], g["judged"] = verdict, True

            map_concurrent(one, ask, int(judge.get("max_concurrency", 8)))
    return _to_table(out, GRADE_SCHEMA)


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    import ray

    d = ctx.cfg.difficulty
    if not d.enabled or not d.solvers:
        return {**ctx.mark_and_write("quality", "difficulty", tmp, {}), "solvers": {}}
    refs = {}
    for b in ctx.read_kept("quality").select_columns(["id", "question", "answer", "solution"]).iter_batches(
            batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        for r in b.to_pylist():
            refs[r["id"]] = {"answer": r["answer"], "question": r["question"], "solution": r["solution"]}
    refs_ref = ray.put(refs)
    judge = d.judge.model_dump() if d.judge else None
    graded = []
    per_solver: dict[str, Counter] = defaultdict(Counter)
    for spec in d.solvers:
        ds = ctx.map(solver_dataset(ctx, spec), _grade_batch, fn_kwargs={"refs_ref": refs_ref, "judge": judge})
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
            for g in b.to_pylist():
                graded.append(g)
                st = per_solver[g["solver"]]
                st["samples"] += 1
                st["correct"] += int(bool(g["correct"]))
                st["ungraded"] += int(g["correct"] is None)
                st["judged"] += int(bool(g["judged"]))
                st["judge_errors"] += int(g["judge_error"] is not None)
    stats = F.aggregate_grades(graded)
    del graded
    names = [s.name for s in d.solvers]
    trusted_ids = set()
    for b in ctx.read_kept("quality").select_columns(["id", "trusted"]).iter_batches(batch_format="pyarrow"):
        trusted_ids.update(r["id"] for r in b.to_pylist() if r["trusted"])
    decisions, extra = {}, {}
    for qid, ref in refs.items():
        st = stats.get(qid, {})
        reason = F.difficulty_reason(st, names, has_reference=ref["answer"] is not None, trusted=qid in trusted_ids,
                                     on_missing=d.on_missing, on_no_reference=d.on_no_reference)
        if reason:
            decisions[qid] = reason
        extra[qid] = {"solver_samples": sum(s["samples"] for s in st.values()),
                      "solver_correct": sum(s["correct"] for s in st.values())}
    out = ctx.mark_and_write("quality", "difficulty", tmp, decisions, extra)
    return {**out, "solvers": {k: dict(v) for k, v in per_solver.items()}}

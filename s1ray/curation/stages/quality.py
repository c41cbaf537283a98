"""Stage quality: each question's best teacher trace (failed, truncated or pattern-matched
samples lose), the teacher's answer checked against the reference, trusted-source rules."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from s1ray.curation import filters as F
from s1ray.curation.stages.base import _I, _S, StageContext, _bcast, _to_table, stage_schema
from s1ray.curation.stages.inputs import trace_dataset


TRACE_FEATURES = pa.schema([("id", _S), ("input_index", _I), ("sample_index", _I), ("failure", _S), ("error", _S),
                            ("pattern", _S), ("pattern_field", _S), ("thinking_tokens", _I),
                            ("teacher_answer", _S), ("teacher_model", _S)])


def _token_counter(tokenizer: str | None) -> Callable[[str], int]:
    if not tokenizer:
        return F.approx_tokens
    # The trace job's counter: one tokenizer load per process, the same counting rule.
    from s1ray.traces.records import token_counter

    return token_counter(tokenizer)


def _trace_features_batch(batch: pa.Table, patterns: list[dict], drop_truncated: bool, drop_empty_attempt: bool,
                          tokenizer: str | None) -> pa.Table:
    from s1ray.answers import extract_answer

    pats = F.compile_patterns(patterns)
    count = _token_counter(tokenizer)
    out = []
    for t in batch.to_pylist():
        failure = F.trace_failure(t, drop_truncated=drop_truncated, drop_empty_attempt=drop_empty_attempt)
        pat = None if failure else F.pattern_reason({"thinking": t["thinking"], "attempt": t["attempt"]}, pats)
        tokens = t["thinking_tokens"]
        if tokens is None and not failure:
            tokens = count(t["thinking"] or "")
        ans = t["extracted_answer"]
        if ans is None and not failure:
            att = (t["attempt"] or "").strip()
            ans = extract_answer(att) or (att if len(att) <= 64 else None)
        out.append({"id": t["id"], "input_index": t["input_index"], "sample_index": t["sample_index"],
                    "failure": failure, "error": (t["error"] or "")[:200] or None,
                    "pattern": pat[0] if pat else None, "pattern_field": pat[1] if pat else None,
                    "thinking_tokens": tokens, "teacher_answer": ans, "teacher_model": t["teacher_model"]})
    return _to_table(out, TRACE_FEATURES)


def _quality_batch(batch: pa.Table, best_ref, patterns: list[dict], trusted: list[dict], schema: pa.Schema) -> pa.Table:
    from s1ray.answers import is_equivalent

    best = _bcast(best_ref)
    pats = F.compile_patterns(patterns)
    rows = batch.to_pylist()
    for r in rows:
        t = best.get(r["id"])
        r.update(trusted=False, reason=None, detail=None)
        if t is None:
            r["reason"] = "no_trace"
            continue
        r.update(trace_input=t["input_index"], trace_sample=t["sample_index"], thinking_tokens=t["thinking_tokens"],
                 teacher_answer=t["teacher_answer"], teacher_model=t["teacher_model"])
        if t["failure"]:
            r["reason"], r["detail"] = t["failure"], t["error"]
            continue
        correct = None
        if r["answer"] is not None and t["teacher_answer"] is not None:
            correct = is_equivalent(t["teacher_answer"], r["answer"])
        r["teacher_correct"] = correct
        if F.trusted_rule_matches(r["source"], trusted, correct, t["thinking_tokens"]):
            r["trusted"] = True
            continue
        hit = F.pattern_reason({"question": r["question"], "solution": r["solution"]}, pats)
        if hit:
            r["reason"], r["detail"] = hit[0], f"in {hit[1]}"
        elif t["pattern"]:
            r["reason"], r["detail"] = t["pattern"], f"in {t['pattern_field']}"
    return _to_table(rows, schema)


def run(ctx: StageContext, tmp: Path) -> dict[str, Any]:
    import ray

    q = ctx.cfg.quality
    pats = [p.model_dump() for p in q.patterns]
    trace_pats = [{**p, "fields": [f for f in p["fields"] if f in ("thinking", "attempt")]} for p in pats]
    question_pats = [{**p, "fields": [f for f in p["fields"] if f in ("question", "solution")]} for p in pats]
    samples: dict[str, list[dict]] = defaultdict(list)
    n_traces = 0
    failures: Counter = Counter()
    for i, spec in enumerate(q.traces):
        ds = ctx.map(trace_dataset(ctx, spec, i), _trace_features_batch,
                     fn_kwargs={"patterns": trace_pats, "drop_truncated": q.drop_truncated,
                                "drop_empty_attempt": q.drop_empty_attempt, "tokenizer": q.length.tokenizer})
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
            for t in b.to_pylist():
                samples[t["id"]].append(t)
                n_traces += 1
                failures[t["failure"] or t["pattern"] or "ok"] += 1
    best = {k: F.best_trace(v) for k, v in samples.items()}
    del samples
    schema = stage_schema("quality", with_reason=True)
    ds = ctx.map(ctx.read_kept("dedupe"), _quality_batch,
                 fn_kwargs={"best_ref": ray.put(best), "patterns": question_pats,
                            "trusted": [r.model_dump() for r in q.trusted], "schema": schema})
    w = ctx.writer(tmp, "quality")
    trusted = 0
    for b in ds.iter_batches(batch_format="pyarrow", batch_size=ctx.cfg.batch_size):
        w.add(b)
        import pyarrow.compute as pc

        trusted += int(pc.sum(pc.and_(b.column("trusted"), pc.is_null(b.column("reason")))).as_py() or 0)
    return {**w.close(), "trace_rows": n_traces, "trace_samples": dict(sorted(failures.items())), "trusted": trusted,
            "thinking_tokens_method": f"tokenizer:{q.length.tokenizer}" if q.length.tokenizer
            else "trace rows' own count, else words+symbols"}

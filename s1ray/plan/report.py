"""The text (and JSON) of a plan: per stage the Ray resources, the per-device terms, the
verdict, and the time estimates with their sources."""

from __future__ import annotations

from dataclasses import asdict

from s1ray.plan.terms import GIB, StagePlan


def _gib(n: int) -> str:
    return f"{n / GIB:8.2f} GiB"


def verdict(plan: StagePlan) -> str:
    if plan.problems:
        return "DOES NOT FIT: " + "; ".join(plan.problems)
    if plan.capacity_bytes is None:
        return "no GPU terms"
    if plan.kv_sequences is not None and plan.kv_sequences < (plan.min_kv_sequences or 0):
        return (f"DOES NOT FIT: the KV cache holds {plan.kv_sequences:.2f} sequences at max_model_len; "
                "vLLM needs at least 1 (lower max_model_len, raise tensor_parallel_size or gpu_memory_utilization)")
    over = plan.total_bytes - plan.capacity_bytes
    if over > 0:
        t = plan.breaking_term()
        return (f"DOES NOT FIT: {plan.total_bytes / GIB:.1f} GiB > {plan.capacity_bytes / GIB:.1f} GiB by "
                f"{over / GIB:.1f} GiB; largest term: {t.name} ({t.gib:.1f} GiB)")
    if plan.kv_sequences is not None:
        kv = next(t for t in plan.terms if t.name.startswith("KV cache"))
        return (f"fits: {plan.kv_sequences:.1f} sequences at max_model_len per replica (KV cache {kv.gib:.1f} GiB "
                f"after {(plan.total_bytes - kv.bytes) / GIB:.1f} GiB of the rest, budget {plan.capacity_bytes / GIB:.1f} GiB)")
    return f"fits: {plan.total_bytes / GIB:.1f} of {plan.capacity_bytes / GIB:.1f} GiB"


def format_stage(plan: StagePlan) -> str:
    res = ", ".join(f"{k}: {v:g}" for k, v in plan.resources.items())
    lines = [f"== {plan.stage} ({plan.kind}) ==", f"ray: {plan.bundles} x {{{res}}}"]
    if plan.shape_source:
        lines.append(f"model shape: {plan.shape_source}")
    lines += [f"note: {n}" for n in plan.notes]
    sources: list[str] = []

    def ref(src: str) -> str:
        if src not in sources:
            sources.append(src)
        return f"[{sources.index(src) + 1}]"

    if plan.terms:
        lines.append(f"per device ({plan.device}):")
        for t in plan.terms:
            mark = "" if t.counted else "  (not added: never alive with the larger one)"
            lines.append(f"  {t.name:<62} {_gib(t.bytes)} {ref(t.source)}{mark}")
        lines.append(f"  {'total':<62} {_gib(plan.total_bytes)}")
    lines.append(f"verdict: {verdict(plan)}")
    for e in plan.estimates:
        gpu_h = f", {e.gpu_hours:.2f} GPU-hours" if e.gpu_hours is not None else ""
        lines.append(f"time: {e.hours * 60:.1f} min{gpu_h} for {e.label} {ref(e.source)}")
    if plan.kind == "engine":
        lines.append("time: not estimated (no measured engine throughput for this shape)")
    lines += [f"  [{i + 1}] {src}" for i, src in enumerate(sources)]
    return "\n".join(lines)


def format_plans(plans: list[StagePlan]) -> str:
    body = "\n\n".join(format_stage(p) for p in plans)
    bad = [p.stage for p in plans if not p.fits]
    tail = f"OVERALL: {'fits' if not bad else 'does not fit: ' + ', '.join(bad)}"
    return f"{body}\n\n{tail}"


def plans_json(plans: list[StagePlan]) -> list[dict]:
    out = []
    for p in plans:
        d = asdict(p)
        d.update(total_bytes=p.total_bytes, fits=p.fits, verdict=verdict(p))
        out.append(d)
    return out

"""The pipeline's terminal lines: one summary per stage, and the result at the end (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(v: Any, fmt: str = ".4f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "?"


def stage_summary(stage: str, result: dict[str, Any]) -> str:
    """What a stage produced, in one line (``result``: the stage's record in summary.json)."""
    r = result or {}
    if stage == "base_model":
        return f"model {r.get('model')}"
    if stage == "curation":
        st = r.get("stages", {})
        first = next(iter(st.values()), {}).get("rows_in", "?")
        sets = r.get("eval_sets", {})
        used = ", ".join(sets.get("used", {})) or "none"
        by_reason: dict[str, list[str]] = {}
        for name, why in sets.get("skipped", {}).items():
            by_reason.setdefault(why, []).append(name)
        skipped = "".join(f"; skipped {', '.join(names)} ({why})" for why, names in by_reason.items())
        return (f"{first} questions -> {r.get('final_rows')} selected; decontaminated against {used}"
                f"{skipped}; dataset {r.get('dataset_dir')}")
    if stage == "candidates":
        return f"questions {r.get('questions')}"
    if stage in ("traces", "solver"):
        return (f"{r.get('generated')} rows ({r.get('errors')} errors, {r.get('already_done')} already done), "
                f"{_num(r.get('output_tokens_per_s'), '.0f')} output tok/s")
    if stage == "heldout":
        return f"{r.get('rows')} held-out problems"
    if stage == "train":
        m = r.get("metrics", {})
        return f"{m.get('step', '?')} steps, loss {_num(m.get('loss'))}; model {r.get('export_dir')}"
    if stage == "eval":
        parts = [f"{tag}: {s.get('generated')} samples generated ({s.get('failed')} failed)"
                 for tag, s in r.items() if isinstance(s, dict)]
        return "; ".join(parts)
    if stage == "paper":
        return f"report {r.get('report')} (and report.json, {len(r.get('plots', {}))} plots)"
    if stage == "serve":
        return (f"answered one chat request: thinking {str(r.get('reasoning'))[:40]!r}, "
                f"answer {str(r.get('answer'))[:40]!r}")
    return ""


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "?"


def final_lines(summary: dict[str, Any]) -> list[str]:
    """What the pipeline prints last: the first evaluation's metrics table in full, one line per
    method for the others (e.g. the untrained model), and where the plots and tables are."""
    evals = {tag: s for tag, s in (summary.get("stages", {}).get("eval", {}).get("result", {}) or {}).items()
             if isinstance(s, dict)}
    lines: list[str] = []
    for i, (tag, s) in enumerate(evals.items()):
        md = s.get("files", {}).get("metrics.md")
        if i == 0 and md and Path(md).is_file():
            lines += ["", *Path(md).read_text().rstrip().splitlines(), ""]
            continue
        for m in s.get("methods", []):
            lines.append(f"{tag}: {m.get('dataset')} {m.get('method')}: performance {_pct(m.get('performance'))}, "
                         f"control {_pct(m.get('control'))} (table: {md})")
    lines += [f"plot: {s['files']['accuracy_vs_thinking.png']}" for s in evals.values()
              if s.get("files", {}).get("accuracy_vs_thinking.png")]
    paper = (summary.get("stages", {}).get("paper", {}) or {}).get("result") or {}
    if paper.get("report"):
        lines.append(f"paper report: {paper['report']} (data: {paper.get('report_json')})")
    lines.append(f"all outputs: {summary.get('work_dir')}/summary.json")
    return lines

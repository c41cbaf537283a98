"""The paper in miniature's report (pure): ``report.json`` and ``report.md`` from the samples of
its sweeps. Nothing here is typed by hand: every number comes from a sample log.

``report.json`` holds four lists, one per experiment of the s1 paper:

* ``methods`` (Table 3) -- Control, Scaling, Performance per test-time method;
* ``parallel_vs_sequential`` (Fig. 4) -- budget forcing at each budget against majority voting
  over n samples, both against total thinking tokens per question;
* ``extrapolation`` (Tables 4/5) -- forced Waits beyond the natural end, and the string ablation;
* ``data_ablation`` (Table 2) -- students trained on each selection, at one budget.

Every accuracy carries its number of questions and a 95% Wilson interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from s1ray.eval import metrics

DEFAULT_CONTINUATION = "Wait"
Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval [lo, hi] of a proportion (None for n = 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _acc(samples: Sequence[dict]) -> dict[str, Any]:
    n = len(samples)
    k = sum(bool(s["correct"]) for s in samples)
    return {"accuracy": k / n if n else None, "accuracy_ci": wilson(k, n),
            "n_questions": len({s["id"] for s in samples})}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def method_rows(samples: Iterable[dict], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Table 3: one row per method. Performance is the best budget's accuracy, with its interval."""
    points = metrics.budget_points(samples)
    rows = []
    for m in metrics.method_table(points, methods):
        mine = [p for p in points if p["method"] == m["method"]]
        best = max(mine, key=lambda p: p["accuracy"] or 0)
        rows.append({
            "method": m["method"], "control": m["control"], "scaling": m["scaling"],
            "performance": m["performance"], "performance_ci": wilson(round(best["accuracy"] * best["n"]), best["n"]),
            "best_budget": best["budget"], "n_questions": best["questions"], "n_budgets": m["num_budgets"],
            "points": [{"budget": p["budget"], "accuracy": p["accuracy"], "thinking_tokens": p["avg_thinking_tokens"],
                        "control": p["control"]} for p in mine],
        })
    return rows


def parallel_vs_sequential(samples: Sequence[dict], n_votes: Sequence[int],
                           forcing: str = "budget_forcing") -> list[dict[str, Any]]:
    """Budget forcing's points (one sample per question) beside majority voting's (n samples at
    a per-sample budget), both on total thinking tokens per question."""
    rows = []
    seq: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        if s.get("mode", "seq") == "seq" and s["method"] == forcing:
            seq[s["budget"]].append(s)
    for budget, ss in seq.items():
        rows.append({"mode": "sequential", "n": 1, "budget": budget,
                     "total_thinking_tokens": _mean([s["thinking_tokens"] for s in ss]), **_acc(ss)})
    for v in metrics.voting_curve(samples, n_votes):
        k = round(v["accuracy"] * v["questions"])
        rows.append({"mode": "parallel", "n": v["n"], "budget": v["budget"],
                     "total_thinking_tokens": v["avg_thinking_tokens"], "accuracy": v["accuracy"],
                     "accuracy_ci": wilson(k, v["questions"]), "n_questions": v["questions"]})
    rows.sort(key=lambda r: (r["mode"] != "sequential", r["total_thinking_tokens"] or 0))
    return rows


def extrapolation(samples: Iterable[dict]) -> list[dict[str, Any]]:
    """One row per (forced Waits, continuation string)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        cont = s.get("continuation")
        groups[(s["budget_num_waits"], DEFAULT_CONTINUATION if cont is None else cont)].append(s)
    rows = [{"waits": w, "continuation": c, "thinking_tokens": _mean([s["thinking_tokens"] for s in ss]),
             "waits_appended": _mean([s["num_waits"] for s in ss]), **_acc(ss)}
            for (w, c), ss in groups.items()]
    rows.sort(key=lambda r: (r["continuation"] != DEFAULT_CONTINUATION, r["continuation"], r["waits"]))
    return rows


def data_ablation(students: Sequence[dict]) -> list[dict[str, Any]]:
    """``students``: ``{selection, n_train, samples}`` each -> one row each."""
    return [{"selection": st["selection"], "n_train": st["n_train"], "budget": st.get("budget"),
             "thinking_tokens": _mean([s["thinking_tokens"] for s in st["samples"]]), **_acc(st["samples"])}
            for st in students]


def build_report(eval_samples: Sequence[dict], methods: Sequence[str], n_votes: Sequence[int],
                 extrapolation_samples: Sequence[dict], students: Sequence[dict],
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "meta": meta or {},
        "methods": method_rows(eval_samples, methods),
        "parallel_vs_sequential": parallel_vs_sequential(eval_samples, n_votes),
        "extrapolation": extrapolation(extrapolation_samples),
        "data_ablation": data_ablation(students),
    }


# ------------------------------------------------------------------ markdown
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "-" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows)]


def findings(report: dict[str, Any]) -> list[str]:
    """Plain sentences read off the numbers, whatever their direction."""
    out = []
    by = {r["method"]: r for r in report["methods"]}
    bf = by.get("budget_forcing")
    if bf:
        best = max(report["methods"], key=lambda r: r["performance"] or 0)
        out.append(f"Budget forcing: Control {_pct(bf['control'])}, Scaling {_num(bf['scaling'])}, Performance "
                   f"{_pct(bf['performance'])}; the best Performance is {best['method']}'s ({_pct(best['performance'])}).")
    seq = [r for r in report["parallel_vs_sequential"] if r["mode"] == "sequential"]
    par = [r for r in report["parallel_vs_sequential"] if r["mode"] == "parallel"]
    if seq and par:
        top_par = max(par, key=lambda r: r["total_thinking_tokens"] or 0)
        cheaper = [r for r in seq if (r["total_thinking_tokens"] or 0) <= (top_par["total_thinking_tokens"] or 0)]
        if cheaper:
            s = max(cheaper, key=lambda r: r["accuracy"] or 0)
            verdict = "beats" if s["accuracy"] > top_par["accuracy"] else "does not beat"
            out.append(f"Sequential {verdict} parallel: budget forcing reaches {_pct(s['accuracy'])} with "
                       f"{_num(s['total_thinking_tokens'], '.0f')} thinking tokens per question; majority voting over "
                       f"{top_par['n']} samples reaches {_pct(top_par['accuracy'])} with {_num(top_par['total_thinking_tokens'], '.0f')}.")
    ext = [r for r in report["extrapolation"] if r["continuation"] == DEFAULT_CONTINUATION]
    base = next((r for r in ext if r["waits"] == 0), None)
    if base and len(ext) > 1:
        best = max(ext, key=lambda r: r["accuracy"] or 0)
        if best["waits"] == 0 or best["accuracy"] <= base["accuracy"]:
            out.append(f"Forcing \"Wait\" did not help this student: {_pct(base['accuracy'])} with no forced Wait, "
                       + ", ".join(f"{_pct(r['accuracy'])} with {r['waits']}" for r in ext if r["waits"]) + ".")
        else:
            out.append(f"Forcing \"Wait\" helped: {_pct(base['accuracy'])} with no forced Wait, best "
                       f"{_pct(best['accuracy'])} with {best['waits']} (interval {_ci(best['accuracy_ci'])}).")
    abl = report["data_ablation"]
    if abl:
        best = max(abl, key=lambda r: r["accuracy"] or 0)
        out.append(f"Data selection: the best student is {best['selection']}'s ({_pct(best['accuracy'])}, "
                   f"{best['n_train']} training examples).")
    return out


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    meta = report.get("meta", {})
    lines = ["# s1 in miniature: the paper's experiments", "",
             "Generated by `python jobs/pipeline.py --config configs/pipeline/paper.yaml` "
             "(`s1ray/pipeline/paper_report.py`); every number is read from the run's sample logs.", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["## Findings", "", *(f"- {f}" for f in findings(report)), ""]
    lines += ["## Test-time methods (paper Table 3)", "",
              "Control: share of runs whose thinking lies within the budget. Scaling: mean slope over all pairs "
              "of budgets, accuracy points per 1,000 thinking tokens. Performance: the best budget's accuracy.", ""]
    lines += _table(["method", "Control", "Scaling", "Performance", "95% CI", "questions"], (
        (r["method"], _pct(r["control"]), _num(r["scaling"]), _pct(r["performance"]), _ci(r["performance_ci"]),
         str(r["n_questions"])) for r in report["methods"]))
    lines += ["", _img(plots, "methods"), "", "## Sequential vs parallel scaling (paper Fig. 4)", ""]
    lines += _table(["mode", "budget", "n", "thinking tokens / question", "accuracy", "95% CI", "questions"], (
        (r["mode"], str(r["budget"]), str(r["n"]), _num(r["total_thinking_tokens"]), _pct(r["accuracy"]),
         _ci(r["accuracy_ci"]), str(r["n_questions"])) for r in report["parallel_vs_sequential"]))
    lines += ["", _img(plots, "parallel_vs_sequential"), "",
              "## Extrapolation: forced Waits beyond the natural end (paper Tables 4/5)", ""]
    lines += _table(["continuation", "forced waits", "thinking tokens", "accuracy", "95% CI", "questions"], (
        (repr(r["continuation"]) if r["continuation"] != DEFAULT_CONTINUATION else "Wait", str(r["waits"]),
         _num(r["thinking_tokens"]), _pct(r["accuracy"]), _ci(r["accuracy_ci"]), str(r["n_questions"]))
        for r in report["extrapolation"]))
    lines += ["", _img(plots, "extrapolation"), "", "## Data selection (paper Table 2)", ""]
    lines += _table(["selection", "training examples", "budget", "accuracy", "95% CI", "questions"], (
        (r["selection"], str(r["n_train"]), str(r["budget"]), _pct(r["accuracy"]), _ci(r["accuracy_ci"]),
         str(r["n_questions"])) for r in report["data_ablation"]))
    return "\n".join(lines) + "\n"


def _img(plots: dict[str, str], key: str) -> str:
    return f"![{key}]({plots[key]})" if key in plots else ""

"""Markdown and CSV rendering of metric rows (pure)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

# column -> (header, kind): kind "pct" prints a fraction as a percentage, "num" a number.
METHOD_COLUMNS = (
    ("method", "Method", "str"),
    ("control", "Control", "pct"),
    ("scaling", "Scaling", "num"),
    ("performance", "Performance", "pct"),
    ("num_budgets", "\\|A\\|", "str"),
    ("control_eval", "Control (per eval)", "pct"),
)
POINT_COLUMNS = (
    ("method", "Method", "str"),
    ("budget", "Budget", "str"),
    ("questions", "Questions", "str"),
    ("accuracy", "Accuracy", "pct"),
    ("avg_thinking_tokens", "Avg thinking tokens", "num"),
    ("avg_answer_tokens", "Avg answer tokens", "num"),
    ("control", "Control", "pct"),
)
VOTE_COLUMNS = (
    ("method", "Method", "str"),
    ("budget", "Budget", "str"),
    ("n", "n", "str"),
    ("questions", "Questions", "str"),
    ("accuracy", "Majority-vote accuracy", "pct"),
    ("avg_total_tokens", "Avg total tokens / question", "num"),
)


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "num":
        return f"{value:.1f}" if isinstance(value, float) else str(value)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if k == "str" else "---:" for _, _, k in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c), k) for c, _, k in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def metrics_markdown(
    method_rows: Sequence[dict[str, Any]],
    point_rows: Sequence[dict[str, Any]],
    vote_rows: Sequence[dict[str, Any]] = (),
    title: str = "Evaluation",
) -> str:
    """The report: per dataset, the paper's Table 3, then every budget, then majority voting."""
    out = [f"# {title}", ""]
    out.append(
        "Control: share of runs whose thinking length is within the method's bounds "
        "(per eval: the paper's per-evaluation variant on average thinking length). Scaling: mean "
        "slope over all pairs of budgets of accuracy vs average thinking tokens, in percentage "
        "points per 1,000 tokens. Performance: best accuracy over the budgets."
    )
    datasets = sorted({r["dataset"] for r in [*method_rows, *point_rows, *vote_rows]})
    for d in datasets:
        out += ["", f"## {d}", "", markdown_table([r for r in method_rows if r["dataset"] == d], METHOD_COLUMNS)]
        pts = [r for r in point_rows if r["dataset"] == d]
        if pts:
            out += ["", "### Accuracy per budget", "", markdown_table(pts, POINT_COLUMNS)]
        votes = [r for r in vote_rows if r["dataset"] == d]
        if votes:
            out += ["", "### Majority voting (parallel scaling)", "", markdown_table(votes, VOTE_COLUMNS)]
    return "\n".join(out) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()



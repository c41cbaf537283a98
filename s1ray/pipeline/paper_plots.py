"""The paper in miniature's plots (matplotlib, Agg): sequential vs parallel scaling and
extrapolation; the methods' plot is the sweep's own accuracy-vs-thinking plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s1ray.eval.plots import _finish, _xaxis, plt


def _errors(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    lo = [100 * (r["accuracy"] - r["accuracy_ci"][0]) if r.get("accuracy_ci") else 0 for r in rows]
    hi = [100 * (r["accuracy_ci"][1] - r["accuracy"]) if r.get("accuracy_ci") else 0 for r in rows]
    return [lo, hi]


def plot_parallel_vs_sequential(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    xs = []
    for mode, marker, label in (("sequential", "o", "budget forcing (one sample)"),
                                ("parallel", "s", "majority voting (n samples)")):
        rs = sorted((r for r in rows if r["mode"] == mode and r["accuracy"] is not None),
                    key=lambda r: r["total_thinking_tokens"])
        if not rs:
            continue
        x = [r["total_thinking_tokens"] for r in rs]
        xs += x
        ax.errorbar(x, [100 * r["accuracy"] for r in rs], yerr=_errors(rs), marker=marker, capsize=3, label=label)
        if mode == "parallel":
            for r in rs:
                ax.annotate(f"n={r['n']}", (r["total_thinking_tokens"], 100 * r["accuracy"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=7)
    _xaxis(ax, xs, log_x=True)
    ax.set_xlabel("Total thinking tokens per question")
    ax.set_ylabel("Accuracy (%), 95% Wilson interval")
    ax.set_title("Sequential vs parallel scaling")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_extrapolation(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    wait = sorted((r for r in rows if r["continuation"] == "Wait"), key=lambda r: r["waits"])
    if wait:
        left.errorbar([r["thinking_tokens"] for r in wait], [100 * r["accuracy"] for r in wait],
                      yerr=_errors(wait), marker="o", capsize=3)
        for r in wait:
            left.annotate(f"{r['waits']}x", (r["thinking_tokens"], 100 * r["accuracy"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)
    left.set_xlabel("Average thinking tokens")
    left.set_ylabel("Accuracy (%), 95% Wilson interval")
    left.set_title('Forced "Wait" beyond the natural end')
    waits = {r["waits"] for r in rows if r["continuation"] != "Wait"}
    strings = [r for r in rows if r["waits"] in waits]
    if strings:
        labels = [repr(r["continuation"]) if r["continuation"] != "Wait" else "Wait" for r in strings]
        right.bar(labels, [100 * r["accuracy"] for r in strings], yerr=_errors(strings), capsize=3)
        right.set_title(f"Which string, {max(waits)}x ignored")
    right.set_ylabel("Accuracy (%)")
    return _finish(fig, path)

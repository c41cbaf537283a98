"""PNG plots of a sweep (matplotlib, Agg backend; no display needed).

* :func:`plot_accuracy_vs_thinking` -- the paper's Figure 1 style: accuracy against average
  thinking tokens, one line per method, one panel per dataset.
* :func:`plot_voting_vs_forcing` -- parallel vs sequential scaling (the paper's Figure 4 idea):
  majority-vote accuracy against average total tokens per question (n = 1, 2, 4, ...) beside
  budget forcing's accuracy against its average total tokens per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from s1ray.dataio import atomic_write  # noqa: E402

_MARKERS = "osD^v<>ph*"


def _panels(datasets: Sequence[str]):
    n = max(1, len(datasets))
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.0), squeeze=False)
    return fig, list(axes[0])


def _finish(fig, path: str | Path) -> Path:
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _label(ax, title: str, xlabel: str, legend_size: int) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_size)


def _close(fig, axes, datasets: Sequence[str], title: str | None, path: str | Path) -> Path:
    if not datasets:
        axes[0].text(0.5, 0.5, "no samples", ha="center", va="center")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def _xaxis(ax, xs: list[float], log_x: bool) -> None:
    """Log-2 x axis (as the paper's Figure 1) when the range is wide; ticks read as plain numbers,
    at the data's own x values when there are few of them."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.margins(x=0.08, y=0.1)
    if not xs:
        return
    if log_x and min(xs) > 0 and max(xs) / min(xs) > 1.5:
        ax.set_xscale("log", base=2)
    ticks = sorted({round(x) for x in xs})
    if len(ticks) <= 8:
        # drop ticks that would overlap (closer than 6% of the axis in its own scale)
        log = ax.get_xscale() == "log"
        span = ticks[-1] - ticks[0] or 1
        keep = [ticks[0]]
        for t in ticks[1:]:
            if (t / max(keep[-1], 1) > 1.12) if log else (t - keep[-1] > 0.06 * span):
                keep.append(t)
        ax.xaxis.set_major_locator(FixedLocator(keep))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_thinking(
    points: Sequence[dict[str, Any]], path: str | Path, log_x: bool = True, title: str | None = None
) -> Path:
    """Accuracy (%) vs average thinking tokens, a line per method, a panel per dataset."""
    datasets = sorted({p["dataset"] for p in points})
    fig, axes = _panels(datasets)
    for ax, d in zip(axes, datasets):
        methods = list(dict.fromkeys(p["method"] for p in points if p["dataset"] == d))
        xs_all = []
        for i, m in enumerate(methods):
            pts = sorted(
                (p["avg_thinking_tokens"], 100 * p["accuracy"])
                for p in points
                if p["dataset"] == d and p["method"] == m and p["accuracy"] is not None
            )
            if not pts:
                continue
            xs, ys = zip(*pts)
            xs_all += xs
            ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], label=m.replace("_", " "))
        _xaxis(ax, xs_all, log_x)
        _label(ax, d, "Average thinking tokens", 8)
    return _close(fig, axes, datasets, title, path)


def plot_voting_vs_forcing(
    points: Sequence[dict[str, Any]],
    votes: Sequence[dict[str, Any]],
    path: str | Path,
    forcing_method: str = "budget_forcing",
    log_x: bool = True,
    title: str | None = None,
) -> Path:
    """Accuracy (%) vs average total generated tokens per question: voting (per n) and forcing."""
    datasets = sorted({p["dataset"] for p in [*points, *votes]})
    fig, axes = _panels(datasets)
    for ax, d in zip(axes, datasets):
        xs_all = []
        seq = sorted(
            (p["avg_total_tokens"], 100 * p["accuracy"])
            for p in points
            if p["dataset"] == d and p["method"] == forcing_method and p["accuracy"] is not None
        )
        if seq:
            xs, ys = zip(*seq)
            xs_all += xs
            ax.plot(xs, ys, marker="o", label=f"sequential: {forcing_method.replace('_', ' ')}")
        groups = list(dict.fromkeys((v["method"], v["budget"]) for v in votes if v["dataset"] == d))
        for j, (m, b) in enumerate(groups):
            vs = sorted(
                (v["avg_total_tokens"], 100 * v["accuracy"], v["n"])
                for v in votes
                if v["dataset"] == d and (v["method"], v["budget"]) == (m, b) and v["accuracy"] is not None
            )
            if not vs:
                continue
            xs, ys, ns = zip(*vs)
            xs_all += xs
            ax.plot(xs, ys, marker="s", linestyle="--", label=f"parallel: majority vote ({m.replace('_', ' ')} {b})")
            for x, y, n in vs:
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
        _xaxis(ax, xs_all, log_x)
        _label(ax, d, "Average generated tokens per question", 7)
    return _close(fig, axes, datasets, title, path)

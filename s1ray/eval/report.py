"""A sweep's reports from its sample log: ``metrics.md`` / ``metrics.csv`` / ``points.csv`` /
``voting.csv``, the two plots, the ``samples.parquet`` copy, and the console summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from s1ray.eval.config import EvalConfig
from s1ray.dataio import atomic_write, join_location, write_text_atomic
from s1ray.eval.samples import read_samples, sample_key

if TYPE_CHECKING:
    from s1ray.eval.sweep import SweepResult


def write_reports(cfg: EvalConfig, keys: set[tuple] | None, res: SweepResult) -> SweepResult:
    from s1ray.eval import metrics, plots, tables

    out = res.output_dir
    samples = [s for s in read_samples(out) if keys is None or sample_key(s) in keys]
    res.point_rows = metrics.budget_points(samples)
    res.method_rows = metrics.method_table(res.point_rows, cfg.methods)
    res.vote_rows = metrics.voting_curve(samples, cfg.n_votes) if cfg.n_votes else []
    f = res.files
    texts = {
        "metrics.md": tables.metrics_markdown(res.method_rows, res.point_rows, res.vote_rows,
                                              title=f"Evaluation: {cfg.name}"),
        "metrics.csv": tables.csv_text(res.method_rows),
        "points.csv": tables.csv_text(res.point_rows),
    }
    if res.vote_rows:
        texts["voting.csv"] = tables.csv_text(res.vote_rows)
    for name, text in texts.items():
        f[name] = write_text_atomic(join_location(out, name), text)
    f["accuracy_vs_thinking.png"] = plots.plot_accuracy_vs_thinking(
        res.point_rows, join_location(out, "accuracy_vs_thinking.png"), log_x=cfg.log_x, title=cfg.name
    )
    forcing = "budget_forcing" if "budget_forcing" in cfg.methods else cfg.methods[0]
    f["voting_vs_forcing.png"] = plots.plot_voting_vs_forcing(
        res.point_rows, res.vote_rows, join_location(out, "voting_vs_forcing.png"), forcing, log_x=cfg.log_x,
        title=cfg.name,
    )
    if samples:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pylist(samples)
        except (pa.ArrowException, TypeError, ValueError):  # a convenience copy; the sample log is the record
            table = None
        if table is not None:
            f["samples.parquet"] = atomic_write(join_location(out, "samples.parquet"),
                                                lambda tmp: pq.write_table(table, tmp))
    return res


def summary(res: SweepResult, echo: Callable[[str], None] | None = None) -> str:
    from s1ray.eval.tables import fmt

    lines = [
        f"eval: {res.planned} samples planned, {res.skipped} already done, {res.generated} generated, "
        f"{res.failed} failed -> {res.output_dir}"
    ]
    if res.generated:
        lines.append(
            f"  generation: {res.gen_tokens} tokens in {res.gen_wall_s:.1f} s = "
            f"{res.tokens_per_s or 0:.0f} tokens/s (backend start {res.startup_s:.1f} s)"
        )
    for r in res.method_rows:
        lines.append(
            f"  {r['dataset']:<14} {r['method']:<20} control {fmt(r['control'], 'pct'):>7}  "
            f"scaling {fmt(r['scaling'], 'num'):>7}  performance {fmt(r['performance'], 'pct'):>7}"
        )
    for v in res.vote_rows:
        lines.append(
            f"  {v['dataset']:<14} majority vote n={v['n']:<3} accuracy {fmt(v['accuracy'], 'pct'):>7}  "
            f"avg total tokens {v['avg_total_tokens']:.0f}"
        )
    lines += [f"  error: {e}" for e in res.errors]
    text = "\n".join(lines)
    if echo:
        echo(text)
    return text

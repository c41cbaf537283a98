"""A sweep's reports from its sample log: ``metrics.md`` / ``metrics.csv`` / ``points.csv`` /
``voting.csv``, the two plots, the ``samples.parquet`` copy, and the console summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from s1ray.eval.config import EvalConfig
from s1ray.eval.samples import SAMPLES_FILE, read_samples, sample_key

if TYPE_CHECKING:
    from s1ray.eval.sweep import SweepResult


def write_reports(cfg: EvalConfig, keys: set[tuple] | None, res: SweepResult) -> SweepResult:
    from s1ray.eval import metrics, plots, tables

    out = res.output_dir
    samples = [s for s in read_samples(out / SAMPLES_FILE) if keys is None or sample_key(s) in keys]
    res.point_rows = metrics.budget_points(samples)
    res.method_rows = metrics.method_table(res.point_rows, cfg.methods)
    res.vote_rows = metrics.voting_curve(samples, cfg.n_votes) if cfg.n_votes else []
    f = res.files
    f["metrics.md"] = tables.write_text_atomic(
        out / "metrics.md",
        tables.metrics_markdown(res.method_rows, res.point_rows, res.vote_rows, title=f"Evaluation: {cfg.name}"),
    )
    f["metrics.csv"] = tables.write_text_atomic(out / "metrics.csv", tables.csv_text(res.method_rows))
    f["points.csv"] = tables.write_text_atomic(out / "points.csv", tables.csv_text(res.point_rows))
    if res.vote_rows:
        f["voting.csv"] = tables.write_text_atomic(out / "voting.csv", tables.csv_text(res.vote_rows))
    f["accuracy_vs_thinking.png"] = plots.plot_accuracy_vs_thinking(
        res.point_rows, out / "accuracy_vs_thinking.png", log_x=cfg.log_x, title=cfg.name
    )
    forcing = "budget_forcing" if "budget_forcing" in cfg.methods else cfg.methods[0]
    f["voting_vs_forcing.png"] = plots.plot_voting_vs_forcing(
        res.point_rows, res.vote_rows, out / "voting_vs_forcing.png", forcing, log_x=cfg.log_x, title=cfg.name
    )
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if samples:
            tmp = out / "samples.parquet.tmp"
            pq.write_table(pa.Table.from_pylist(samples), tmp)
            tmp.replace(out / "samples.parquet")
            f["samples.parquet"] = out / "samples.parquet"
    except Exception:  # parquet is a convenience copy; samples.jsonl is the record
        pass
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

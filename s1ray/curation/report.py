"""The curation report: ``<output_dir>/report/`` with report.json, report.md, domains.png and
trace_lengths.png (matplotlib, Agg). Written atomically after every run, from the stage markers
(so a fully cached rerun reports the same numbers) and the stage outputs' compact columns.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from s1ray.curation.config import STAGES, CurationConfig
from s1ray.curation.store import StageStore
from s1ray.dataio import join_location, replace_dir
from s1ray.storage import Location


def _column(path: str | Path, col: str) -> list:
    loc = Location(path)
    out: list = []
    for name in loc.names():
        if name.endswith(".parquet"):
            out.extend(pq.read_table(loc.path(name), columns=[col], filesystem=loc.fs).column(col).to_pylist())
    return out


def check_counts(stages: dict[str, dict[str, Any]]) -> list[str]:
    """Problems with the bookkeeping (empty = every row accounted for): within a stage
    rows_in = rows_out + rejected, and each stage's rows_in = the previous stage's rows_out."""
    problems = []
    prev = None
    for s in STAGES:
        st = stages.get(s)
        if not st:
            continue
        if "rejected" in st and st["rows_in"] != st["rows_out"] + sum(st["rejected"].values()):
            problems.append(f"{s}: rows_in {st['rows_in']} != rows_out {st['rows_out']} + rejected")
        if prev is not None and s != "export" and st.get("rows_in") != prev:
            problems.append(f"{s}: rows_in {st.get('rows_in')} != previous stage's rows_out {prev}")
        if s == "export" and prev is not None and st.get("rows") != prev:
            problems.append(f"export: {st.get('rows')} rows != selected {prev}")
        prev = st.get("rows_out", prev)
    return problems


def _hist_png(path: Path, title: str, labels: list[str], values: list[int], xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(labels) + 1)))
    ax.barh(range(len(labels)), values, color="#4878a8")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lengths_png(path: Path, pool: list[int], final: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4))
    data = [x for x in pool + final if x is not None]
    bins = np.histogram_bin_edges(data, bins=30) if data else 10
    if pool:
        ax.hist(pool, bins=bins, alpha=0.5, density=True, label=f"candidates (n={len(pool)})", color="#999999")
    if final:
        ax.hist(final, bins=bins, alpha=0.7, density=True, label=f"selected (n={len(final)})", color="#c8553d")
    ax.set_xlabel("thinking tokens (student tokens)")
    ax.set_ylabel("density")
    ax.set_title("Teacher trace length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stats(xs: list[int]) -> dict[str, Any]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "mean": round(sum(xs) / len(xs), 1), "median": xs[len(xs) // 2], "min": xs[0], "max": xs[-1]}


def build_report(cfg: CurationConfig, store: StageStore, result) -> dict[str, Any]:
    last = STAGES.index(cfg.until) if cfg.until else len(STAGES) - 1  # later markers may be stale
    stages = {s: (store.marker(s) or {}).get("stats", {}) for s in STAGES[: last + 1]}
    final_domains = Counter(_column(store.kept("select"), "domain"))
    pool_lengths = [x for x in _column(store.kept("domains"), "thinking_tokens") if x is not None]
    final_lengths = [x for x in _column(store.kept("select"), "thinking_tokens") if x is not None]
    return {
        "name": cfg.name,
        "output_dir": cfg.output_dir,
        "dataset_dir": str(store.dir("export")),
        "seed": cfg.selection.seed,
        "selection": cfg.selection.model_dump(),
        "executed": list(result.executed),
        "cached": list(result.skipped),
        "stages": {s: {k: v for k, v in st.items()} for s, st in stages.items() if st},
        "eval_sets": dict(getattr(result, "eval_sets", None) or {}),
        "counts_consistent": not check_counts(stages),
        "count_problems": check_counts(stages),
        "domains": {"pool": stages.get("domains", {}).get("domains", {}), "final": dict(final_domains.most_common())},
        "thinking_tokens": {"pool": _stats(pool_lengths), "final": _stats(final_lengths)},
        "config": json.loads(cfg.model_dump_json()),
        "_lengths": (pool_lengths, final_lengths),
    }


def _eval_sets_line(sets: dict[str, dict[str, str]]) -> str:
    used = ", ".join(f"{k} ({v})" for k, v in sets.get("used", {}).items()) or "none"
    skipped = ", ".join(f"{k} ({v})" for k, v in sets.get("skipped", {}).items())
    return f"Decontaminated against: {used}" + (f"; skipped: {skipped}" if skipped else "")


def _markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Curation report: {rep['name']}", "",
             f"Dataset: `{rep['dataset_dir']}`  ",
             f"Selection: {rep['selection']['method']}, size {rep['selection']['size']}, seed {rep['seed']}  ",
             f"Stages run: {', '.join(rep['executed']) or 'none'}; cached: {', '.join(rep['cached']) or 'none'}  ",
             f"Counts consistent: {'yes' if rep['counts_consistent'] else 'NO: ' + '; '.join(rep['count_problems'])}  ",
             _eval_sets_line(rep["eval_sets"]),
             "", "## Rows per stage", "", "| stage | in | out | rejected | reasons | s | rows/s |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for s, st in rep["stages"].items():
        rej = st.get("rejected", {})
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rej.items(), key=lambda kv: -kv[1])) or "-"
        out = st.get("rows_out", st.get("rows", ""))
        lines.append(f"| {s} | {st.get('rows_in', '')} | {out} | {sum(rej.values())} | {reasons} | "
                     f"{st.get('elapsed_s', '')} | {st.get('rows_per_s', '')} |")
    lines += ["", "## Domains", "", "| domain | candidates | selected |", "|---|---:|---:|"]
    pool, final = rep["domains"]["pool"], rep["domains"]["final"]
    for d in sorted(set(pool) | set(final), key=lambda d: (-final.get(d, 0), -pool.get(d, 0), d)):
        lines.append(f"| {d} | {pool.get(d, 0)} | {final.get(d, 0)} |")
    tt = rep["thinking_tokens"]
    lines += ["", "## Thinking tokens", "", "| | n | mean | median | min | max |", "|---|---:|---:|---:|---:|---:|"]
    for k in ("pool", "final"):
        s = tt[k]
        lines.append(f"| {k} | {s.get('n', 0)} | {s.get('mean', '')} | {s.get('median', '')} | {s.get('min', '')} | "
                     f"{s.get('max', '')} |")
    lines += ["", "![domains](domains.png)", "", "![trace lengths](trace_lengths.png)", "",
              "The full config is in report.json.", ""]
    return "\n".join(lines)


def write_report(cfg: CurationConfig, store: StageStore, result) -> str | Path:
    rep = build_report(cfg, store, result)
    pool_lengths, final_lengths = rep.pop("_lengths")
    final_dir = join_location(cfg.output_dir, "report")
    if isinstance(final_dir, Path):
        tmp = final_dir.parent / f".report.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
    else:  # object storage: written here, then uploaded
        tmp = Path(tempfile.mkdtemp(prefix="s1ray-curation-report-"))
    (tmp / "report.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
    (tmp / "report.md").write_text(_markdown(rep))
    final = rep["domains"]["final"] or rep["domains"]["pool"]
    top = sorted(final.items(), key=lambda kv: -kv[1])[:40]
    _hist_png(tmp / "domains.png", "Selected questions per domain" if rep["domains"]["final"] else "Candidates per domain",
              [k for k, _ in top], [v for _, v in top], "questions")
    _lengths_png(tmp / "trace_lengths.png", pool_lengths, final_lengths)
    replace_dir(tmp, final_dir)
    return final_dir

"""The pipeline's ``paper`` stage: the s1 paper's experiments on the miniature's student.

It runs after ``eval``, whose sweep (configs/pipeline/paper.yaml) already holds the test-time
methods and majority voting. This stage adds

* the extrapolation sweep: 0..6 forced Waits beyond the natural end, and other strings;
* the data ablation: one student per selection method, curated from a copy of the pipeline's
  curation (only selection and export rerun), trained with the same recipe, evaluated at one
  budget with budget forcing. The pipeline's own selection is its student already: that point
  joins the extrapolation sweep, so the one engine serves both;

then writes ``report.json``, ``report.md`` and the plots at the top of the work dir (the
sub-runs live under ``paper/``). Every sub-run resumes:
curation and SFT by their own markers, the sweeps by their sample logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s1ray.dataio import write_json_atomic, write_text_atomic
from s1ray.eval.config import BudgetSpec
from s1ray.pipeline.paper_report import build_report, render_markdown

if TYPE_CHECKING:
    from s1ray.pipeline.run import PipelineRunner

WHOLE_POOL = "all"


def extrapolation_budgets(p) -> list[dict[str, Any]]:
    """Budget specs of the extrapolation sweep: each Wait count with the format's string, then
    the string ablation at ``ablation_waits``."""
    x = p.extrapolation
    cap = x.max_thinking_tokens
    out = [{"max": cap, "num_waits": w} for w in x.waits]
    out += [{"max": cap, "num_waits": x.ablation_waits, "continuation": c} for c in x.continuations]
    return out


def _samples(res) -> list[dict]:
    from s1ray.eval.samples import read_samples

    return list(read_samples(res.output_dir))


def _curated_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _student(runner: "PipelineRunner", selection: str) -> tuple[str, int]:
    """Curate (selection only) and train one ablation student; (model dir, training rows)."""
    from s1ray.curation.pipeline import run_curation
    from s1ray.train.trainer import run as run_train

    home = runner.work / "paper" / "students" / selection
    cur_dir = home / "curation"
    if not cur_dir.exists():  # the pipeline's curation up to selection is this student's too
        shutil.copytree(runner.work / "curation", home / "curation.tmp", dirs_exist_ok=True)
        (home / "curation.tmp").rename(cur_dir)
    c = runner.curation_cfg()
    c.output_dir = str(cur_dir)
    if selection == WHOLE_POOL:
        c.selection = c.selection.model_copy(update={"method": "random", "size": 10**9})
    else:
        c.selection = c.selection.model_copy(update={"method": selection})
    run_curation(c)
    data = cur_dir / "dataset" / "s1k.parquet"
    t = runner.train_cfg()
    t.dataset.source = str(data)
    t.storage_path = str(home / "train")
    t.export_dir = str(home / "model")
    run_train(t)
    return str(home / "model"), _curated_rows(data)


def _ablation_eval(runner: "PipelineRunner", model: str, selection: str):
    from s1ray.eval.sweep import run_sweep

    p = runner.cfg.paper
    e = runner.eval_cfg(model, f"paper/ablation/{selection}")
    e = e.model_copy(update={"methods": ["budget_forcing"], "method_budgets": {}, "n_votes": [],
                             "budgets": [BudgetSpec.model_validate(p.data_ablation.budget)]})
    return run_sweep(e)


def run_paper(runner: "PipelineRunner") -> dict[str, Any]:
    from s1ray.eval.sweep import run_sweep

    cfg, p = runner.cfg, runner.cfg.paper
    out = runner.work
    model = str(runner.work / "model")
    ev = runner.eval_cfg(model, "eval")  # the eval stage's sweep: its samples are on disk
    main = run_sweep(ev)
    main_samples = _samples(main)
    n_curated = _curated_rows(runner.curated_path)
    own = cfg.curation.selection.method
    extra_budgets = [BudgetSpec.model_validate(b) for b in extrapolation_budgets(p)]
    extra_labels = {b.label for b in extra_budgets}
    ablation = BudgetSpec.model_validate(p.data_ablation.budget)
    if own in p.data_ablation.selections and ablation.label not in extra_labels:
        extra_budgets.append(ablation)
    e = runner.eval_cfg(model, "paper/extrapolation")
    e = e.model_copy(update={"methods": ["budget_forcing"], "method_budgets": {}, "n_votes": [],
                             "budgets": extra_budgets})
    swept = _samples(run_sweep(e))
    students = []
    for sel in p.data_ablation.selections:
        if sel == own:
            n, samples = n_curated, [s for s in swept if s["budget"] == ablation.label]
        else:
            m, n = _student(runner, sel)
            samples = _samples(_ablation_eval(runner, m, sel))
        students.append({"selection": sel, "n_train": n, "budget": p.data_ablation.budget, "samples": samples})
    meta = {"held-out problems": len({s["id"] for s in main_samples}),
            "student": f"{cfg.base_model.num_hidden_layers}-layer Qwen2, hidden {cfg.base_model.hidden_size}, "
                       f"trained from scratch on {n_curated} curated traces",
            "teacher": "the miniature's programmatic teacher with self-checks (s1ray/miniature/problems.py)",
            "decoding": f"greedy (voting and rejection sampling: temperature {ev.vote_temperature})"}
    extrapolated = [s for s in swept if s["budget"] in extra_labels]
    report = build_report(main_samples, ev.methods, ev.n_votes, extrapolated, students, meta)
    return write_paper(report, out, main.files.get("accuracy_vs_thinking.png"))


def write_paper(report: dict[str, Any], out: Path, methods_png: str | Path | None) -> dict[str, Any]:
    from s1ray.pipeline.paper_plots import plot_extrapolation, plot_parallel_vs_sequential

    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    if methods_png and Path(methods_png).is_file():
        shutil.copyfile(methods_png, out / "methods.png")
        plots["methods"] = "methods.png"
    plot_parallel_vs_sequential(report["parallel_vs_sequential"], out / "parallel_vs_sequential.png")
    plots["parallel_vs_sequential"] = "parallel_vs_sequential.png"
    plot_extrapolation(report["extrapolation"], out / "extrapolation.png")
    plots["extrapolation"] = "extrapolation.png"
    write_json_atomic(out / "report.json", report, indent=1)
    write_text_atomic(out / "report.md", render_markdown(report, plots))
    return {"report": str(out / "report.md"), "report_json": str(out / "report.json"),
            "plots": {k: str(out / v) for k, v in plots.items()}}

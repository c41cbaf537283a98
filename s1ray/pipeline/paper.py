"""The pipeline's ``paper`` stage: the s1 paper's experiments on the miniature's student.

It runs after ``eval``, whose sweep (configs/pipeline/paper.yaml) already holds the test-time
methods and majority voting. This stage adds

* the extrapolation sweep: 0..6 forced Waits beyond the natural end, and other strings;
* the data ablation: one student per selection method, curated from a copy of the pipeline's
  curation (only selection and export rerun), trained with the same recipe, evaluated at one
  budget with budget forcing. The pipeline's own selection is its student already: that point
  joins the extrapolation sweep, so the one engine serves both;

then writes ``report.json``, ``report.md`` and the plots at the top of the work dir (the
sub-runs live under ``paper/``). The work dir may be local, a shared mount or an ``s3://`` URI:
every path goes through :meth:`PipelineRunner.at` and the foundation's writers. Every sub-run
resumes: a student's copy of the curation by its marker, curation and SFT by their own markers,
the sweeps by their sample logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s1ray.dataio import atomic_write, copy_tree, join_location, local_copy, write_json_atomic, write_text_atomic
from s1ray.eval.config import BudgetSpec
from s1ray.pipeline.paper_report import build_report, render_markdown
from s1ray.storage import Location

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


def _curated_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(local_copy(str(path))).num_rows


COPIED = "curation.copied"  # written after a student's copy of the pipeline's curation is whole


def seed_curation(pipeline_curation: str | Path, home: str | Path) -> str | Path:
    """``home``/curation: a copy of the pipeline's curation (its stages up to selection are the
    student's too), made once; a copy cut short has no marker and is made again."""
    cur_dir = join_location(home, "curation")
    done = Location(home)
    if not done.exists(COPIED):
        copy_tree(pipeline_curation, cur_dir)
        done.write_text(COPIED, f"{pipeline_curation}\n")
    return cur_dir


def _student(runner: "PipelineRunner", selection: str) -> tuple[str, int]:
    """Curate (selection only) and train one ablation student; (model dir, training rows)."""
    from s1ray.curation.pipeline import run_curation
    from s1ray.train.trainer import run as run_train

    home = runner.at(f"paper/students/{selection}")
    cur_dir = seed_curation(runner.at("curation"), home)
    c = runner.curation_cfg()
    c.output_dir = str(cur_dir)
    if selection == WHOLE_POOL:
        c.selection = c.selection.model_copy(update={"method": "random", "size": 10**9})
    else:
        c.selection = c.selection.model_copy(update={"method": selection})
    run_curation(c)
    data = join_location(cur_dir, "dataset/s1k.parquet")  # curation's export layout
    t = runner.train_cfg()
    t.dataset.source = str(data)
    t.storage_path = str(join_location(home, "train"))
    t.export_dir = str(join_location(home, "model"))
    run_train(t)
    return t.export_dir, _curated_rows(data)


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
    model = str(runner.at("model"))
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


def write_paper(report: dict[str, Any], out: str | Path, methods_png: str | Path | None) -> dict[str, Any]:
    """The report and its plots in ``out`` (a local directory or a URI)."""
    from s1ray.pipeline.paper_plots import plot_extrapolation, plot_parallel_vs_sequential

    plots = {}
    if methods_png:  # the eval sweep's own plot, written by the run_sweep just before
        atomic_write(join_location(out, "methods.png"),
                     lambda tmp: shutil.copyfile(local_copy(str(methods_png)), tmp))
        plots["methods"] = "methods.png"
    plot_parallel_vs_sequential(report["parallel_vs_sequential"], join_location(out, "parallel_vs_sequential.png"))
    plots["parallel_vs_sequential"] = "parallel_vs_sequential.png"
    plot_extrapolation(report["extrapolation"], join_location(out, "extrapolation.png"))
    plots["extrapolation"] = "extrapolation.png"
    write_json_atomic(join_location(out, "report.json"), report, indent=1)
    write_text_atomic(join_location(out, "report.md"), render_markdown(report, plots))
    return {"report": str(join_location(out, "report.md")), "report_json": str(join_location(out, "report.json")),
            "plots": {k: str(join_location(out, v)) for k, v in plots.items()}}


"""The pipeline's terminal lines (pure): one summary per stage, the metrics table at the end."""

from s1ray.pipeline.report import final_lines, stage_summary


def test_stage_summaries_say_what_each_stage_made():
    cur = {"final_rows": 400, "dataset_dir": "w/curation/dataset",
           "stages": {"ingest": {"rows_in": 3000, "rows_out": 3000}, "select": {"rows_in": 483, "rows_out": 400}}}
    assert stage_summary("curation", cur) == ("3000 questions -> 400 selected; decontaminated against none; "
                                              "dataset w/curation/dataset")
    cur["eval_sets"] = {"used": {"miniature_heldout": 600},
                        "skipped": {"math500": "no local copy", "aime24": "no local copy", "gpqa": "disabled"}}
    assert stage_summary("curation", cur) == ("3000 questions -> 400 selected; decontaminated against "
                                              "miniature_heldout; skipped math500, aime24 (no local copy); "
                                              "skipped gpqa (disabled); dataset w/curation/dataset")
    assert stage_summary("train", {"metrics": {"step": 480, "loss": 0.03}, "export_dir": "w/model"}) == \
        "480 steps, loss 0.0300; model w/model"
    ev = {"trained": {"generated": 420, "failed": 0}, "untrained": {"generated": 420, "failed": 1}}
    assert stage_summary("eval", ev) == ("trained: 420 samples generated (0 failed); "
                                         "untrained: 420 samples generated (1 failed)")
    assert stage_summary("train", {}) == "? steps, loss ?; model None"  # a partial record does not raise
    assert stage_summary("serve", {"answer": "13", "reasoning": "1:1>5\n5:5>9\n9:9>13"}) == \
        "answered one chat request: thinking '1:1>5\\n5:5>9\\n9:9>13', answer '13'"


def test_final_lines_end_with_the_table_and_the_plot(tmp_path):
    (tmp_path / "metrics.md").write_text("# Evaluation: eval\n\n| budget | accuracy |\n|---|---|\n| 8 | 50% |\n")
    summary = {"work_dir": "w", "stages": {"eval": {"result": {
        "trained": {"files": {"metrics.md": str(tmp_path / "metrics.md"),
                              "accuracy_vs_thinking.png": "w/eval/accuracy_vs_thinking.png"}},
        "untrained": {"files": {"metrics.md": "w/eval_untrained/metrics.md"},
                      "methods": [{"dataset": "heldout", "method": "budget_forcing", "performance": 0.05,
                                   "control": 1.0}]}}}}}
    lines = final_lines(summary)
    assert "| 8 | 50% |" in lines and "plot: w/eval/accuracy_vs_thinking.png" in lines
    assert ("untrained: heldout budget_forcing: performance 5.0%, control 100.0% "
            "(table: w/eval_untrained/metrics.md)") in lines
    assert lines[-1] == "all outputs: w/summary.json"

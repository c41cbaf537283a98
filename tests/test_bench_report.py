"""bench/report.py renders docs/benchmarks.md from the benchmarks' JSON (figures are never typed)."""

import json
from pathlib import Path

from bench_modules import load_bench

ROOT = Path(__file__).resolve().parents[1]


def _report():
    return load_bench("report", "bench_report")


def test_a_result_becomes_a_stamped_section(tmp_path):
    report = _report()
    (tmp_path / "bench_train.json").write_text(json.dumps({
        "bench": "train", "date": "2026-12-01T22:00:00", "commit": "abc123def456", "machine": "CPU; 2 CPU cores",
        "ratios": {"packing on / off, tokens/s": 1.4567}, "table": [{"run": "on", "tokens_per_s": 7402.2}],
        "raw": {"not": "shown"}}))
    (tmp_path / "old.json").write_text(json.dumps({"ratio": 2.0}))
    text = report.render(tmp_path)
    assert "## train" in text and "commit `abc123def456`" in text and "CPU; 2 CPU cores" in text
    assert "| packing on / off, tokens/s | 1.46x |" in text
    assert "| on | 7,402 |" in text and "not" not in text.split("## train")[1].split("##")[0].replace("not recorded", "")
    assert "## old" in text and "commit `not recorded`" in text and "has no `ratios`" in text


def test_the_checked_in_page_is_what_the_results_render():
    report = _report()
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(ROOT / "bench" / "results"), \
        "docs/benchmarks.md is stale: run python bench/report.py"

"""bench/gpu_check.sh: the shell wrapper parses, and its torch part runs on the CPU with tiny
shapes (--dry-run), writing the one JSON with every part measured or skipped with a reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench_modules import load_bench

ROOT = Path(__file__).resolve().parents[1]


def load():
    return load_bench("gpu_check", "gpu_check")


def test_the_wrapper_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")]).returncode == 0


def test_dry_run_measures_both_losses_and_records_what_it_skipped(tmp_path, monkeypatch):
    gc = load()
    real = gc.installed
    monkeypatch.setattr(gc, "installed", lambda name: False if name == "deepspeed" else real(name))
    assert gc.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    loss = report["loss"]
    assert loss["status"] == "measured" and loss["device"] == "cpu"
    assert [(r["tokens"], r["impl"], r["status"]) for r in loss["rows"]] == [
        (t, i, "measured") for t in gc.DRY_SHAPE["tokens"] for i in ("logits", "fused_chunked")]
    assert all(r["time_s"] > 0 for r in loss["rows"])
    assert [r["tokens"] for r in loss["ratios"]] == gc.DRY_SHAPE["tokens"]
    assert all(r["loss_rel_diff"] < 1e-3 for r in loss["ratios"])  # the two losses agree
    assert report["train"] == {"status": "skipped", "why": "not installed: deepspeed"}
    assert all(report[p]["status"] == "skipped" and report[p]["why"] for p in ("engine", "traces"))


def test_without_cuda_the_loss_is_skipped_not_faked(tmp_path, monkeypatch):
    gc = load()
    monkeypatch.setattr(gc, "installed", lambda name: False)  # no sub-bench may start here
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["loss"] == {"status": "skipped", "why": "no CUDA device"}
    assert report["engine"] == {"status": "skipped", "why": "not installed: vllm"}
    assert report["traces"] == {"status": "skipped", "why": "not installed: vllm, ray"}

"""A newcomer's checkout: the miniature's curation runs with nothing beside the checkout (no
../shared), no S1RAY_DATA_DIR and the HF hub offline, exactly as the README runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


def checkout_copy(dest: Path) -> Path:
    """What a clone has: the files git tracks or would track (not .venv, runs/, .tiny/, caches)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes(src.read_bytes())
    return dest


def newcomer_env(clone: Path, tmp: Path) -> dict[str, str]:
    drop = {"S1RAY_DATA_DIR", "S1RAY_STORAGE", "RAY_ADDRESS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf"),
               RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.mark.timeout(3000)  # generous: a crowded machine takes many times an idle one
def test_miniature_curation_runs_from_a_plain_clone(tmp_path):
    clone = checkout_copy(tmp_path / "s1ray")
    assert not (clone.parent / "shared").exists() and not (clone / ".venv").exists()
    job = subprocess.Popen([sys.executable, "jobs/curate.py", "--config", "configs/curation/miniature.yaml"],
                           cwd=clone, env=newcomer_env(clone, tmp_path), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = job.communicate(timeout=2900)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr[-3000:]
    assert "curated 300 rows" in stdout, stdout[-2000:]  # the CLI's one summary line
    summary = json.loads((clone / "runs/curation/miniature/report/report.json").read_text())
    # the pool is decontaminated against its own held-out problems; MATH500/AIME24 are skipped, and said so
    assert summary["eval_sets"]["used"] == {"heldout": "the miniature's held-out problems"}
    assert set(summary["eval_sets"]["skipped"]) == {"math500", "aime24"}
    assert "S1RAY_DATA_DIR" in summary["eval_sets"]["skipped"]["math500"]
    report = (clone / "runs/curation/miniature/report/report.md").read_text()
    assert "Decontaminated against: heldout (the miniature's held-out problems); skipped: math500" in report
    assert (clone / "runs/curation/miniature/dataset/s1k.parquet").is_file()

"""s1 in miniature, end to end on the CPU: curation -> SFT (Ray Train + DeepSpeed) -> budget
forcing sweep on held-out problems -> Serve. Real Ray, DeepSpeed and vLLM throughout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

# The whole miniature (SFT included) runs once, in the module fixture; the timeout leaves room for a busy machine.
pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(2700)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    from s1ray.config import load_config
    from s1ray.pipeline.config import PipelineConfig
    from s1ray.pipeline.run import PipelineRunner

    work = tmp_path_factory.mktemp("miniature")
    cfg = load_config(PipelineConfig, ROOT / "configs/pipeline/miniature.yaml", [f"work_dir={work}"])
    runner = PipelineRunner(cfg)
    try:
        summary = runner.run()
        yield runner, summary, work
    finally:
        import ray

        ray.shutdown()  # the stages started a local Ray; later test modules start their own


def test_every_stage_ran_and_counts_are_consistent(miniature):
    runner, summary, work = miniature
    assert list(summary["stages"]) == ["base_model", "curation", "heldout", "train", "eval", "serve"]
    cur = summary["stages"]["curation"]["result"]
    stages = cur["stages"]
    names = list(stages)
    for a, b in zip(names, names[1:]):
        assert stages[a]["rows_out"] == stages[b]["rows_in"], (a, b)
    assert cur["final_rows"] == 400
    import pyarrow.parquet as pq

    curated = pq.read_table(runner.curated_path)
    assert curated.num_rows == 400
    heldout = [json.loads(line) for line in runner.heldout_path.read_text().splitlines()]
    assert len(heldout) == 60
    assert not {h["question"] for h in heldout} & set(curated.column("question").to_pylist())
    train = summary["stages"]["train"]["result"]
    assert train["data"]["kept"] == 400
    assert (work / "model" / "config.json").exists()
    ev = summary["stages"]["eval"]["result"]
    for side in ("trained", "untrained"):
        out = Path(ev[side]["output_dir"])
        for f in ("samples.jsonl", "metrics.md", "metrics.csv", "accuracy_vs_thinking.png"):
            assert (out / f).exists(), (side, f)
        assert ev[side]["failed"] == 0
    assert summary["stages"]["serve"]["result"]["answer"] is not None


def test_trained_beats_untrained_and_accuracy_rises_with_budget(miniature):
    _, summary, _ = miniature
    ev = summary["stages"]["eval"]["result"]
    trained = sorted(ev["trained"]["points"], key=lambda p: p["max_thinking_tokens"])
    untrained = sorted(ev["untrained"]["points"], key=lambda p: p["max_thinking_tokens"])
    assert trained[-1]["accuracy"] > untrained[-1]["accuracy"] + 0.2, (trained, untrained)
    # Accuracy at the largest budget exceeds accuracy at the smallest: thinking helps.
    assert trained[-1]["accuracy"] > trained[0]["accuracy"] + 0.2
    control = [m for m in ev["trained"]["methods"] if m["method"] == "budget_forcing"][0]
    assert control["control"] == 1.0


def test_each_stage_has_its_log_and_no_line_shows_twice(miniature):
    _, summary, work = miniature
    for stage in summary["stages"]:
        assert (work / "logs" / f"{stage}.log").is_file(), stage
    train_log = (work / "logs" / "train.log").read_text()
    steps = [ln for ln in train_log.splitlines() if re.search(r"\bstep \d+/\d+ loss ", ln)]
    assert steps, "rank 0's per-step lines are missing from the train log"
    assert len(steps) == len(set(steps)), "a step line was printed twice"


def test_the_same_model_and_seed_give_the_same_samples(miniature):
    """Evaluation is deterministic: a second sweep of the trained model, into a fresh directory,
    writes the same answer and thinking length for every (method, budget, question)."""
    from s1ray.eval.samples import read_samples
    from s1ray.eval.sweep import run_sweep

    runner, summary, work = miniature
    first = summary["stages"]["eval"]["result"]["trained"]["output_dir"]
    again = run_sweep(runner.eval_cfg(str(work / "model"), "eval_again"))
    key = lambda s: (s["method"], s["budget"], s["id"])  # noqa: E731
    fields = ("answer", "extracted", "thinking_tokens", "answer_tokens", "num_waits", "forced_end", "correct")
    a = {key(s): tuple(s.get(f) for f in fields) for s in read_samples(first)}
    b = {key(s): tuple(s.get(f) for f in fields) for s in read_samples(again.output_dir)}
    assert len(a) == 420 and a == b

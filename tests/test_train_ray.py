"""The real SFT job on a local Ray cluster: 2 CPU workers, DeepSpeed ZeRO-3, the tiny Qwen2.

One module-scoped pair of runs on the same 16-example dataset (8 steps, checkpoints at steps 3,
4 (epoch), 6, 8):
* ``clean``: uninterrupted -- the loss falls, the model is exported;
* ``faulty``: rank 1 raises once after step 5 (test-only ``fault_injection``, fires once thanks
  to its marker file); Ray Train restarts the worker group (``FailureConfig``), which resumes from
  the step-4 checkpoint and recomputes steps 5-8. Deterministic mode: every per-step loss equals
  the clean run's exactly, and so do the exported weights.
The export is then served by the project's vLLM engine in a subprocess (Ray is down by then).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
# DeepSpeed JIT-builds its CPU shm comm op on first use (~35 s); cache it across test runs.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


def _meta(run) -> dict:
    return json.loads((Path(run.checkpoint) / "s1ray_meta.json").read_text())


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    import ray

    from s1ray.train.config import TrainConfig
    from s1ray.train.toy import write_toy_dataset
    from s1ray.train.trainer import run

    tmp = tmp_path_factory.mktemp("train")
    base = dict(
        model=tiny_model_dir,
        dataset={"source": str(write_toy_dataset(tmp / "toy.jsonl", 16))},
        block_size=512,
        num_workers=2,
        use_gpu=False,
        global_batch_size=4,  # 2 workers x micro 1 x grad accumulation 2
        epochs=2,
        lr=1e-3,
        warmup_ratio=0.1,
        storage_path=str(tmp / "runs"),
        checkpoint_every_steps=3,
        deterministic=True,
        zero_stage=3,
        bf16=True,
        max_failures=1,
        logging={"report_every": 5},  # reports at steps 3, 4, 6, 8 (checkpoints) and 5
        torch_extensions_dir=os.environ["TORCH_EXTENSIONS_DIR"],
    )
    marker = tmp / "fault.marker"
    # The clean run also logs to MLflow's offline store (a file: URI), read back below.
    mlruns = f"file:{tmp / 'mlruns'}"
    clean_logging = {**base["logging"], "mlflow": {"tracking_uri": mlruns, "experiment": "s1ray-test"}}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2)
    try:
        clean = run(TrainConfig(name="clean", **{**base, "logging": clean_logging}))
        faulty = run(TrainConfig(name="faulty", fault_injection={"step": 5, "rank": 1, "marker": str(marker)}, **base))
    finally:
        ray.shutdown()
    return {"clean": clean, "faulty": faulty, "marker": marker, "mlruns": mlruns}


def test_loss_decreases_and_metrics_are_reported(runs):
    clean = runs["clean"]
    hist = _meta(clean)["history"]
    losses = [h["loss"] for h in hist]
    assert [h["step"] for h in hist] == list(range(1, 9))
    assert losses[-1] < losses[0] - 0.5 and sum(losses[-2:]) < sum(losses[:2])
    m = clean.metrics
    assert m["step"] == 8 and m["total_steps"] == 8
    for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        assert m[k] > 0, k
    assert m["peak_source"] == "assumed"
    # the last report (step 8) covers the steps since the step-6 checkpoint's report
    assert m["window_steps"] == 2 and m["window_loss"] == pytest.approx(sum(losses[-2:]) / 2)
    assert m["window_tokens_per_s"] > 0
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert clean.data_stats["kept"] == 16 and clean.data_stats["overlong"] == 0


def test_per_step_metrics_land_in_mlflow(runs, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens a file: store only when asked to

    client = MlflowClient(tracking_uri=runs["mlruns"])
    exp = client.get_experiment_by_name("s1ray-test")
    assert exp is not None, "the run never reached MLflow"
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.run_name == "clean" and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["zero_stage"] == "3"
    history = _meta(runs["clean"])["history"]
    for key in ("loss", "grad_norm", "lr"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, key))
        assert logged == [(h["step"], pytest.approx(h[key])) for h in history], key
    assert {m.step for m in client.get_metric_history(mlrun.info.run_id, "tokens_per_s")} == set(range(1, 9))


def test_fault_resumes_from_checkpoint_with_identical_losses(runs):
    clean, faulty = _meta(runs["clean"]), _meta(runs["faulty"])
    assert runs["marker"].exists(), "the injected fault never fired"
    assert faulty["resumed_from"] == [4]  # restarted once, from the epoch-end checkpoint at step 4
    assert [h["step"] for h in faulty["history"]] == list(range(1, 9))
    assert [h["loss"] for h in faulty["history"]] == [h["loss"] for h in clean["history"]]
    assert [h["grad_norm"] for h in faulty["history"]] == [h["grad_norm"] for h in clean["history"]]


def test_export_is_an_hf_model_equal_across_runs(runs):
    import torch
    from safetensors.torch import load_file

    a, b = Path(runs["clean"].export_dir), Path(runs["faulty"].export_dir)
    for d in (a, b):
        assert {"config.json", "model.safetensors", "tokenizer.json", "s1ray_export.json"} <= {p.name for p in d.iterdir()}
        assert (d / "chat_template.jinja").exists() or "chat_template" in (d / "tokenizer_config.json").read_text()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert next(iter(wa.values())).dtype == torch.bfloat16
    assert json.loads((a / "s1ray_export.json").read_text())["step"] == 8


SERVE = textwrap.dedent(
    """
    import asyncio, json, sys

    from s1ray.engine.budget import ThinkingBudget
    from s1ray.engine.types import EngineConfig, GenerationRequest
    from s1ray.engine.vllm_engine import BudgetEngine


    async def main(model):
        eng = await BudgetEngine.create(EngineConfig(model=model, max_model_len=1024, enforce_eager=True, cpu_kv_cache_gib=1))
        try:
            r = await eng.generate(GenerationRequest(
                messages=[{"role": "user", "content": "What is 12 + 30?"}],
                budget=ThinkingBudget(min_tokens=8, max_tokens=16, max_answer_tokens=8)))
        finally:
            eng.shutdown()
        print("RESULT " + json.dumps(r.to_dict()))


    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.vllm
def test_export_serves_with_the_vllm_budget_engine(runs, tmp_path):
    script = tmp_path / "serve_export.py"
    script.write_text(SERVE)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run(
        [sys.executable, str(script), runs["clean"].export_dir], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    r = json.loads(lines[-1][len("RESULT "):])
    assert 8 <= r["thinking_tokens"] <= 16 and r["answer_tokens"] >= 1

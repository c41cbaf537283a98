"""``s1ray plan``: every shipped config plans with every term, s1's 32B history comes out of the
arithmetic, a config that cannot fit is told which term breaks it, and the activation and
logits terms agree with torch's own memory accounting of a real CPU training step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s1ray.config import load_config
from s1ray.plan.configs import plan_config
from s1ray.plan.report import format_plans, verdict
from s1ray.plan.shapes import PlanError, resolve_shape
from s1ray.plan.stages import PlanOptions
from s1ray.registry import config_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*/*.yaml"))
GIB = 1024**3
# The plan's activation + logits/loss terms against MemTracker's measurement of the same step.
MEASURED_TOLERANCE = 0.15


def _plan(path: Path, overrides=(), **opts):
    kind = path.parent.name
    return plan_config(kind, load_config(config_model(kind), path, list(overrides)), PlanOptions(**opts))


def _term(plan, prefix: str):
    return next(t for t in plan.terms if t.name.startswith(prefix))


@pytest.fixture
def in_tiny_checkout(tmp_path, monkeypatch, tiny_model_dir):
    """A working directory whose .tiny/model is the tiny model, as the tiny configs expect."""
    (tmp_path / ".tiny").mkdir()
    (tmp_path / ".tiny" / "model").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_plans_with_every_term(path, in_tiny_checkout):
    plans = _plan(path)
    assert plans and "verdict:" in format_plans(plans)
    for p in plans:
        assert p.resources and p.bundles >= 1
        names = " | ".join(t.name for t in p.terms)
        if p.kind == "train":
            for needle in ("weights", "gradients", "optimizer", "activation", "logits/loss buffer"):
                assert needle in names, (p.stage, needle, names)
            if p.capacity_bytes and "GPU" in p.resources:
                assert "runtime overhead" in names
            assert p.estimates and p.estimates[0].hours > 0 and p.estimates[0].source
        elif p.kind == "engine":
            assert "weights" in names and "KV cache" in names
            assert p.kv_sequences is not None and p.kv_sequences > 0
        assert all(t.bytes >= 0 and t.source for t in p.terms)


S1_TRAIN = ROOT / "configs/train/s1_32b.yaml"


def test_s1_32b_on_16_h100_fits_only_with_the_fused_loss():
    (fused,) = _plan(S1_TRAIN)
    assert fused.fits and "fused" in _term(fused, "logits/loss").name
    (plain,) = _plan(S1_TRAIN, ["loss_impl=logits"])
    assert not plain.fits
    assert plain.breaking_term().name.startswith("logits/loss buffer")
    assert "logits/loss buffer" in verdict(plain) and "DOES NOT FIT" in verdict(plain)
    # the full logits of one 32,768-token sequence: 3 bf16 copies of 32768 x 152064, ~30 GB
    assert _term(plain, "logits/loss").bytes == pytest.approx(3 * 2 * 32768 * 152064 + 12 * 1024 * 152064)
    # s1.1's block of 20,000 fits without the fused loss, as its run did
    (s11,) = _plan(S1_TRAIN, ["loss_impl=logits", "block_size=20000"])
    assert s11.fits


def test_model_states_are_deepspeeds_estimate_split_into_terms():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from s1ray.plan.train_memory import model_state_terms

    s = resolve_shape("Qwen/Qwen2.5-32B-Instruct")
    for offload in (False, True):
        z3 = sum(t.bytes for t in model_state_terms(s, 3, 16, offload, True))
        ds3 = estimate_zero3_model_states_mem_needs(s.total_params, s.largest_layer_params, 16, 1, offload, False)[1]
        assert abs(z3 - ds3) <= 16
        z2 = sum(t.bytes for t in model_state_terms(s, 2, 16, offload, True))
        assert abs(z2 - estimate_zero2_model_states_mem_needs(s.total_params, 16, 1, offload)[1]) <= 16


def test_a_config_that_cannot_fit_names_the_term(tmp_path):
    (two,) = _plan(S1_TRAIN, ["num_workers=2"])
    assert not two.fits and two.breaking_term().name.startswith("optimizer")
    assert "optimizer" in verdict(two)
    (engine,) = _plan(ROOT / "configs/engine/s1_32b.yaml", ["tensor_parallel_size=1"], gpu="A10G")
    assert not engine.fits and "DOES NOT FIT" in verdict(engine)
    (long,) = _plan(ROOT / "configs/engine/s1_32b.yaml", ["max_model_len=65536"])
    assert not long.fits and "max_position_embeddings" in verdict(long)


def test_cli_prints_the_verdict_and_strict_exits_1():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "s1ray.cli", "plan", "--config", str(S1_TRAIN)]
    ok = subprocess.run(base, capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "verdict: fits" in ok.stdout and "26.0 min" in ok.stdout and "s1 paper" in ok.stdout
    bad = subprocess.run([*base, "--strict", "loss_impl=logits"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 1 and "DOES NOT FIT" in bad.stdout and "logits/loss buffer" in bad.stdout
    typo = subprocess.run([*base, "block_sise=1"], capture_output=True, text=True, env=env, timeout=600)
    assert typo.returncode == 2 and "block_sise" in typo.stderr and "Traceback" not in typo.stderr


def test_a_model_without_a_reachable_config_json_is_an_error_naming_the_field(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PlanError, match=r"^model: no config.json for 'nobody/no-such-model'"):
        _plan(S1_TRAIN, ["model=nobody/no-such-model"])
    with pytest.raises(PlanError, match=r"^eval.engine.model: .*'\./missing'"):
        _plan(ROOT / "configs/pipeline/s1_32b.yaml", ["stages=[eval]", "eval.engine.model=./missing"])


def test_shipped_shapes_count_the_published_parameters(tiny_model_dir):
    assert resolve_shape("Qwen/Qwen2.5-32B-Instruct").total_params == pytest.approx(32.76e9, rel=2e-3)
    assert resolve_shape("Qwen/Qwen2.5-7B-Instruct").total_params == pytest.approx(7.62e9, rel=2e-3)
    assert resolve_shape("Qwen/Qwen2.5-0.5B-Instruct").total_params == pytest.approx(0.494e9, rel=2e-3)
    assert "base" in resolve_shape("simplescaling/s1.1-32B").source
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert resolve_shape(tiny_model_dir).total_params == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize(
    "dims,impl,checkpointing",
    [
        ({}, "fused_chunked", True),  # the tiny model: logits-dominated
        ({}, "logits", True),
        ({}, "fused_chunked", False),
        ({"vocab_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}, "fused_chunked", True),  # layers
    ],
    ids=["tiny-fused", "tiny-logits", "tiny-fused-nockpt", "layer-heavy-fused"],
)
def test_planned_activations_match_torchs_measurement_of_a_cpu_step(tiny_model_dir, dims, impl, checkpointing):
    from s1ray.plan.measure import build_model, measure_train_step
    from s1ray.plan.shapes import ModelShape
    from s1ray.plan.train_memory import activation_terms

    base = resolve_shape(tiny_model_dir)
    shape = ModelShape(**{**base.__dict__, **dims})
    seq, chunk = 512, 128
    planned = sum(t.bytes for t in activation_terms(shape, seq, checkpointing, impl, chunk, 2) if t.counted)
    measured = measure_train_step(build_model(shape, "bfloat16"), seq, impl, chunk, checkpointing)
    print(f"{dims or 'tiny'} {impl} ckpt={checkpointing}: planned {planned / 2**20:.2f} MiB, "
          f"measured {measured.activation_bytes / 2**20:.2f} MiB")
    assert measured.activation_bytes == pytest.approx(planned, rel=MEASURED_TOLERANCE)


def test_kv_cache_per_token_splits_over_tensor_parallelism_and_replicates_past_the_kv_heads():
    from s1ray.plan.engine_memory import kv_bytes_per_token_per_gpu

    s = resolve_shape("Qwen/Qwen2.5-32B-Instruct")  # 64 layers, 8 KV heads of 128
    assert kv_bytes_per_token_per_gpu(s, 1) == 2 * 64 * 8 * 128 * 2 == s.kv_bytes_per_token()
    assert kv_bytes_per_token_per_gpu(s, 8) == 32 * 1024
    assert kv_bytes_per_token_per_gpu(s, 16) == 32 * 1024  # fewer KV heads than GPUs: replicated
    (tp8,) = _plan(ROOT / "configs/engine/s1_32b.yaml")
    (tp4,) = _plan(ROOT / "configs/engine/s1_32b.yaml", ["tensor_parallel_size=4"])
    assert tp8.kv_sequences > 2 * tp4.kv_sequences  # half the KV per GPU and twice the weights each

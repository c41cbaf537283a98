"""TrainConfig validation, the DeepSpeed config derived from it, the LR schedule, FLOP accounting
and checkpoint completeness markers (no Ray cluster, no DeepSpeed engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s1ray.config import ConfigError, load_config
from s1ray.train.config import TrainConfig
from s1ray.train.ds_config import build_ds_config
from s1ray.train.optim import WarmupCosine

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": "m", "dataset": {"source": "d.jsonl"}}


def cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate({**BASE, **kw})


def test_defaults_are_s1s_recipe():
    c = cfg()
    assert (c.epochs, c.lr, c.warmup_ratio, c.adam_betas, c.weight_decay) == (5, 1e-5, 0.05, (0.9, 0.95), 1e-4)
    assert (c.global_batch_size, c.micro_batch_size, c.block_size, c.bf16, c.gradient_checkpointing) == (
        16, 1, 32768, True, True,
    )


def test_shipped_configs(tmp_path):
    big = load_config(TrainConfig, ROOT / "configs/train/s1_32b.yaml")
    assert (big.model, big.num_workers, big.zero_stage, big.use_gpu) == ("Qwen/Qwen2.5-32B-Instruct", 16, 3, True)
    assert (big.dataset.source, big.dataset.thinking_field, big.dataset.attempt_field) == (
        "simplescaling/s1K-1.1", "deepseek_thinking_trajectory", "deepseek_attempt",
    )
    assert big.grad_accum_steps == 1
    tiny = load_config(TrainConfig, ROOT / "configs/train/tiny_cpu.yaml", ["max_steps=2"])
    assert (tiny.num_workers, tiny.use_gpu, tiny.zero_stage, tiny.block_size, tiny.max_steps) == (2, False, 3, 512, 2)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["global_batch_size=10", "num_workers=4"], "global_batch_size (10) must be divisible by num_workers (4) x micro_batch_size (1)"),
        (["global_batch_size=16", "num_workers=4", "micro_batch_size=3"], "global_batch_size (16)"),
        (["zero_stage=1"], "zero_stage"),
        (["format=xml"], "format: Value error, unknown reasoning format"),
        (["lr=0"], "lr: Input should be greater than 0"),
        (["warmup_ratio=1.5"], "warmup_ratio"),
        (["adam_betas=[0.9, 1.5]"], "adam_betas"),
        (["overlong=cut"], "overlong"),
        (["epochs=0"], "epochs"),
        (["use_gpu=false", "attn_implementation=flash_attention_2"], "flash_attention_2 needs use_gpu"),
        (["dataset.sourse=x"], "dataset.sourse: unknown field"),
        (["fault_injection.step=3", "fault_injection.marker=/tmp/x", "fault_injection.rank=20"], "fault_injection.rank"),
    ],
)
def test_errors_name_the_field(tmp_path, overrides, needle):
    f = tmp_path / "t.yaml"
    f.write_text("model: m\ndataset: {source: d.jsonl}\n")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, f, overrides)
    assert needle in str(e.value)


def test_missing_model_and_dataset():
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [])
    assert "model: Field required" in str(e.value) and "dataset: Field required" in str(e.value)


def test_ds_config_derivation():
    c = cfg(num_workers=16, global_batch_size=16, micro_batch_size=1, zero_stage=3)
    ds = build_ds_config(c, 16, hidden_size=5120)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 1, 1)
    assert ds["gradient_clipping"] == 1.0 and ds["bf16"] == {"enabled": True}
    z = ds["zero_optimization"]
    assert z["stage"] == 3 and z["stage3_gather_16bit_weights_on_model_save"] and "offload_optimizer" not in z
    assert z["reduce_bucket_size"] == 5120**2
    opt = ds["optimizer"]
    assert opt["type"] == "AdamW"
    assert opt["params"] == {"lr": 1e-5, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4, "torch_adam": True, "fused": True}
    # grad accumulation = global / (world x micro); world comes from the cluster, not the config
    c2 = cfg(num_workers=2, global_batch_size=16, micro_batch_size=2, zero_stage=2, offload_optimizer=True, use_gpu=False, bf16=False)
    ds2 = build_ds_config(c2, 2)
    assert ds2["gradient_accumulation_steps"] == 4 and ds2["bf16"] == {"enabled": False}
    assert ds2["zero_optimization"]["stage"] == 2
    assert ds2["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert "torch_adam" not in ds2["optimizer"]["params"]  # offload: DeepSpeedCPUAdam
    with pytest.raises(ValueError, match="divisible"):
        build_ds_config(c2, 3)


def test_warmup_cosine_reaches_zero():
    total = 315  # s1: 5 epochs x 1000 examples / 16
    c = cfg()
    w = c.warmup_steps(total)
    assert w == 16  # ceil(315 x 0.05)
    s = WarmupCosine(total, w)
    assert s(0) == 0.0 and s(w // 2) == pytest.approx(0.5, abs=0.05) and s(w) == 1.0
    assert s(total) == 0.0 and 0 < s(total - 1) < 1e-3
    vals = [s(i) for i in range(w, total + 1)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # monotone decay
    assert s((w + total) / 2) == pytest.approx(0.5)
    assert WarmupCosine(10, 0)(0) == 1.0


def test_flop_accounting_matches_the_tiny_model(tiny_model_dir):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from s1ray.train.optim import param_groups
    from s1ray.train.modeling import matmul_params, peak_tflops, step_flops

    conf = AutoConfig.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())  # tied: the LM head is the embedding
    norms_and_biases = sum(p.numel() for p in model.parameters() if p.ndim < 2)
    assert matmul_params(conf) == total - norms_and_biases  # embedding counted once, as the LM head
    n = matmul_params(conf)
    assert step_flops(conf, [100]) == pytest.approx(6 * n * 100 + 6 * conf.num_hidden_layers * conf.hidden_size * 100**2)
    assert peak_tflops(None, False) == (1.0, "assumed") and peak_tflops(0.2, False) == (0.2, "config")
    groups = param_groups(model, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])


# -- checkpoint completeness ------------------------------------------------------------------
def _fake_ckpt(root: Path, step: int, world: int = 2) -> Path:
    from s1ray.train import checkpoint as ck

    d = root / f"checkpoint_{step:04d}"
    for r in range(world):
        rank_dir = root / f"tmp_{step}_{r}"  # each rank writes its own dir; Ray merges them
        (rank_dir / "ds").mkdir(parents=True)
        (rank_dir / "ds" / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt").write_bytes(b"x" * (10 + r))
        if r == 0:
            (rank_dir / "latest").write_text("ds")
            ck.write_meta(rank_dir, {"step": step, "world_size": world, "history": []})
        ck.write_marker(rank_dir, r)
        for p in rank_dir.rglob("*"):
            if p.is_file():
                dest = d / p.relative_to(rank_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(p.read_bytes())
    return d


def test_checkpoint_markers_and_fallback(tmp_path):
    from ray.train import Checkpoint

    from s1ray.train import checkpoint as ck

    old, new = _fake_ckpt(tmp_path, 2), _fake_ckpt(tmp_path, 4)
    found, meta = ck.find_complete(Checkpoint(str(new)))
    assert found.path == str(new) and meta["step"] == 4
    # rank 1's shard truncated (a partial upload): never used; the older complete one is
    (new / "ds" / "zero_pp_rank_1_mp_rank_00_model_states.pt").write_bytes(b"x")
    with pytest.raises(ck.IncompleteCheckpoint, match="zero_pp_rank_1"):
        ck.validate(found.filesystem, str(new))
    found, meta = ck.find_complete(Checkpoint(str(new)))
    assert found.path == str(old) and meta["step"] == 2
    # a missing marker is incomplete too; nothing complete left -> start from scratch
    (old / ck.marker_name(1)).unlink()
    assert ck.find_complete(Checkpoint(str(new))) == (None, None)


def test_fetch_for_rank_downloads_only_its_shards(tmp_path, monkeypatch):
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from s1ray.train import checkpoint as ck

    src = _fake_ckpt(tmp_path / "remote", 6, world=3)
    # a non-local filesystem (SubTree over local) takes the selective-download path
    remote = pafs.SubTreeFileSystem(str(src.parent), pafs.LocalFileSystem())
    c = Checkpoint(src.name, filesystem=remote)
    assert not ck.is_local(c)
    out = Path(ck.fetch_for_rank(c, 1, tmp_path / "local"))
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "ds/zero_pp_rank_1_mp_rank_00_model_states.pt" in got
    assert not any("rank_0_" in g or "rank_2_" in g for g in got)
    assert "latest" in got and ck.META_FILE in got


def _job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_sft", ROOT / "jobs" / "train_sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_job_exit_codes_and_dry_run(tiny_model_dir, tmp_path, capsys):
    job = _job()
    cfgfile = ROOT / "configs/train/tiny_cpu.yaml"
    data = tmp_path / "toy.jsonl"
    common = [f"model={tiny_model_dir}", f"dataset.source={data}"]
    assert job.main(["--config", str(cfgfile), *common, "num_workers=3"]) == 2
    assert "global_batch_size (4) must be divisible by num_workers (3)" in capsys.readouterr().err
    assert job.main(["--config", str(cfgfile), *common, "--dry-run"]) == 2  # no data yet
    assert "does not exist" in capsys.readouterr().err
    assert job.main(["--config", str(cfgfile), *common, "--toy-data", "8", "--dry-run", "block_size=100"]) == 0
    out = capsys.readouterr().out
    assert "8 examples" in out and "longer than block_size 100 (" in out and "dropped" in out

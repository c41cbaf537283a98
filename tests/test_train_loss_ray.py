"""The fused chunked loss inside the real SFT job (Ray Train, 2 CPU workers, DeepSpeed ZeRO-3,
where the LM head's weight is partitioned and gathered on each chunk's call): the same per-step
losses and gradient norms as the full-logits loss."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


def test_fused_loss_trains_like_the_logits_loss_under_zero3(tiny_model_dir, tmp_path):
    import ray

    from s1ray.train.config import TrainConfig
    from s1ray.train.toy import write_toy_dataset
    from s1ray.train.trainer import run

    base = dict(
        model=tiny_model_dir, dataset={"source": str(write_toy_dataset(tmp_path / "toy.jsonl", 8))},
        block_size=512, num_workers=2, use_gpu=False, global_batch_size=4, epochs=1, max_steps=2, lr=1e-3,
        warmup_ratio=0.0, storage_path=str(tmp_path / "runs"), deterministic=True, zero_stage=3, bf16=False,
        max_failures=0, logging={"report_every": 2}, torch_extensions_dir=os.environ["TORCH_EXTENSIONS_DIR"],
        loss_chunk_size=64,
    )
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2)
    try:
        hist = {}
        for impl in ("fused_chunked", "logits"):
            res = run(TrainConfig(name=impl, loss_impl=impl, **base))
            assert res.error is None, res.error
            hist[impl] = json.loads((Path(res.checkpoint) / "s1ray_meta.json").read_text())["history"]
    finally:
        ray.shutdown()
    fused, plain = hist["fused_chunked"], hist["logits"]
    assert [h["step"] for h in fused] == [1, 2]
    for a, b in zip(fused, plain):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)

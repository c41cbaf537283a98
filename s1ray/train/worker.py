"""A training worker's process setup: environment variables (before torch or DeepSpeed is first
imported), seeds, the attention implementation, and the test-only fault injection."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from s1ray.train.config import TrainConfig


def resolve_attn(cfg: TrainConfig) -> str:
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if cfg.use_gpu:
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def worker_env(cfg: TrainConfig) -> None:
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if cfg.torch_extensions_dir:
        os.environ["TORCH_EXTENSIONS_DIR"] = cfg.torch_extensions_dir
    if cfg.deterministic and cfg.use_gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def seed_all(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = False


def maybe_inject_fault(cfg: TrainConfig, step: int, rank: int) -> None:
    """TEST-ONLY: see config.FaultInjection."""
    fi = cfg.fault_injection
    if fi is None or step != fi.step or rank != fi.rank:
        return
    marker = Path(fi.marker)
    if marker.exists():
        return
    import ray

    from s1ray.dataio import write_text_atomic

    marker.parent.mkdir(parents=True, exist_ok=True)
    node = ray.get_runtime_context().get_node_id()
    write_text_atomic(marker, json.dumps({"step": step, "rank": rank, "node_id": node}) + "\n")
    if fi.action == "hang":  # until the test removes this worker's node (or Ray kills the group)
        while True:
            time.sleep(1)
    raise RuntimeError(f"s1ray test-only fault injection: rank {rank} fails after step {step}")

"""Device sizes and the time anchors ``plan`` scales from, each with its source.

Training time is scaled from an anchor by model FLOPs per example (matmul parameters: the
6 N per token term dominates at these sizes) and by examples x epochs / devices; it assumes the
anchor's mean sequence length, so it is a planning figure, not a promise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from s1ray.plan.shapes import ModelShape, resolve_shape
from s1ray.plan.terms import Estimate

MIB = 1024**2
# Total memory per device as nvidia-smi reports it.
GPU_BYTES = {
    "H100": 81559 * MIB,
    "H200": 143771 * MIB,
    "A100-80GB": 81920 * MIB,
    "A100-40GB": 40960 * MIB,
    "L40S": 46068 * MIB,
    "A10G": 23028 * MIB,
}
RUNTIME_OVERHEAD_BYTES = 2 * 1024 * MIB
RUNTIME_OVERHEAD_SRC = "assumed: CUDA context, NCCL and cuBLAS workspaces, allocator slack (not measured here)"


def host_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class TrainAnchor:
    model: str
    device: str
    devices: int
    examples: int
    epochs: int
    hours: float
    source: str


S1_PAPER = TrainAnchor(
    model="Qwen/Qwen2.5-32B-Instruct", device="H100", devices=16, examples=1000, epochs=5, hours=26 / 60,
    source="s1 paper (arXiv 2501.19393): s1-32B, 5 epochs of s1K (1,000 examples) in 26 min on 16 H100",
)
S1K_DEFAULT_EXAMPLES = 1000  # s1K / s1K-1.1


@dataclass(frozen=True)
class CpuThroughput:
    shape: dict
    workers: int
    tokens_per_s: float
    source: str


# bench/bench_train.py on the 2-core CI-class machine (README, training section), packing off.
CPU_TINY = CpuThroughput(
    shape={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
           "num_key_value_heads": 2, "vocab_size": 2048},
    workers=2, tokens_per_s=5069.0,
    source="measured: bench/bench_train.py, tiny Qwen2, 2 CPU workers, ZeRO-3, 2026-11-25 (README): 5,069 tokens/s",
)


def matmul_params(shape: ModelShape) -> int:
    return shape.num_hidden_layers * (shape.layer_params - 2 * shape.hidden_size) + shape.embedding_params


def gpu_train_estimate(shape: ModelShape, device: str, devices: int, passes: int, label: str) -> Estimate:
    """``passes``: examples x epochs (each example seen once per epoch)."""
    a = S1_PAPER
    ratio = matmul_params(shape) / matmul_params(resolve_shape(a.model))
    hours = a.hours * a.devices / devices * ratio * passes / (a.examples * a.epochs)
    caveat = "" if device == a.device else f"; anchor is {a.device}, this plan is {device}: not scaled for it"
    return Estimate(
        label=label, hours=hours, gpu_hours=hours * devices,
        source=f"{a.source}; scaled by matmul parameters ({ratio:.3g}x) and examples x epochs / GPUs{caveat}",
    )


def cpu_train_estimate(shape: ModelShape, workers: int, steps: int, rows_per_step: int, block: int) -> Estimate:
    anchor = CPU_TINY
    ratio = matmul_params(shape) / matmul_params(ModelShape.from_config(anchor.shape))
    tokens = steps * rows_per_step * block
    hours = tokens / (anchor.tokens_per_s * workers / anchor.workers / ratio) / 3600
    return Estimate(
        label=f"at most: {steps} steps x {rows_per_step} rows x {block} tokens (every row a full block)",
        hours=hours, gpu_hours=None,
        source=f"{anchor.source}; scaled by matmul parameters ({ratio:.3g}x) and workers",
    )

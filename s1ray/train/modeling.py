"""Loss and FLOP accounting for SFT (torch only; no Ray, no DeepSpeed).

Loss normalisation: a step's loss is the mean token cross-entropy over *all* labelled tokens
of the global batch (every rank, every micro-batch). Each micro-batch contributes its summed
cross-entropy scaled by ``world * grad_accum / global_label_tokens``; DeepSpeed divides by
``grad_accum`` in ``backward`` and averages gradients over ranks, so the gradient is exactly
that of the global token mean -- independent of how examples are split into micro-batches, and
identical with and without packing.
"""

from __future__ import annotations

from typing import Any

from s1ray.train.loss import IGNORE, checkpointed_chunk_sum

# Dense bf16 peak per device, TFLOP/s (MFU's denominator).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
CPU_ASSUMED_TFLOPS = 1.0


def token_ce_sum(logits, labels, chunk_size: int = 4096):
    """Sum of next-token cross-entropy over labelled positions (fp32, chunked).

    ``logits`` [B, T, V] (any float dtype), ``labels`` [B, T] aligned with the inputs (the shift
    happens here). The fp32 upcast happens one chunk at a time under activation checkpointing,
    so a 32k x 152k-vocab block never holds its fp32 logits (20 GB) at once.
    """
    import torch
    import torch.nn.functional as F

    # Shift the labels, not the logits: logits.view(-1, V) stays a view (no 10 GB copy at 32k x 152k).
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)

    def ce(lg, tg):
        return F.cross_entropy(lg.float(), tg, ignore_index=IGNORE, reduction="sum")

    total = checkpointed_chunk_sum(ce, flat_logits, flat_targets, chunk_size)
    if total is None:
        return logits.sum() * 0.0  # keeps the graph (every rank must run backward)
    return total


def model_forward_logits(model, batch: dict[str, Any]):
    """Logits of a causal LM for a collated batch (padded or packed)."""
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    return model(**kwargs, use_cache=False).logits


# -- FLOPs and MFU ----------------------------------------------------------------------------
def matmul_params(config) -> int:
    """Parameters that take part in a matmul per token: everything but the input embedding
    table, with the LM head counted even when it is tied to the embedding."""
    h = config.hidden_size
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    inter = config.intermediate_size
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    mlp = 3 * h * inter  # gate, up, down (SwiGLU)
    return layers * (attn + mlp) + config.vocab_size * h


def step_flops(config, seq_lens: list[int]) -> float:
    """Model FLOPs (fwd + bwd, no recomputation) for sequences of these lengths.

    6 N per token for the matmuls, plus causal attention: QK^T and AV are 2 * s^2 * d per layer
    forward with half the square masked, i.e. 2 * L * d_attn * s^2, times 3 for fwd + bwd.
    """
    n = matmul_params(config)
    heads = config.num_attention_heads
    d_attn = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = config.num_hidden_layers
    tokens = sum(seq_lens)
    attn = sum(6.0 * layers * d_attn * s * s for s in seq_lens)
    return 6.0 * n * tokens + attn


def peak_tflops(configured: float | None, use_gpu: bool) -> tuple[float, str]:
    """(per-device peak TFLOP/s, where it came from: config | device-table | assumed)."""
    if configured is not None:
        return configured, "config"
    if use_gpu:
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
        for key, val in PEAK_TFLOPS.items():
            if key in name:
                return val, "device-table"
    return CPU_ASSUMED_TFLOPS, "assumed"

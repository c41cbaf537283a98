"""Per-device memory of one SFT worker: model states under ZeRO, activations under gradient
checkpointing, and the logits/loss buffer. Pure arithmetic on a :class:`ModelShape`.

Model states come from DeepSpeed's own estimators (``estimate_zero{2,3}_model_states_mem_needs``,
which work from parameter counts) and are split into weights, gradients and optimizer by the
bytes per parameter those estimators are built from (2 bf16 weights, 4 fp32 gradients, 12 fp32
master weights + Adam moments; ZeRO-2 keeps the bf16 weights whole and 2 more bytes of bf16
gradients per shard) plus ZeRO-3's gather buffer for the largest layer.

Activations, per token of a micro-batch (``a`` = 2 bytes in bf16, 4 in fp32), as transformers'
Qwen2/Llama decoder layer saves them for backward: the two RMSNorms keep an fp32 copy of their
input and their output, attention keeps q, k, v (k and v expanded to every head), its output
and o_proj's input, the SwiGLU MLP keeps gate, up, act(gate) and their product:
``a * (11 h + 2 q + 4 i)``. Under gradient checkpointing only each layer's input
(``a * h``) stays; the backward then recomputes one layer at a time. The loss comes after the
last layer and its buffers are gone before the first layer's recompute, so the peak holds the
larger of the two, not both.

Logits/loss: ``logits`` keeps the full logits, their gradient and one slice-backward
temporary (``3 a T V``) plus one fp32 chunk's softmax and gradient (``12 c V``);
``fused_chunked`` only ever holds one chunk: logits, fp32 copy, log-softmax and the two
gradients (``16 c V``).
"""

from __future__ import annotations

from s1ray.plan.shapes import ModelShape
from s1ray.plan.terms import Term

DS3 = "deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs"
DS2 = "deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs"


def _deepspeed_gpu_bytes(shape: ModelShape, zero_stage: int, world: int, offload: bool) -> int:
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            shape.total_params, shape.largest_layer_params, num_gpus_per_node=world, num_nodes=1,
            cpu_offload=offload, cpu_offload_params=False,
        )
        return gpu
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    _, gpu = estimate_zero2_model_states_mem_needs(shape.total_params, num_gpus_per_node=world, num_nodes=1,
                                                   cpu_offload=offload)
    return gpu


def model_state_terms(shape: ModelShape, zero_stage: int, world: int, offload: bool, bf16: bool) -> list[Term]:
    """Weights, gradients, optimizer shards (and ZeRO-3's gather buffer) on one device."""
    p = shape.total_params
    if not bf16:  # the estimators assume 16-bit weights; fp32 training: 4 + 4 + 8 bytes per parameter
        src = "arithmetic: fp32 weights, gradients and Adam moments (DeepSpeed's estimators assume bf16)"
        shard = 1 if zero_stage == 2 else world
        terms = [Term("weights", 4 * p // shard, src), Term("gradients", 4 * p // world, src)]
        if not offload:
            terms.append(Term("optimizer (Adam m, v)", 8 * p // world, src))
        return terms
    src = DS3 if zero_stage == 3 else DS2
    if zero_stage == 3:
        terms = [Term("weights (bf16 shard)", 2 * p // world, src)]
        if not offload:
            terms += [Term("gradients (fp32 shard)", 4 * p // world, src),
                      Term("optimizer (fp32 master + Adam m, v shard)", 12 * p // world, src)]
        terms.append(Term("ZeRO-3 gather buffer (largest layer, 4 B/param)", 4 * shape.largest_layer_params, src))
    else:
        terms = [Term("weights (bf16, whole)", 2 * p, src)]
        if not offload:
            terms += [Term("gradients (bf16 + fp32 shard)", 6 * p // world, src),
                      Term("optimizer (fp32 master + Adam m, v shard)", 12 * p // world, src)]
    total = _deepspeed_gpu_bytes(shape, zero_stage, world, offload)
    rest = total - sum(t.bytes for t in terms)
    if abs(rest) > max(world, 16):  # the split must add up to DeepSpeed's own figure
        raise AssertionError(f"model-state split {sum(t.bytes for t in terms)} != DeepSpeed's {total}")
    return terms


def layer_activation_bytes_per_token(shape: ModelShape, act_bytes: int) -> int:
    h, q, i = shape.hidden_size, shape.q_dim, shape.intermediate_size
    return act_bytes * (11 * h + 2 * q + 4 * i)


def activation_terms(
    shape: ModelShape, tokens: int, checkpointing: bool, loss_impl: str, chunk_size: int, act_bytes: int
) -> list[Term]:
    """Activations and the logits/loss buffer for ``tokens`` tokens in one micro-batch."""
    h, layers, vocab = shape.hidden_size, shape.num_hidden_layers, shape.vocab_size
    per_layer = tokens * layer_activation_bytes_per_token(shape, act_bytes)
    src = "arithmetic: what transformers' decoder layers save for backward (s1ray.plan.train_memory)"
    terms = []
    if checkpointing:
        terms.append(Term(f"activation checkpoints ({layers} layer inputs)", layers * tokens * h * act_bytes, src))
    else:
        terms.append(Term(f"activations ({layers} layers, no checkpointing)", layers * per_layer, src))
    terms.append(Term("final norm + hidden states", tokens * h * (4 + 2 * act_bytes), src))
    chunk = min(chunk_size, tokens)
    if loss_impl == "fused_chunked":
        loss = Term(f"logits/loss buffer (fused, {chunk}-token chunks)", 16 * chunk * vocab, src)
    else:
        loss = Term(f"logits/loss buffer (full {tokens} x {vocab} logits)",
                    3 * act_bytes * tokens * vocab + 12 * chunk * vocab, src)
    if not checkpointing:
        return terms + [loss]
    recompute = Term("layer recompute in backward (one layer)", per_layer, src)
    big, small = (recompute, loss) if recompute.bytes >= loss.bytes else (loss, recompute)
    return terms + [big, Term(small.name, small.bytes, src, counted=False)]

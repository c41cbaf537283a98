"""Next-token cross-entropy for SFT that never holds the full [tokens, vocab] logits.

Both paths return the same number: the summed cross-entropy over labelled positions (labels
aligned with the inputs, shifted here; ``IGNORE`` = -100 is masked), which the loop scales to
the global token mean (:mod:`s1ray.train.modeling`).

* ``logits``: the model's full logits, then the fp32 cross-entropy one chunk at a time
  (:func:`s1ray.train.modeling.token_ce_sum`). The bf16 logits of the whole sequence and their
  gradient still exist: at 32k tokens x 152k vocabulary that is tens of GB.
* ``fused_chunked``: the final hidden states, then each chunk of ``chunk_size`` tokens goes
  through the LM head *and* the loss inside one checkpointed function, so only one chunk's
  logits exist at a time, in the forward and in the backward (which recomputes them). The head
  module is called once, with the loss as its forward, so DeepSpeed ZeRO-3 gathers its
  partitioned weight once per micro-batch on every rank (the same collectives everywhere).
  On CUDA with liger-kernel installed, Liger's fused linear cross-entropy kernel computes the
  same sum inside that call; the pure-torch path is the reference and the CPU path.
"""

from __future__ import annotations

from typing import Any, Literal

# Label of a position that is not trained on (prompt, padding); cross-entropy's ignore_index.
# Defined here, not in s1ray.train.data, so the loss imports torch only (bench/gpu_check.py).
IGNORE = -100

LossImpl = Literal["auto", "fused_chunked", "logits"]


def resolve_loss_impl(impl: str, block_size: int, chunk_size: int) -> str:
    """``auto``: fused where a sequence spans more than one chunk (where it saves memory)."""
    if impl != "auto":
        return impl
    return "fused_chunked" if block_size > chunk_size else "logits"


def shifted_targets(labels):
    """Next-token targets aligned with each position (the last position has none)."""
    import torch

    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return targets


def checkpointed_chunk_sum(fn, inputs, targets, chunk_size: int):
    """Sum of ``fn(inputs[chunk], targets[chunk])`` over chunks that hold a labelled target, each
    checkpointed when it needs grad (the backward recomputes it instead of keeping it); None
    when no chunk has a label."""
    from torch.utils.checkpoint import checkpoint

    total = None
    for i in range(0, targets.numel(), chunk_size):
        tg = targets[i : i + chunk_size]
        if not bool((tg != IGNORE).any()):
            continue
        x = inputs[i : i + chunk_size]
        part = checkpoint(fn, x, tg, use_reentrant=False) if x.requires_grad else fn(x, tg)
        total = part if total is None else total + part
    return total


def _chunked_ce(hidden, weight, bias, targets, chunk_size: int):
    """Sum over chunks of CE(linear(hidden_chunk)); each chunk checkpointed, so the backward
    recomputes its logits instead of keeping them."""
    import torch.nn.functional as F

    def chunk_ce(h, t):
        return F.cross_entropy(F.linear(h, weight, bias).float(), t, ignore_index=IGNORE, reduction="sum")

    total = checkpointed_chunk_sum(chunk_ce, hidden, targets, chunk_size)
    if total is None:  # no labelled token: keep the head in the graph (every rank runs backward)
        return F.linear(hidden[:1], weight, bias).sum() * 0.0
    return total


def _liger_loss(hidden):
    """Liger's fused linear cross-entropy where it applies (CUDA, liger-kernel installed)."""
    if not hidden.is_cuda:
        return None
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def linear_ce_sum(hidden, head, labels, chunk_size: int = 1024, use_liger: bool = True):
    """Summed next-token cross-entropy of ``head(hidden)`` without materialising all logits.

    ``hidden`` [B, T, H] (the decoder's final, normed hidden states), ``head`` the LM head
    module (``model.get_output_embeddings()``), ``labels`` [B, T] aligned with the inputs.
    The whole loss runs as ONE call of the head module (its forward temporarily replaced):
    under ZeRO-3 that is one gather of its weight per micro-batch on every rank, whatever the
    number of chunks a rank's sequence has, and the weight is whole inside the call.
    """
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = shifted_targets(labels).reshape(-1)

    def loss_forward(h, t):
        liger = _liger_loss(h) if use_liger else None
        if liger is not None and bool((t != IGNORE).any()):
            return liger(head.weight, h, t, bias=head.bias)
        return _chunked_ce(h, head.weight, head.bias, t, chunk_size)

    head.forward = loss_forward
    try:
        return head(flat_h, flat_t)
    finally:
        del head.forward


def model_forward_hidden(model, batch: dict[str, Any]):
    """(final hidden states [B, T, H], LM head module) of a causal LM for a collated batch.

    The model is called as a whole (a DeepSpeed engine's forward keeps its hooks) with
    ``logits_to_keep=1``, so its own head computes one position only; the decoder's output is
    taken with a forward hook.
    """
    inner = getattr(model, "module", model)
    decoder = inner.get_decoder()
    captured: list = []

    def grab(_module, _inputs, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = decoder.register_forward_hook(grab)
    try:
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        model(**kwargs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[-1], inner.get_output_embeddings()


def batch_ce_sum(model, batch: dict[str, Any], impl: str, chunk_size: int):
    """The summed cross-entropy of one micro-batch by ``impl`` (``fused_chunked`` or ``logits``)."""
    if impl == "fused_chunked":
        hidden, head = model_forward_hidden(model, batch)
        return linear_ce_sum(hidden, head, batch["labels"], chunk_size)
    from s1ray.train.modeling import model_forward_logits, token_ce_sum

    return token_ce_sum(model_forward_logits(model, batch), batch["labels"], chunk_size)

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
  is called as a module, so DeepSpeed ZeRO-3 gathers its partitioned weight on every call.
  On CUDA with liger-kernel installed and a head weight that is whole on this rank (not a
  ZeRO-3 partition), Liger's fused linear cross-entropy kernel computes the same sum; the
  pure-torch path is the reference and the CPU path.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from s1ray.train.data import IGNORE

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


def _head_ce(head, hidden, targets):
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), targets, ignore_index=IGNORE, reduction="sum")


def _liger_loss(hidden, head):
    """Liger's fused linear cross-entropy, where it applies (CUDA, installed, head weight whole)."""
    weight = head.weight
    if not hidden.is_cuda or hasattr(weight, "ds_id") or getattr(head, "bias", None) is not None:
        return None
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return functools.partial(LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum"), weight)


def linear_ce_sum(hidden, head, labels, chunk_size: int = 1024, use_liger: bool = True):
    """Summed next-token cross-entropy of ``head(hidden)`` without materialising all logits.

    ``hidden`` [B, T, H] (the decoder's final, normed hidden states), ``head`` the LM head
    module (``model.get_output_embeddings()``), ``labels`` [B, T] aligned with the inputs.
    """
    from torch.utils.checkpoint import checkpoint

    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = shifted_targets(labels).reshape(-1)
    liger = _liger_loss(hidden, head) if use_liger else None
    if liger is not None and bool((flat_t != IGNORE).any()):
        return liger(flat_h, flat_t)
    fn = functools.partial(_head_ce, head)
    total = None
    for i in range(0, flat_t.numel(), chunk_size):
        tg = flat_t[i : i + chunk_size]
        if not bool((tg != IGNORE).any()):
            continue
        hs = flat_h[i : i + chunk_size]
        part = checkpoint(fn, hs, tg, use_reentrant=False) if hs.requires_grad else fn(hs, tg)
        total = part if total is None else total + part
    if total is None:  # no labelled token: keep the head in the graph (every rank runs backward)
        return head(flat_h[:1]).sum() * 0.0
    return total


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

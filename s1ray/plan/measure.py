"""What torch's own memory accounting sees in one real training step on the CPU, to check the
plan's activation and logits terms against (``torch.distributed._tools.mem_tracker.MemTracker``:
it follows every tensor storage created under it, by category)."""

from __future__ import annotations

from dataclasses import dataclass

from s1ray.plan.shapes import ModelShape


@dataclass(frozen=True)
class MeasuredStep:
    peak_bytes: int  # everything MemTracker saw at its peak
    params_bytes: int
    grads_bytes: int  # gradients alive at that peak
    activation_bytes: int  # the rest: activations, checkpoints, logits, loss buffers, temporaries


def build_model(shape: ModelShape, dtype: str = "bfloat16", seed: int = 0):
    """A random-init Qwen2 of ``shape`` (no weights needed)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=max(shape.max_position_embeddings, 1),
        tie_word_embeddings=shape.tie_word_embeddings,
    )
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.config.use_cache = False
    return model.train()


def measure_train_step(model, seq_len: int, loss_impl: str, chunk_size: int, checkpointing: bool) -> MeasuredStep:
    """Peak memory of one forward + backward of ``model`` on one sequence of ``seq_len`` tokens,
    every position labelled, with ``loss_impl`` (:func:`s1ray.train.loss.batch_ce_sum`)."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    from s1ray.train.loss import batch_ce_sum

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len), generator=g)
    batch = {"input_ids": ids, "labels": ids.clone()}
    class Step(torch.nn.Module):
        """One root module around forward + loss: MemTracker accepts a submodule called more
        than once (the LM head: the model's one-position call, then the fused loss) only below a root."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self):
            return batch_ce_sum(self.model, batch, loss_impl, chunk_size)

    step = Step()
    tracker = MemTracker()
    tracker.track_external(step)
    with tracker:
        step().backward()
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    total, params, grads = peak["Total"], peak[_MemRefType.PARAM], peak[_MemRefType.GRAD]
    model.zero_grad(set_to_none=True)
    return MeasuredStep(peak_bytes=total, params_bytes=params, grads_bytes=grads, activation_bytes=total - params - grads)

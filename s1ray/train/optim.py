"""The optimizer side of the SFT run (pure): the LR schedule, AdamW's parameter groups, and the
schedule's reset after a resume."""

from __future__ import annotations

import math
from typing import Any


class WarmupCosine:
    """LR multiplier: linear warmup 0 -> 1 over ``warmup`` steps, then cosine to exactly 0 at
    ``total`` (HF's ``get_cosine_schedule_with_warmup``; s1's recipe). Step s's update uses
    ``lr(s)``; ``lr(total) == 0``."""

    def __init__(self, total: int, warmup: int):
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def reset_schedule(scheduler, schedule: WarmupCosine, step: int) -> None:
    """After loading a checkpoint: ``LambdaLR.load_state_dict`` overwrote the schedule object's
    fields with the *saved* run's (its total). Install a fresh schedule for this run and set the
    LR of ``step``, so a resubmission with other max_steps/epochs follows the new schedule."""
    scheduler.lr_lambdas = [schedule] * len(scheduler.optimizer.param_groups)
    lrs = [base * schedule(step) for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as HF's Trainer makes them: no weight decay on biases and norm weights."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 partitions are flat; ds_shape is the real one
        (decay if ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

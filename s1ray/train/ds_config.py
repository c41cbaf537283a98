"""The DeepSpeed config for an SFT run, built from the typed ``TrainConfig`` (pure)."""

from __future__ import annotations

from typing import Any

from s1ray.train.config import TrainConfig, grad_accum_for


def build_ds_config(cfg: TrainConfig, world_size: int, hidden_size: int | None = None) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg`` on ``world_size`` ranks.

    The LR schedule is not in here: it is a client ``LambdaLR`` (see :class:`~s1ray.train.optim.WarmupCosine`),
    because DeepSpeed's ``WarmupCosineLR`` floors warmup at 2 steps and offsets the cosine by one.
    """
    gas = grad_accum_for(cfg.global_batch_size, world_size, cfg.micro_batch_size)
    opt_params: dict[str, Any] = {
        "lr": cfg.lr,
        "betas": list(cfg.adam_betas),
        "eps": cfg.adam_eps,
        "weight_decay": cfg.weight_decay,
    }
    if not cfg.offload_optimizer:
        # torch.optim.AdamW (fused kernel on GPU) instead of DeepSpeed's FusedAdam, which must be
        # JIT-built with nvcc; with offload, DeepSpeed uses its DeepSpeedCPUAdam.
        opt_params["torch_adam"] = True
        if cfg.use_gpu:
            opt_params["fused"] = True
    zero: dict[str, Any] = {
        "stage": cfg.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": cfg.use_gpu,
        "reduce_scatter": True,
    }
    if cfg.zero_stage == 3:
        h2 = (hidden_size or 4096) ** 2
        zero.update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                "reduce_bucket_size": h2,
                "stage3_prefetch_bucket_size": int(0.9 * h2),
                "stage3_param_persistence_threshold": 10 * (hidden_size or 4096),
                "stage3_max_live_parameters": int(1e9),
                "stage3_max_reuse_distance": int(1e9),
                "sub_group_size": int(1e9),
            }
        )
    else:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": int(5e8), "reduce_bucket_size": int(5e8)})
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    return {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": cfg.bf16},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": opt_params},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "seed": cfg.seed,
    }

"""``TrainConfig``: one SFT run (s1's recipe by default) on Ray Train + DeepSpeed.

YAML lives in ``configs/train/``; run it with ``python jobs/train_sft.py --config configs/train/x.yaml``
and override any field with dotted keys (``max_steps=10``, ``dataset.limit=64``).

Defaults are s1's ``train/sft.sh``: 5 epochs, lr 1e-5 with 5% linear warmup then cosine to 0,
AdamW betas (0.9, 0.95), weight decay 1e-4, global batch 16, micro batch 1, bf16, block 32768.
Pure: importing this module imports neither torch nor Ray.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from s1ray.config import S1Config
from s1ray.formats import FormatName


def grad_accum_for(global_batch_size: int, ranks: int, micro_batch_size: int, ranks_name: str = "world size") -> int:
    """Micro-batches per optimizer step on each rank: global batch / (ranks x micro batch). The one
    place it is computed: the config check, the DeepSpeed config and the loop's batches use it."""
    per_step = ranks * micro_batch_size
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by {ranks_name} "
            f"({ranks}) x micro_batch_size ({micro_batch_size}) = {per_step}"
        )
    return global_batch_size // per_step


class DatasetConfig(S1Config):
    """Where the s1K-style examples come from and which columns hold what.

    ``source`` is a local ``.jsonl``/``.json``/``.parquet`` file (or a directory of parquet files),
    a directory written by ``datasets.Dataset.save_to_disk``, or an HF hub name
    (e.g. ``simplescaling/s1K-1.1``).
    """

    source: str = Field(description="HF hub name, on-disk HF dataset dir, .parquet or .jsonl path")
    split: str = "train"
    hf_config: str | None = None
    question_field: str = "question"
    thinking_field: str = "thinking"
    attempt_field: str = "attempt"
    limit: int | None = Field(None, ge=1, description="first N examples (tests, smoke runs)")


class WandbConfig(S1Config):
    project: str
    entity: str | None = None
    run_name: str | None = Field(None, description="default: the run's name")
    tags: list[str] = Field(default_factory=list)


class MlflowConfig(S1Config):
    tracking_uri: str | None = Field(
        None, description="default: MLFLOW_TRACKING_URI; offline: file:/abs/dir (a local store)")
    experiment: str = "s1ray-sft"


class LoggingConfig(S1Config):
    """Metrics go to Ray Train (``ray.train.report``) every ``report_every`` steps; W&B/MLflow are optional extras."""

    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None
    print_every: int = Field(1, ge=0, description="rank 0 prints a metrics line every N steps (0: never)")
    # Ray Train v2's controller takes one report per worker per health-check poll (every 2 s,
    # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) and a worker's report blocks while the previous one is
    # unconsumed: steps shorter than 2 s are throttled to 2 s if every step reports. Steps that
    # are not reported still go to print/W&B/MLflow and to the checkpoint's history.
    report_every: int = Field(
        1, ge=1, description="call ray.train.report every N steps (checkpoint steps always report); "
        "raise it when a step takes well under 2 s"
    )


class FaultInjection(S1Config):
    """TEST-ONLY fault injection: rank ``rank`` fails once, after computing optimizer step ``step``.

    The marker file makes it fire only once: it is created just before the fault (holding the
    worker's Ray node id), and a worker that finds it does not fail. ``raise``: the worker
    raises; ``hang``: it blocks until killed, so a test can remove its node (a lost spot
    instance) while the run is stuck there. Used by the fault-tolerance tests to exercise
    ``FailureConfig`` + resume; never set it in a real run.
    """

    step: int = Field(ge=1)
    marker: str = Field(description="file created when the fault fires (fires only if absent)")
    rank: int = Field(0, ge=0)
    action: Literal["raise", "hang"] = "raise"


class TrainConfig(S1Config):
    # -- run -------------------------------------------------------------------------------
    name: str = Field("s1ray-sft", description="run name; re-submitting the same name resumes it")
    storage_path: str = Field(
        "runs/train", description="Ray Train storage: local dir, NFS path or URI (s3://...)"
    )
    export_dir: str | None = Field(None, description="HF model written at the end; default <storage>/<name>/export")
    seed: int = 42
    deterministic: bool = Field(False, description="deterministic kernels (resume reproduces losses exactly)")

    # -- model and text --------------------------------------------------------------------
    model: str = Field(description="HF model name or local path")
    tokenizer: str | None = Field(None, description="defaults to model")
    format: FormatName = Field("s1", description="reasoning format: s1 or think-tags (s1ray/formats.py)")
    system_prompt: str | None = Field(None, description="None: the chat template's default system turn")
    answer_prefix: str | None = Field(
        None,
        description="text between the end of thinking and the answer; None: the format's own "
        "(what the engine inserts at inference, 'Final Answer:'); s1's reference used 'Answer: '",
    )
    label_delimiters: bool = Field(
        True,
        description="also train on the end-of-thinking delimiter and the end-of-turn token "
        "(the model must learn to stop); false: loss on thinking + answer tokens only",
    )

    # -- data ------------------------------------------------------------------------------
    dataset: DatasetConfig
    block_size: int = Field(32768, gt=0, description="max tokens per sequence (and per packed block)")
    overlong: Literal["drop", "truncate"] = Field(
        "drop", description="examples longer than block_size: dropped, or truncated (counted either way)"
    )
    packing: bool = Field(False, description="pack examples into blocks; attention stays within each example")

    # -- recipe ----------------------------------------------------------------------------
    epochs: int = Field(5, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after N optimizer steps (tests, bench)")
    lr: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    global_batch_size: int = Field(16, ge=1, description="rows per optimizer step (packed blocks when packing)")
    micro_batch_size: int = Field(1, ge=1, description="rows per worker per forward pass")
    bf16: bool = True
    gradient_checkpointing: bool = True
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 on GPU when installed, else sdpa"
    )
    loss_impl: Literal["auto", "fused_chunked", "logits"] = Field(
        "auto", description="fused_chunked: LM head + cross-entropy per chunk, the full logits never exist; "
        "logits: the model's full logits, fp32 loss per chunk; auto: fused_chunked when block_size > loss_chunk_size"
    )
    loss_chunk_size: int = Field(1024, ge=1, description="tokens per chunk of the loss (and of the LM head when fused)")

    # -- DeepSpeed and cluster -------------------------------------------------------------
    zero_stage: Literal[2, 3] = 3
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: optimizer states and step on CPU")
    num_workers: int = Field(16, ge=1, description="Ray Train workers = data-parallel ranks (one per GPU)")
    use_gpu: bool = True
    resources_per_worker: dict[str, float] | None = Field(None, description="e.g. {CPU: 8, GPU: 1}")
    peak_tflops: float | None = Field(
        None, gt=0, description="per-worker peak for MFU; None: H100/H200/A100 table on GPU, assumed 1.0 on CPU"
    )

    # -- checkpoints and failures ----------------------------------------------------------
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also checkpoint every N steps")
    checkpoint_each_epoch: bool = Field(
        True, description="checkpoint at each epoch's end (off for many tiny epochs, e.g. the miniature)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints Ray Train keeps")
    async_checkpoint_upload: bool = Field(
        False, description="upload checkpoints to storage in the background (Ray's ASYNC mode) while training goes on"
    )
    max_failures: int = Field(3, ge=-1, description="worker-group restarts from the last checkpoint (-1: forever)")
    torch_extensions_dir: str | None = Field(
        None, description="cache of DeepSpeed's JIT-built ops (CPU: shm comm); None: TORCH_EXTENSIONS_DIR or torch's default"
    )

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    fault_injection: FaultInjection | None = Field(None, description="TEST-ONLY (see FaultInjection)")

    @field_validator("adam_betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        grad_accum_for(self.global_batch_size, self.num_workers, self.micro_batch_size, "num_workers")
        if self.attn_implementation == "flash_attention_2" and not self.use_gpu:
            raise ValueError("attn_implementation: flash_attention_2 needs use_gpu: true")
        if self.fault_injection is not None and self.fault_injection.rank >= self.num_workers:
            raise ValueError(
                f"fault_injection.rank ({self.fault_injection.rank}) must be < num_workers ({self.num_workers})"
            )
        if self.resources_per_worker and not self.use_gpu and self.resources_per_worker.get("GPU"):
            raise ValueError("resources_per_worker asks for GPUs but use_gpu is false")
        return self

    # -- derived ---------------------------------------------------------------------------
    @property
    def grad_accum_steps(self) -> int:
        """Gradient accumulation on ``num_workers`` ranks (:func:`grad_accum_for`)."""
        return grad_accum_for(self.global_batch_size, self.num_workers, self.micro_batch_size, "num_workers")

    def warmup_steps(self, total_steps: int) -> int:
        """HF Trainer's rule: ceil(total x warmup_ratio)."""
        return math.ceil(total_steps * self.warmup_ratio)

    def resolved_export_dir(self) -> str:
        if self.export_dir:
            return self.export_dir
        return self.storage_path.rstrip("/") + f"/{self.name}/export"

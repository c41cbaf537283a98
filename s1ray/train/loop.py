"""The per-worker training function for Ray Train's ``TorchTrainer``, and its DeepSpeed config.

Each worker (one data-parallel rank; one GPU, or one CPU process in tests):

1. builds the DeepSpeed config from the typed ``TrainConfig`` (:func:`build_ds_config`);
   for ZeRO-3 an ``HfDeepSpeedConfig`` is created *before* ``from_pretrained`` so the weights
   are loaded straight into partitions (no full copy per rank);
2. ``deepspeed.initialize`` with AdamW (decay on matrices only) and a warmup + cosine-to-0
   ``LambdaLR`` (:class:`WarmupCosine`); DeepSpeed does the gradient accumulation
   (global / (world x micro)), clipping (1.0), ZeRO partitioning and optional CPU offload;
3. resumes from ``ray.train.get_checkpoint()`` if there is one: the newest *complete*
   checkpoint (:mod:`s1ray.train.checkpoint`) restores weights, optimizer, scheduler and the step;
   the data position is a pure function of the step (:func:`s1ray.train.data.step_micro_batches`),
   so the loader continues exactly where the checkpoint was taken, with no replay;
4. per step: forward/backward every micro-batch with the global-token-mean loss
   (:mod:`s1ray.train.modeling`), then ``ray.train.report`` of loss, lr, grad norm, tokens/s, MFU
   every ``logging.report_every`` steps (every rank calls it on the same steps; Ray keeps rank
   0's metrics), with window means since the last report;
5. checkpoints every ``checkpoint_every_steps``, at each epoch end and at the end: every rank
   ``engine.save_checkpoint`` into a local temp dir, rank 0 adds the meta, every rank its
   completion marker (last), then ``ray.train.report(metrics, checkpoint=...)``;
6. at the end, exports the consolidated HF model (:mod:`s1ray.train.export`).

No module-level torch/DeepSpeed import: on CPU ``DS_ACCELERATOR=cpu`` must be set before
DeepSpeed is first imported in the worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from s1ray.train.config import TrainConfig
from s1ray.train.ds_config import build_ds_config

# Not print(): in a worker, Ray Train's print patch both prints a line and logs it (the worker's
# sys.stdout is a log file, not sys.__stdout__), so a printed line would show twice. A logger line
# goes once through the handlers Ray Train gives the worker's root logger.
log = logging.getLogger("s1ray.train")

# Per-step metrics kept in every checkpoint's meta (the run's full curve travels with it).
HISTORY_KEYS = ("step", "loss", "lr", "grad_norm", "tokens", "padding_fraction", "step_time_s", "tokens_per_s", "mfu",
                "time")


# -- LR schedule (pure) -----------------------------------------------------------------------
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


def _reset_schedule(scheduler, schedule: WarmupCosine, step: int) -> None:
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


# -- the worker function ----------------------------------------------------------------------
def _worker_env(cfg: TrainConfig) -> None:
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if cfg.torch_extensions_dir:
        os.environ["TORCH_EXTENSIONS_DIR"] = cfg.torch_extensions_dir
    if cfg.deterministic and cfg.use_gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _seed_all(seed: int, deterministic: bool) -> None:
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


def _maybe_inject_fault(cfg: TrainConfig, step: int, rank: int) -> None:
    """TEST-ONLY: see config.FaultInjection."""
    fi = cfg.fault_injection
    if fi is None or step != fi.step or rank != fi.rank:
        return
    marker = Path(fi.marker)
    if marker.exists():
        return
    import ray

    marker.parent.mkdir(parents=True, exist_ok=True)
    node = ray.get_runtime_context().get_node_id()
    from s1ray.dataio import write_text_atomic

    write_text_atomic(marker, json.dumps({"step": step, "rank": rank, "node_id": node}) + "\n")
    if fi.action == "hang":  # until the test removes this worker's node (or Ray kills the group)
        while True:
            time.sleep(1)
    raise RuntimeError(f"s1ray test-only fault injection: rank {rank} fails after step {step}")


def train_func(loop_config: dict[str, Any]) -> None:
    """Ray Train worker entry point. ``loop_config``: ``cfg`` (TrainConfig as a dict), ``data``
    (PreparedData or an ObjectRef to it), ``pad_id``."""
    cfg = TrainConfig.model_validate(loop_config["cfg"])
    _worker_env(cfg)

    import deepspeed
    import ray
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from s1ray.train import checkpoint as ck
    from s1ray.train.data import IGNORE, batch_tokens, collate, seq_lengths, step_micro_batches, steps_per_epoch
    from s1ray.train.data import total_steps as compute_total_steps
    from s1ray.train.export import export_done, export_from_engine
    from s1ray.train.metrics import MetricsSink
    from s1ray.train.loss import batch_ce_sum, resolve_loss_impl
    from s1ray.train.modeling import peak_tflops, step_flops

    data = loop_config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    pad_id = int(loop_config["pad_id"])
    progress = loop_config.get("progress")  # a StepCounter actor, when the driver draws a bar

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _seed_all(cfg.seed, cfg.deterministic)
    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    # Ray Train already created the torch process group; DeepSpeed's comm layer adopts it (and must
    # be up before zero.Init reads the world size during from_pretrained).
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    hf_config = AutoConfig.from_pretrained(cfg.model)
    ds_config = build_ds_config(cfg, world, getattr(hf_config, "hidden_size", None))
    gas = ds_config["gradient_accumulation_steps"]
    dschf = HfDeepSpeedConfig(ds_config) if cfg.zero_stage == 3 else None  # noqa: F841 (must stay alive)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype, attn_implementation=resolve_attn(cfg))
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    spe = steps_per_epoch(len(data.rows), cfg.global_batch_size)
    total = compute_total_steps(len(data.rows), cfg.global_batch_size, cfg.epochs, cfg.max_steps)
    schedule = WarmupCosine(total, cfg.warmup_steps(total))
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, cfg.weight_decay),
        config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
    )
    device = engine.device

    # -- resume --------------------------------------------------------------------------
    start, history, resumed_from = 0, [], []
    chosen = [None]
    if rank == 0:
        latest = ray.train.get_checkpoint()
        if latest is not None:
            found, meta = ck.find_complete(latest)
            if found is not None:
                chosen = [(found.path, meta)]
    dist.broadcast_object_list(chosen, src=0)  # every rank loads the same checkpoint
    if chosen[0] is not None:
        path, meta = chosen[0]
        if int(meta["world_size"]) != world:
            raise RuntimeError(
                f"checkpoint {path} was written by {meta['world_size']} ranks; this run has {world} "
                "(ZeRO partitions do not re-shard; keep num_workers, or start a new run name)"
            )
        latest = ray.train.get_checkpoint()
        ckpt = Checkpoint(path, filesystem=latest.filesystem) if latest is not None else Checkpoint(path)
        with tempfile.TemporaryDirectory(prefix="s1ray-resume-") as tmp:
            local = ck.fetch_for_rank(ckpt, rank, tmp)
            load_path, _ = engine.load_checkpoint(
                local, tag=ck.DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {path}")
        start, history = int(meta["step"]), list(meta["history"])
        resumed_from = list(meta.get("resumed_from", [])) + [start]
        if int(meta.get("total_steps", total)) != total and rank == 0:
            log.info("total steps changed %s -> %s: LR schedule recomputed", meta["total_steps"], total)
        _reset_schedule(scheduler, WarmupCosine(total, cfg.warmup_steps(total)), start)
        if rank == 0:
            log.info("resumed from %s at step %d/%d", path, start, total)

    peak, peak_source = peak_tflops(cfg.peak_tflops, cfg.use_gpu)
    loss_impl = resolve_loss_impl(cfg.loss_impl, cfg.block_size, cfg.loss_chunk_size)
    sink = MetricsSink(cfg) if rank == 0 and (cfg.logging.wandb or cfg.logging.mlflow) else None
    metrics: dict[str, Any] = {}
    # The report window -- steps since the last report -- is the tail of ``history`` from here.
    window_start, window_t0 = len(history), time.time()

    def save_and_report(step_done: int, metrics: dict[str, Any]) -> None:
        from ray.train import CheckpointUploadMode

        tmp = tempfile.mkdtemp(prefix=f"s1ray-ckpt-{step_done}-r{rank}-")
        try:
            engine.save_checkpoint(tmp, tag=ck.DS_TAG)
            if rank == 0:
                ck.write_meta(tmp, {
                    "step": step_done, "epoch": step_done / spe, "total_steps": total, "world_size": world,
                    "steps_per_epoch": spe, "history": history, "resumed_from": resumed_from,
                    "name": cfg.name, "time": time.time(),
                })
            ck.write_marker(tmp, rank)  # last
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if cfg.async_checkpoint_upload:  # Ray uploads in the background, then deletes tmp
            ray.train.report(
                metrics, checkpoint=Checkpoint.from_directory(tmp),
                checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=True,
            )
            return
        try:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    for step in range(start, total):
        t0 = time.perf_counter()
        micro_batches = step_micro_batches(data, cfg.seed, step, cfg.global_batch_size, world, cfg.micro_batch_size, rank)
        assert len(micro_batches) == gas, (len(micro_batches), gas)
        batches = [collate(data, mb, pad_id) for mb in micro_batches]
        lens = [s for mb in micro_batches for s in seq_lengths(data, mb)]
        local = torch.tensor(
            [
                sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches),
                sum(batch_tokens(b) for b in batches),
                sum(int(b["input_ids"].numel()) for b in batches),
                step_flops(hf_config, lens),
            ],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(local)
        label_tokens, tokens, computed_tokens, flops = local.tolist()
        lr = float(scheduler.get_last_lr()[0])
        scale = world * gas / max(1.0, label_tokens)
        ce_total = torch.zeros((), dtype=torch.float64, device=device)
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            ce = batch_ce_sum(engine, b, loss_impl, cfg.loss_chunk_size)
            engine.backward(ce * scale)
            engine.step()
            ce_total += ce.detach().double()
            del ce
        dist.all_reduce(ce_total)
        grad_norm = engine.get_global_grad_norm()
        if isinstance(grad_norm, torch.Tensor):
            grad_norm = grad_norm.item()
        dt = time.perf_counter() - t0
        step_done = step + 1
        metrics = {
            "step": step_done,
            "epoch": step_done / spe,
            "loss": ce_total.item() / max(1.0, label_tokens),
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "tokens": int(tokens),
            "label_tokens": int(label_tokens),
            "padding_fraction": 1.0 - tokens / max(1.0, computed_tokens),
            "step_time_s": dt,
            "tokens_per_s": tokens / dt,
            "tokens_per_s_per_worker": tokens / dt / world,
            "mfu": flops / (dt * world * peak * 1e12),
            "peak_tflops": peak,
            "peak_source": peak_source,
            "total_steps": total,
            "time": time.time(),  # wall clock at the step's end (history: wall-clock throughput)
        }
        history.append({k: metrics[k] for k in HISTORY_KEYS})
        if rank == 0:
            if cfg.logging.print_every and step_done % cfg.logging.print_every == 0:
                log.info(
                    "step %d/%d loss %.4f lr %.3e grad_norm %.3f tok/s %.0f mfu %.3f%% (%s peak %s TFLOP/s)",
                    step_done, total, metrics["loss"], lr, metrics["grad_norm"], metrics["tokens_per_s"],
                    100 * metrics["mfu"], peak_source, peak,
                )
            if progress is not None:
                progress.set.remote(step_done, total, metrics["loss"])  # fire and forget
            if sink is not None:
                sink.log(metrics)
        _maybe_inject_fault(cfg, step_done, rank)
        every = cfg.checkpoint_every_steps
        epoch_end = cfg.checkpoint_each_epoch and step_done % spe == 0
        checkpoint_now = (every and step_done % every == 0) or epoch_end or step_done == total
        if checkpoint_now or step_done % cfg.logging.report_every == 0:
            win = history[window_start:]
            metrics["window_steps"] = len(win)
            metrics["window_loss"] = sum(h["loss"] for h in win) / len(win)
            # wall clock from the previous reported step's end (or the loop's start) to this
            # step's end: the previous report or checkpoint counts against the window
            metrics["window_tokens_per_s"] = sum(h["tokens"] for h in win) / max(metrics["time"] - window_t0, 1e-9)
            if checkpoint_now:
                save_and_report(step_done, metrics)
            else:
                ray.train.report(metrics)
            window_start, window_t0 = len(history), metrics["time"]

    if not metrics and rank == 0:
        log.info("run already complete at step %d/%d", start, total)
    done = [export_done(cfg.resolved_export_dir(), total) if rank == 0 else None]
    dist.broadcast_object_list(done, src=0)
    if not done[0]:
        info = {
            "step": total, "final_loss": history[-1]["loss"] if history else None, "name": cfg.name,
            "format": cfg.format, "source_model": cfg.model, "history": history,
        }
        export_from_engine(engine, cfg, hf_config, info)
    if sink is not None:
        sink.close()

"""The per-worker trainer for Ray Train's ``TorchTrainer``: :func:`train_func` runs one
:class:`SFTTrainer` per worker (one data-parallel rank; one GPU, or one CPU process in tests),
one method per step below:

1. ``setup`` builds the DeepSpeed config from the typed ``TrainConfig`` (:mod:`s1ray.train.ds_config`);
   for ZeRO-3 an ``HfDeepSpeedConfig`` is created *before* ``from_pretrained`` so the weights
   are loaded straight into partitions (no full copy per rank);
   then ``deepspeed.initialize`` with AdamW (decay on matrices only) and a warmup + cosine-to-0
   ``LambdaLR`` (:class:`~s1ray.train.optim.WarmupCosine`); DeepSpeed does the gradient accumulation
   (:func:`s1ray.train.config.grad_accum_for`), clipping (1.0), ZeRO partitioning and optional CPU offload;
2. ``resume`` loads ``ray.train.get_checkpoint()`` if there is one: the newest *complete*
   checkpoint (:mod:`s1ray.train.checkpoint`) restores weights, optimizer, scheduler and the step;
   the data position is a pure function of the step (:func:`s1ray.train.data.step_micro_batches`),
   so the loader continues exactly where the checkpoint was taken, with no replay;
3. ``train_step``: forward/backward every micro-batch with the global-token-mean loss
   (:mod:`s1ray.train.modeling`); ``log_step`` (rank 0: log line, progress bar, W&B / MLflow
   sink, :mod:`s1ray.train.metrics`); ``report``: ``ray.train.report`` of loss, lr, grad norm, tokens/s, MFU
   every ``logging.report_every`` steps (every rank calls it on the same steps; Ray keeps rank
   0's metrics), with window means since the last report;
4. ``checkpoint`` every ``checkpoint_every_steps``, at each epoch end and at the end: every rank
   ``engine.save_checkpoint`` into a local temp dir, rank 0 adds the meta, every rank its
   completion marker (last), then ``ray.train.report(metrics, checkpoint=...)``;
5. ``export`` at the end writes the consolidated HF model (:mod:`s1ray.train.export`).

No module-level torch/DeepSpeed import: on CPU ``DS_ACCELERATOR=cpu`` must be set before
DeepSpeed is first imported in the worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any

from s1ray.train.config import TrainConfig
from s1ray.train.ds_config import build_ds_config
from s1ray.train.optim import WarmupCosine, param_groups, reset_schedule
from s1ray.train.worker import maybe_inject_fault, resolve_attn, seed_all, worker_env

# Not print(): in a worker, Ray Train's print patch both prints a line and logs it (the worker's
# sys.stdout is a log file, not sys.__stdout__), so a printed line would show twice. A logger line
# goes once through the handlers Ray Train gives the worker's root logger.
log = logging.getLogger("s1ray.train")

# Per-step metrics kept in every checkpoint's meta (the run's full curve travels with it).
HISTORY_KEYS = ("step", "loss", "lr", "grad_norm", "tokens", "padding_fraction", "step_time_s", "tokens_per_s", "mfu",
                "time")


class SFTTrainer:
    """One rank's SFT run. ``loop_config``: ``cfg`` (TrainConfig as a dict), ``data`` (PreparedData
    or an ObjectRef to it), ``pad_id``, ``progress`` (a StepCounter actor, when the driver draws a bar)."""

    def __init__(self, loop_config: dict[str, Any]):
        from s1ray.dataio import local_copy

        cfg = TrainConfig.model_validate(loop_config["cfg"])
        # A model on object storage (a base model, or an earlier SFT's export) is copied to this node.
        self.cfg = cfg.model_copy(update={"model": local_copy(cfg.model),
                                          "tokenizer": cfg.tokenizer and local_copy(cfg.tokenizer)})
        self.loop_config = loop_config
        self.start, self.history, self.resumed_from = 0, [], []
        self.metrics: dict[str, Any] = {}
        self.sink = None

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Data, process group, model and the DeepSpeed engine (optimizer, LR schedule)."""
        cfg = self.cfg
        worker_env(cfg)

        import deepspeed
        import ray
        import ray.train
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.integrations import HfDeepSpeedConfig

        from s1ray.train.data import steps_per_epoch, total_steps
        from s1ray.train.loss import resolve_loss_impl
        from s1ray.train.modeling import peak_tflops

        data = self.loop_config["data"]
        self.data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
        self.pad_id = int(self.loop_config["pad_id"])
        self.progress = self.loop_config.get("progress")
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        seed_all(cfg.seed, cfg.deterministic)
        if not cfg.use_gpu:
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

        # Ray Train already created the torch process group; DeepSpeed's comm layer adopts it (and must
        # be up before zero.Init reads the world size during from_pretrained).
        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
        self.hf_config = AutoConfig.from_pretrained(cfg.model)
        ds_config = build_ds_config(cfg, self.world, getattr(self.hf_config, "hidden_size", None))
        self.gas = ds_config["gradient_accumulation_steps"]
        self._dschf = HfDeepSpeedConfig(ds_config) if cfg.zero_stage == 3 else None  # must stay alive
        dtype = torch.bfloat16 if cfg.bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype, attn_implementation=resolve_attn(cfg))
        model.config.use_cache = False
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        self.spe = steps_per_epoch(len(self.data.rows), cfg.global_batch_size)
        self.total = total_steps(len(self.data.rows), cfg.global_batch_size, cfg.epochs, cfg.max_steps)
        schedule = WarmupCosine(self.total, cfg.warmup_steps(self.total))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, cfg.weight_decay),
            config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        )
        self.device = self.engine.device
        self.peak, self.peak_source = peak_tflops(cfg.peak_tflops, cfg.use_gpu)
        self.loss_impl = resolve_loss_impl(cfg.loss_impl, cfg.block_size, cfg.loss_chunk_size)

    # -- resume -----------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the newest complete checkpoint of the run, if there is one (rank 0 chooses)."""
        import ray.train
        import torch.distributed as dist
        from ray.train import Checkpoint

        from s1ray.train import checkpoint as ck

        rank, world, total = self.rank, self.world, self.total
        chosen = [None]
        if rank == 0:
            latest = ray.train.get_checkpoint()
            if latest is not None:
                found, meta = ck.find_complete(latest)
                if found is not None:
                    chosen = [(found.path, meta)]
        dist.broadcast_object_list(chosen, src=0)  # every rank loads the same checkpoint
        if chosen[0] is None:
            return
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
            load_path, _ = self.engine.load_checkpoint(
                local, tag=ck.DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {path}")
        self.start, self.history = int(meta["step"]), list(meta["history"])
        self.resumed_from = list(meta.get("resumed_from", [])) + [self.start]
        if int(meta.get("total_steps", total)) != total and rank == 0:
            log.info("total steps changed %s -> %s: LR schedule recomputed", meta["total_steps"], total)
        reset_schedule(self.scheduler, WarmupCosine(total, self.cfg.warmup_steps(total)), self.start)
        if rank == 0:
            log.info("resumed from %s at step %d/%d", path, self.start, total)

    # -- train step -------------------------------------------------------------------------
    def _batches(self, step: int) -> tuple[list[dict], list[float]]:
        """This rank's micro-batches of ``step`` and the step's global counts: label tokens,
        real tokens, computed (padded) tokens, model FLOPs."""
        import torch
        import torch.distributed as dist

        from s1ray.train.data import IGNORE, batch_tokens, collate, seq_lengths, step_micro_batches
        from s1ray.train.modeling import step_flops

        cfg, data = self.cfg, self.data
        micro_batches = step_micro_batches(data, cfg.seed, step, cfg.global_batch_size, self.world,
                                           cfg.micro_batch_size, self.rank)
        assert len(micro_batches) == self.gas, (len(micro_batches), self.gas)
        batches = [collate(data, mb, self.pad_id) for mb in micro_batches]
        lens = [s for mb in micro_batches for s in seq_lengths(data, mb)]
        local = torch.tensor(
            [
                sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches),
                sum(batch_tokens(b) for b in batches),
                sum(int(b["input_ids"].numel()) for b in batches),
                step_flops(self.hf_config, lens),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(local)
        return batches, local.tolist()

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step (0-based ``step``): forward/backward of every micro-batch with the
        global-token-mean loss; returns the step's metrics."""
        import torch
        import torch.distributed as dist

        from s1ray.train.loss import batch_ce_sum

        t0 = time.perf_counter()
        engine, world = self.engine, self.world
        batches, (label_tokens, tokens, computed_tokens, flops) = self._batches(step)
        lr = float(self.scheduler.get_last_lr()[0])
        scale = world * self.gas / max(1.0, label_tokens)
        ce_total = torch.zeros((), dtype=torch.float64, device=self.device)
        for b in batches:
            b = {k: v.to(self.device) for k, v in b.items()}
            ce = batch_ce_sum(engine, b, self.loss_impl, self.cfg.loss_chunk_size)
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
        return {
            "step": step_done,
            "epoch": step_done / self.spe,
            "loss": ce_total.item() / max(1.0, label_tokens),
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "tokens": int(tokens),
            "label_tokens": int(label_tokens),
            "padding_fraction": 1.0 - tokens / max(1.0, computed_tokens),
            "step_time_s": dt,
            "tokens_per_s": tokens / dt,
            "tokens_per_s_per_worker": tokens / dt / world,
            "mfu": flops / (dt * world * self.peak * 1e12),
            "peak_tflops": self.peak,
            "peak_source": self.peak_source,
            "total_steps": self.total,
            "time": time.time(),  # wall clock at the step's end (history: wall-clock throughput)
        }

    # -- report -----------------------------------------------------------------------------
    def log_step(self, metrics: dict[str, Any]) -> None:
        """Rank 0: the log line, the driver's progress bar, the W&B / MLflow sink."""
        cfg, step_done = self.cfg, metrics["step"]
        if self.rank != 0:
            return
        if cfg.logging.print_every and step_done % cfg.logging.print_every == 0:
            log.info(
                "step %d/%d loss %.4f lr %.3e grad_norm %.3f tok/s %.0f mfu %.3f%% (%s peak %s TFLOP/s)",
                step_done, self.total, metrics["loss"], metrics["lr"], metrics["grad_norm"], metrics["tokens_per_s"],
                100 * metrics["mfu"], self.peak_source, self.peak,
            )
        if self.progress is not None:
            self.progress.set.remote(step_done, self.total, metrics["loss"])  # fire and forget
        if self.sink is not None:
            self.sink.log(metrics)

    def report(self, metrics: dict[str, Any]) -> None:
        """Every ``report_every`` steps and at every checkpoint: ``ray.train.report`` of the step's
        metrics plus window means since the last report (every rank, on the same steps)."""
        import ray.train

        cfg, step_done = self.cfg, metrics["step"]
        every = cfg.checkpoint_every_steps
        epoch_end = cfg.checkpoint_each_epoch and step_done % self.spe == 0
        checkpoint_now = (every and step_done % every == 0) or epoch_end or step_done == self.total
        if not (checkpoint_now or step_done % cfg.logging.report_every == 0):
            return
        win = self.history[self._window_start:]
        metrics["window_steps"] = len(win)
        metrics["window_loss"] = sum(h["loss"] for h in win) / len(win)
        # wall clock from the previous reported step's end (or the loop's start) to this
        # step's end: the previous report or checkpoint counts against the window
        metrics["window_tokens_per_s"] = sum(h["tokens"] for h in win) / max(metrics["time"] - self._window_t0, 1e-9)
        if checkpoint_now:
            self.checkpoint(step_done, metrics)
        else:
            ray.train.report(metrics)
        self._window_start, self._window_t0 = len(self.history), metrics["time"]

    # -- checkpoint -------------------------------------------------------------------------
    def checkpoint(self, step_done: int, metrics: dict[str, Any]) -> None:
        """Every rank saves its partition into a local temp dir (rank 0 adds the meta, every rank
        its completion marker, last), then reports it to Ray Train with ``metrics``."""
        import ray.train
        from ray.train import Checkpoint, CheckpointUploadMode

        from s1ray.train import checkpoint as ck

        cfg, rank = self.cfg, self.rank
        tmp = tempfile.mkdtemp(prefix=f"s1ray-ckpt-{step_done}-r{rank}-")
        try:
            self.engine.save_checkpoint(tmp, tag=ck.DS_TAG)
            if rank == 0:
                ck.write_meta(tmp, {
                    "step": step_done, "epoch": step_done / self.spe, "total_steps": self.total,
                    "world_size": self.world, "steps_per_epoch": self.spe, "history": self.history,
                    "resumed_from": self.resumed_from, "name": cfg.name, "time": time.time(),
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

    # -- export -----------------------------------------------------------------------------
    def export(self) -> None:
        """The consolidated HF model, unless an earlier attempt of this run already exported it."""
        import torch.distributed as dist

        from s1ray.train.export import export_done, export_from_engine

        cfg, history = self.cfg, self.history
        done = [export_done(cfg.resolved_export_dir(), self.total) if self.rank == 0 else None]
        dist.broadcast_object_list(done, src=0)
        if not done[0]:
            info = {
                "step": self.total, "final_loss": history[-1]["loss"] if history else None, "name": cfg.name,
                "format": cfg.format, "source_model": cfg.model, "history": history,
            }
            export_from_engine(self.engine, cfg, self.hf_config, info)

    # -- the run ----------------------------------------------------------------------------
    def fit(self) -> None:
        self.setup()
        self.resume()
        if self.rank == 0 and (self.cfg.logging.wandb or self.cfg.logging.mlflow):
            from s1ray.train.metrics import MetricsSink

            self.sink = MetricsSink(self.cfg)
        # The report window -- steps since the last report -- is the tail of ``history`` from here.
        self._window_start, self._window_t0 = len(self.history), time.time()
        for step in range(self.start, self.total):
            metrics = self.metrics = self.train_step(step)
            self.history.append({k: metrics[k] for k in HISTORY_KEYS})
            self.log_step(metrics)
            maybe_inject_fault(self.cfg, metrics["step"], self.rank)
            self.report(metrics)
        if not self.metrics and self.rank == 0:
            log.info("run already complete at step %d/%d", self.start, self.total)
        self.export()
        if self.sink is not None:
            self.sink.close()


def train_func(loop_config: dict[str, Any]) -> None:
    """Ray Train worker entry point: one :class:`SFTTrainer` per rank."""
    SFTTrainer(loop_config).fit()

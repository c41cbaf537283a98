"""One :class:`StagePlan` per job in a config: train (SFT worker), engine (vLLM replica), or a
stage that asks Ray for CPUs only (curation, API teachers, endpoint-backed eval)."""

from __future__ import annotations

from dataclasses import dataclass

from s1ray.plan import engine_memory as em
from s1ray.plan import train_memory as tm
from s1ray.plan.anchors import (GPU_BYTES, RUNTIME_OVERHEAD_BYTES, RUNTIME_OVERHEAD_SRC, S1K_DEFAULT_EXAMPLES,
                                cpu_train_estimate, gpu_train_estimate, host_ram_bytes)
from s1ray.plan.shapes import DTYPE_BYTES, ModelShape, PlanError
from s1ray.plan.terms import GIB, StagePlan, Term


@dataclass(frozen=True)
class PlanOptions:
    gpu: str = "H100"
    examples: int | None = None  # SFT examples when the dataset is not read (default: dataset.limit or s1K's 1,000)

    @property
    def gpu_bytes(self) -> int:
        if self.gpu not in GPU_BYTES:
            raise PlanError(f"--gpu: unknown device {self.gpu!r}; expected one of {sorted(GPU_BYTES)}")
        return GPU_BYTES[self.gpu]

    def device_label(self) -> str:
        return f"{self.gpu} ({self.gpu_bytes / GIB:.1f} GiB)"


def plan_train(stage: str, cfg, shape: ModelShape, opts: PlanOptions) -> StagePlan:
    """One SFT worker (TrainConfig) on its device."""
    from s1ray.train.data import total_steps
    from s1ray.train.loss import resolve_loss_impl

    world = cfg.num_workers
    res = dict(cfg.resources_per_worker or ({"GPU": 1, "CPU": 1} if cfg.use_gpu else {"CPU": 1}))
    loss_impl = resolve_loss_impl(cfg.loss_impl, cfg.block_size, cfg.loss_chunk_size)
    act_bytes = 2 if cfg.bf16 else 4
    tokens = cfg.micro_batch_size * cfg.block_size
    terms = tm.model_state_terms(shape, cfg.zero_stage, world, cfg.offload_optimizer, cfg.bf16)
    terms += tm.activation_terms(shape, tokens, cfg.gradient_checkpointing, loss_impl, cfg.loss_chunk_size, act_bytes)
    notes = [f"loss: {loss_impl} (loss_impl={cfg.loss_impl}, loss_chunk_size={cfg.loss_chunk_size}); "
             f"micro-batch {cfg.micro_batch_size} x block {cfg.block_size} = {tokens} tokens; "
             f"gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}; ZeRO-{cfg.zero_stage}"
             + (" + optimizer offload (optimizer states in host RAM)" if cfg.offload_optimizer else "")]
    if cfg.use_gpu:
        terms.append(Term("runtime overhead", RUNTIME_OVERHEAD_BYTES, RUNTIME_OVERHEAD_SRC))
        device, capacity = opts.device_label(), opts.gpu_bytes
    else:
        device, capacity = f"CPU: this machine's RAM / {world} workers", host_ram_bytes() // world
    plan = StagePlan(stage, "train", res, world, device, capacity, shape.source, terms, notes)
    if cfg.dataset.limit or opts.examples:
        examples, ex_src = (opts.examples, "--examples") if opts.examples else (cfg.dataset.limit, "dataset.limit")
    else:
        examples, ex_src = S1K_DEFAULT_EXAMPLES, "assumed: s1K's 1,000; --examples N to change"
    if cfg.use_gpu:
        passes, label = examples * cfg.epochs, f"{examples} examples ({ex_src}) x {cfg.epochs} epochs"
        if cfg.max_steps:
            passes, label = cfg.max_steps * cfg.global_batch_size, f"max_steps {cfg.max_steps} x {cfg.global_batch_size} rows"
        plan.estimates.append(gpu_train_estimate(shape, opts.gpu, world, passes, label))
    else:
        steps = total_steps(examples, cfg.global_batch_size, cfg.epochs, cfg.max_steps)
        plan.estimates.append(cpu_train_estimate(shape, world, steps, cfg.global_batch_size, cfg.block_size))
    return plan


@dataclass(frozen=True)
class EngineSpec:
    """What an engine stage runs, whatever config it came from."""

    max_model_len: int
    tp: int
    gpu_memory_utilization: float
    enforce_eager: bool
    dtype: str
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    cpu_kv_gib: float | None
    on_gpu: bool
    mode: str = "server"  # vLLM scheduler defaults: server (AsyncLLM) or offline (batch)


def engine_spec_from(engine, on_gpu: bool, mode: str = "server") -> EngineSpec:
    """From an EngineConfig (engine, serve, eval; a local teacher's, in ``offline`` mode)."""
    extra = engine.extra_engine_args
    return EngineSpec(
        engine.max_model_len, engine.tensor_parallel_size, engine.gpu_memory_utilization, engine.enforce_eager,
        engine.dtype, engine.max_num_seqs or extra.get("max_num_seqs"), extra.get("max_num_batched_tokens"),
        engine.cpu_kv_cache_gib, on_gpu, mode=mode,
    )


def plan_engine(stage: str, spec: EngineSpec, shape: ModelShape, replicas: int, res: dict, opts: PlanOptions,
                device_why: str) -> StagePlan:
    """One vLLM replica: weights, profiling peak and the KV cache left, in sequences at max_model_len."""
    dtype_bytes = DTYPE_BYTES.get(spec.dtype, 2)
    seqs = spec.max_num_seqs or em.DEFAULT_MAX_SEQS
    batched = spec.max_num_batched_tokens or em.DEFAULT_BATCHED_TOKENS[spec.mode]
    notes = [f"device: {device_why}", f"tensor parallel {spec.tp}, max_model_len {spec.max_model_len}, "
             f"max_num_seqs {seqs}, max_num_batched_tokens {batched}"]
    if spec.on_gpu:
        terms = em.engine_terms(shape, spec.tp, batched, seqs, spec.enforce_eager, dtype_bytes)
        kv_bytes, kv_tokens = em.kv_capacity(shape, spec.tp, opts.gpu_bytes, spec.gpu_memory_utilization, terms,
                                             dtype_bytes)
        terms.append(Term(f"KV cache (what gpu_memory_utilization {spec.gpu_memory_utilization} leaves)",
                          max(0, kv_bytes), em.SRC))
        device, capacity = opts.device_label(), int(opts.gpu_bytes * spec.gpu_memory_utilization)
    else:
        kv_gib = spec.cpu_kv_gib or 4
        kv_tokens = em.cpu_kv_tokens(shape, kv_gib, dtype_bytes)
        terms = [Term("weights", shape.total_params * dtype_bytes, em.SRC),
                 Term(f"KV cache (VLLM_CPU_KVCACHE_SPACE {kv_gib} GiB)", int(kv_gib * GIB), em.SRC)]
        device, capacity = f"CPU: this machine's RAM / {replicas} replicas", host_ram_bytes() // replicas
    per_token = em.kv_bytes_per_token_per_gpu(shape, spec.tp if spec.on_gpu else 1, dtype_bytes)
    notes.append(f"KV per token per device {per_token / 1024:.1f} KiB; {kv_tokens:,} tokens")
    plan = StagePlan(stage, "engine", res, replicas, device, capacity, shape.source, terms, notes)
    plan.kv_sequences = kv_tokens / spec.max_model_len
    plan.min_kv_sequences = 1.0
    if shape.max_position_embeddings and spec.max_model_len > shape.max_position_embeddings:
        plan.problems.append(f"max_model_len {spec.max_model_len} > the model's max_position_embeddings "
                             f"{shape.max_position_embeddings} (vLLM refuses it)")
    return plan


def plan_cpu_only(stage: str, res: dict, bundles: int, why: str) -> StagePlan:
    return StagePlan(stage, "none", res, bundles, "CPU", None, notes=[why])

"""Which stages a config holds and how each is planned (train, engine, serve, eval, traces,
curation, pipeline), including the pipeline's wiring of one stage's model into the next."""

from __future__ import annotations

from s1ray.pipeline.config import WIRED_MODEL
from s1ray.plan.shapes import ModelShape, PlanError, resolve_shape
from s1ray.plan.stages import PlanOptions, engine_spec_from, plan_cpu_only, plan_engine, plan_train
from s1ray.plan.terms import StagePlan


def _shape(model: str, field: str, wired: ModelShape | None) -> ModelShape:
    if wired is not None and model == WIRED_MODEL:
        return wired
    return resolve_shape(model, field)


def _engine_device(engine, gpus_asked: float | None) -> tuple[bool, str]:
    """GPU unless the config reads as a CPU engine: a CPU KV space set and no GPUs asked for."""
    if engine.cpu_kv_cache_gib is not None and engine.tensor_parallel_size == 1 and not gpus_asked:
        return False, "CPU (cpu_kv_cache_gib is set and no GPUs are asked for)"
    return True, "GPU (tensor_parallel_size > 1, GPUs asked for, or no CPU KV space set)"


def plan_serve(stage: str, cfg, opts: PlanOptions, wired: ModelShape | None = None, field: str = "engine.model"):
    on_gpu, why = _engine_device(cfg.engine, cfg.num_gpus_per_replica)
    replicas = cfg.autoscaling.max_replicas if cfg.autoscaling else cfg.num_replicas
    gpus = cfg.num_gpus_per_replica if cfg.num_gpus_per_replica is not None else cfg.engine.tensor_parallel_size
    res = {"CPU": cfg.num_cpus_per_replica, **({"GPU": gpus} if on_gpu else {})}
    shape = _shape(cfg.engine.model, field, wired)
    return [plan_engine(stage, engine_spec_from(cfg.engine, on_gpu), shape, replicas, res, opts, why)]


def plan_eval(stage: str, cfg, opts: PlanOptions, wired: ModelShape | None = None, field: str = "engine.model"):
    if cfg.engine is None:
        return [plan_cpu_only(stage, {"CPU": 1}, 1, f"sends requests to {cfg.base_url}: no engine of its own")]
    on_gpu, why = _engine_device(cfg.engine, cfg.actor_num_gpus)
    gpus = cfg.actor_num_gpus if cfg.actor_num_gpus is not None else cfg.engine.tensor_parallel_size
    res = {"CPU": cfg.actor_num_cpus, **({"GPU": gpus} if on_gpu else {})}
    shape = _shape(cfg.engine.model, field, wired)
    return [plan_engine(stage, engine_spec_from(cfg.engine, on_gpu), shape, cfg.num_engines, res, opts, why)]


def plan_traces(stage: str, cfg, opts: PlanOptions, field: str = "teacher.engine.model"):
    t = cfg.teacher
    if t.kind != "local":
        return [plan_cpu_only(stage, {"CPU": 1}, 1, f"API teacher {t.model} at {t.base_url}: no GPU here")]
    on_gpu = t.device != "cpu"
    why = f"device: {t.device}" + (" (planned as a GPU cluster)" if t.device == "auto" else "")
    spec = engine_spec_from(t.engine, on_gpu, mode="offline")
    replicas = t.max_replicas or t.replicas
    res = {"GPU": t.engine.tensor_parallel_size} if on_gpu else {"CPU": t.cpu_engine_num_cpus}
    return [plan_engine(stage, spec, resolve_shape(t.model, field), replicas, res, opts, why)]


def _base_model_shape(b) -> ModelShape:
    """The miniature's base model exactly as the pipeline makes it (s1ray.tiny_model)."""
    from s1ray.tiny_model import TinyModelSpec

    spec = TinyModelSpec(hidden_size=b.hidden_size, intermediate_size=2 * b.hidden_size,
                         num_hidden_layers=b.num_hidden_layers, num_attention_heads=b.hidden_size // 64,
                         num_key_value_heads=b.hidden_size // 64, max_position_embeddings=b.max_position_embeddings)
    cfg = {**spec.__dict__, "tie_word_embeddings": True, "model_type": "qwen2"}
    return ModelShape.from_config(cfg, "the pipeline's base_model (s1ray tiny-model shapes)")


def plan_pipeline(cfg, opts: PlanOptions) -> list[StagePlan]:
    plans: list[StagePlan] = []
    trained: ModelShape | None = None
    for stage in cfg.stages:
        if stage in ("candidates", "curation", "heldout", "base_model"):
            plans.append(plan_cpu_only(stage, {"CPU": 1}, 1, "CPU only (Ray Data / local files): no GPU terms"))
        elif stage in ("traces", "solver"):
            plans += plan_traces(stage, getattr(cfg, stage), opts, f"{stage}.teacher.engine.model")
        elif stage == "train":
            wired = _base_model_shape(cfg.base_model) if "base_model" in cfg.stages else None
            trained = _shape(cfg.train.model, "train.model", wired)
            plans.append(plan_train(stage, cfg.train, trained, opts))
        elif stage == "eval":
            plans += plan_eval(stage, cfg.eval, opts, trained, "eval.engine.model")
        elif stage == "serve":
            plans += plan_serve(stage, cfg.serve, opts, trained, "serve.engine.model")
    return plans


def plan_config(kind: str, cfg, opts: PlanOptions) -> list[StagePlan]:
    """Plans for a validated config of ``kind`` (a directory name under configs/)."""
    if kind == "train":
        return [plan_train("train", cfg, resolve_shape(cfg.model, "model"), opts)]
    if kind == "engine":
        on_gpu, why = _engine_device(cfg, None)
        res = {"GPU": cfg.tensor_parallel_size} if on_gpu else {"CPU": 1}
        return [plan_engine("engine", engine_spec_from(cfg, on_gpu), resolve_shape(cfg.model, "model"), 1, res,
                            opts, why)]
    if kind == "serve":
        return plan_serve("serve", cfg, opts)
    if kind == "eval":
        return plan_eval("eval", cfg, opts)
    if kind == "traces":
        return plan_traces("traces", cfg, opts)
    if kind == "curation":
        return [plan_cpu_only("curation", {"CPU": cfg.map_num_cpus}, 1, "CPU only (Ray Data): no GPU terms")]
    if kind == "pipeline":
        return plan_pipeline(cfg, opts)
    raise PlanError(f"--kind: cannot plan a {kind!r} config")

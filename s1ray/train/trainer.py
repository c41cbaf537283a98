"""Driver side of an SFT run: data once on the driver, then ``TorchTrainer.fit``.

The driver tokenizes and packs the dataset once (:mod:`s1ray.train.data`), reports what was
dropped or truncated, puts the result in Ray's object store and starts ``num_workers`` workers
running :func:`s1ray.train.loop.train_func` under::

    ScalingConfig(num_workers, use_gpu, resources_per_worker)
    RunConfig(name, storage_path, CheckpointConfig(num_to_keep), FailureConfig(max_failures))

A worker failure restarts the worker group from the newest complete checkpoint (up to
``max_failures`` times); submitting the same ``name`` with the same ``storage_path`` again
resumes the run (or, if it finished, only re-exports when the export is missing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s1ray.train.config import TrainConfig


@dataclass
class TrainRun:
    metrics: dict[str, Any]
    checkpoint: str | None
    export_dir: str
    data_stats: dict[str, Any]
    storage: str
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _abs_if_local(value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() or value.startswith((".", "/", "~")) else value


def _checkpoint_uri(ckpt) -> str:
    """A Ray checkpoint as a local path or a URI: Ray gives the path inside its pyarrow filesystem,
    which for S3 lacks the ``s3://`` that says where it is."""
    kind = getattr(getattr(ckpt, "filesystem", None), "type_name", "local")
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Make local paths absolute on the driver (workers may run in another directory)."""
    from s1ray.storage import check_model, resolve_output

    check_model(cfg.model, "model")
    if cfg.tokenizer:
        check_model(cfg.tokenizer, "tokenizer")
    upd: dict[str, Any] = {
        "model": _abs_if_local(cfg.model),
        "tokenizer": _abs_if_local(cfg.tokenizer),
        # relative ones under $S1RAY_STORAGE (local or s3://: Ray Train and the export speak URIs)
        "storage_path": resolve_output(cfg.storage_path, "storage_path"),
        "export_dir": None if cfg.export_dir is None else resolve_output(cfg.export_dir, "export_dir"),
        "torch_extensions_dir": None if cfg.torch_extensions_dir is None else str(Path(cfg.torch_extensions_dir).expanduser().resolve()),
    }
    out = cfg.model_copy(update=upd)
    out.dataset = cfg.dataset.model_copy(update={"source": _abs_if_local(cfg.dataset.source)})
    if out.fault_injection is not None:
        out.fault_injection = out.fault_injection.model_copy(
            update={"marker": str(Path(out.fault_injection.marker).resolve())}
        )
    return out


def check_logging(cfg: TrainConfig) -> None:
    """Fail on the driver, not in every worker, when a configured logger is not installed."""
    import importlib.util

    from s1ray.config import ConfigError

    for name, section in (("wandb", cfg.logging.wandb), ("mlflow", cfg.logging.mlflow)):
        if section is not None and importlib.util.find_spec(name) is None:
            raise ConfigError(f"logging.{name}: configured but the {name!r} package is not installed")


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    from s1ray.dataio import local_copy

    return AutoTokenizer.from_pretrained(local_copy(cfg.tokenizer or cfg.model))


def prepare_data(cfg: TrainConfig, tokenizer=None):
    """Load, render and (optionally) pack the dataset; returns (PreparedData, pad_id)."""
    from s1ray.dataio import load_records
    from s1ray.formats import get_format
    from s1ray.train.data import Renderer, prepare_examples

    tok = tokenizer or load_tokenizer(cfg)
    d = cfg.dataset
    records = load_records(d.source, split=d.split, config=d.hf_config, limit=d.limit, where="dataset.source")
    renderer = Renderer(tok, get_format(cfg.format), cfg.system_prompt, cfg.answer_prefix, cfg.label_delimiters)
    data = prepare_examples(
        records, renderer, block_size=cfg.block_size, overlong=cfg.overlong, packing=cfg.packing,
        question_field=d.question_field, thinking_field=d.thinking_field, attempt_field=d.attempt_field,
    )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return data, int(pad_id if pad_id is not None else 0)


def describe_data(stats: dict[str, Any]) -> str:
    s = (
        f"{stats['examples']} examples, {stats['kept']} kept, {stats['tokens']} tokens "
        f"({stats['label_tokens']} in the loss), mean {stats['mean_len']:.0f} / max {stats['max_len']} tokens; "
        f"{stats['overlong']} longer than block_size {stats['block_size']}"
    )
    if stats["overlong"]:
        s += f" ({stats['dropped']} dropped, {stats['truncated']} truncated, {stats['truncated_mid_answer']} cut in the answer)"
    if stats.get("packing"):
        s += f"; packed into {stats['rows']} blocks ({stats['pack_fill']:.1%} full)"
    return s


def build_trainer(cfg: TrainConfig, data_ref, pad_id: int, progress=None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from s1ray.train.loop import train_func

    resources = cfg.resources_per_worker or (None if cfg.use_gpu else {"CPU": 1})
    return TorchTrainer(
        train_func,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "data": data_ref, "pad_id": pad_id,
                           "progress": progress},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )


def run(cfg: TrainConfig, echo=print, ray_init: dict[str, Any] | None = None) -> TrainRun:
    """Prepare data, fit (resuming the run if ``name`` has checkpoints), export. Raises on failure."""
    import ray

    cfg = resolve_paths(cfg)
    check_logging(cfg)
    if cfg.torch_extensions_dir:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", cfg.torch_extensions_dir)
    data, pad_id = prepare_data(cfg)
    echo(f"[s1ray.train] data: {describe_data(data.stats)}")
    if not ray.is_initialized():
        # Ray Train's print patch makes a worker's print() both print and log, so every line a
        # library prints in a worker (DeepSpeed's, for one) would show twice; a local cluster
        # started here hands this to its workers.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        ray.init(**(ray_init or {}))
    from s1ray.storage import check_shared

    # every worker writes its checkpoint shards there, and a replacement node resumes from it
    check_shared(cfg.storage_path, "storage_path")
    check_shared(cfg.export_dir, "export_dir")
    ref = ray.put(data)
    from s1ray.train.progress import step_bar

    with step_bar(f"train {cfg.name}") as counter:
        result = build_trainer(cfg, ref, pad_id, progress=counter).fit()
    err = getattr(result, "error", None)
    if err is not None:
        raise err
    ckpt = _checkpoint_uri(result.checkpoint) if result.checkpoint is not None else None
    from s1ray.storage import announce

    announce(f"train {cfg.name}", f"{cfg.storage_path.rstrip('/')}/{cfg.name} (model: {cfg.resolved_export_dir()})", echo)
    return TrainRun(
        metrics=dict(result.metrics or {}),
        checkpoint=ckpt,
        export_dir=cfg.resolved_export_dir(),
        data_stats=data.stats,
        storage=cfg.storage_path.rstrip("/") + "/" + cfg.name,
    )

"""Which typed config model validates the YAML files under ``configs/<kind>/``."""

from __future__ import annotations

import importlib

# kind (directory under configs/) -> "module:Class"; imported lazily so that listing configs
# does not import Ray or vLLM.
CONFIG_KINDS: dict[str, str] = {
    "curation": "s1ray.curation.config:CurationConfig",
    "engine": "s1ray.engine.types:EngineConfig",
    "eval": "s1ray.eval.config:EvalConfig",
    "serve": "s1ray.serve.config:ServeConfig",
    "pipeline": "s1ray.pipeline.config:PipelineConfig",
    "traces": "s1ray.traces.config:TracesConfig",
    "train": "s1ray.train.config:TrainConfig",
}


def config_model(kind: str):
    try:
        module, cls = CONFIG_KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"no config model for configs/{kind}/; known kinds: {sorted(CONFIG_KINDS)}") from None
    return getattr(importlib.import_module(module), cls)

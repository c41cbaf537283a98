"""Ray Serve entry: ``serve run serve_app/config.yaml`` (or ``serve deploy`` it to a cluster).

Also: ``serve run serve_app.app:build config=configs/serve/tiny.yaml``.
Args (from the Serve config's ``args``): ``config`` -- a YAML file under configs/serve/;
``overrides`` -- dotted overrides (list or comma-separated string), e.g. ``engine.max_model_len=4096``.
"""

from __future__ import annotations

from pathlib import Path

from s1ray.config import load_config
from s1ray.serve.app import build_app
from s1ray.serve.config import ServeConfig


def _absolute_if_local(path: str | None) -> str | None:
    # Replicas may run in another working directory than `serve run`: pin local model paths.
    if path and Path(path).exists():
        return str(Path(path).resolve())
    return path


def build(args: dict):
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [o for o in overrides.split(",") if o]
    cfg = load_config(ServeConfig, args.get("config", "configs/serve/tiny.yaml"), overrides)
    cfg.engine.model = _absolute_if_local(cfg.engine.model)
    cfg.engine.tokenizer = _absolute_if_local(cfg.engine.tokenizer)
    return build_app(cfg)

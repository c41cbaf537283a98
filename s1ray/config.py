"""Typed job configs: YAML files + dotted CLI overrides, validated on load.

Every job has one pydantic model (``extra="forbid"``, so a typo is an error, not a silently
ignored key). ``load_config(Model, "configs/x.yaml", ["engine.max_model_len=2048"])`` reads the
YAML, applies overrides (values parsed as YAML scalars/lists), validates, and raises
:class:`ConfigError` whose message names each bad field by its dotted path.

A file may start from others, so that a block (an engine, say) is written once::

    defaults:
      - ../engine/tiny.yaml          # merged at the top level
      - engine: ../engine/tiny.yaml  # the file's mapping becomes `engine` (dotted keys nest deeper)
    engine:
      max_model_len: 1024            # this file's own keys win over its defaults

Paths are relative to the file that names them; defaults are merged in order, each one
composed the same way first, then the file itself on top. Mappings merge key by key; any
other value (a list too) replaces. Overrides apply last.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """An invalid config; the message names the fields."""


class S1Config(BaseModel):
    """Base for every s1ray config model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


C = TypeVar("C", bound=BaseModel)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(v: str | None) -> str | None:
    # A key pasted into the field would end up in logs and fingerprints: only a name passes.
    if v is not None and not _ENV_NAME.match(v):
        raise ValueError("give the NAME of an environment variable (e.g. DEEPSEEK_API_KEY), never the key itself")
    return v


# Every ``api_key_env`` field: the NAME of an environment variable, never the key.
EnvVarName = Annotated[str | None, AfterValidator(_check_env_name)]


class RayInitConfig(S1Config):
    """How a driver job joins (or starts) Ray."""

    address: str | None = Field(None, description="None: RAY_ADDRESS / the job's cluster, else a local one")
    num_cpus: int | None = Field(None, gt=0, description="local clusters only")
    object_store_memory_mb: int | None = Field(None, gt=0, description="local clusters only")

    def init_kwargs(self) -> dict[str, Any]:
        """``ray.init`` keyword arguments: join ``address``/RAY_ADDRESS, else start a local cluster."""
        kw: dict[str, Any] = {"log_to_driver": True}
        if self.address:
            kw["address"] = self.address
        elif not os.environ.get("RAY_ADDRESS"):  # a new local cluster
            kw["include_dashboard"] = False
            if self.num_cpus:
                kw["num_cpus"] = self.num_cpus
            if self.object_store_memory_mb:
                kw["object_store_memory"] = self.object_store_memory_mb * 1024**2
        return kw


def check_unique_names(names: list[str], what: str) -> None:
    """Raise ``ValueError`` naming the repeated ``names`` (``what``: e.g. "source")."""
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} names are repeated: {dup}")


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{prefix}{loc}: {msg}")
    return "; ".join(lines)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` to nested ``data`` in place (value parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. engine.max_model_len=2048")
    key, raw = override.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from None
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a mapping")
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, every other value of ``top`` replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nest(dotted: str, data: dict[str, Any]) -> dict[str, Any]:
    for part in reversed([p for p in dotted.split(".") if p]):
        data = {part: data}
    return data


def compose_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``path`` with its ``defaults:`` merged under it (see the module docstring)."""
    p = Path(path).resolve()
    if p in _seen:
        chain = " -> ".join(str(s) for s in (*_seen, p))
        raise ConfigError(f"config file {str(path)!r}: defaults include themselves ({chain})")
    data = read_yaml(path)
    defaults = data.pop("defaults", None) or []
    if not isinstance(defaults, list):
        raise ConfigError(f"config file {str(path)!r}: defaults must be a list of files")
    merged: dict[str, Any] = {}
    for entry in defaults:
        if isinstance(entry, str):
            key, rel = None, entry
        elif isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry.values())), str):
            key, rel = next(iter(entry.items()))
        else:
            raise ConfigError(f"config file {str(path)!r}: defaults entry {entry!r}: expected FILE or {{KEY: FILE}}")
        part = compose_yaml(p.parent / rel, (*_seen, p))
        merged = deep_merge(merged, _nest(key, part) if key else part)
    return deep_merge(merged, data)


def load_config(model: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build a validated ``model`` from an optional YAML file (composed) and dotted overrides."""
    data = compose_yaml(path) if path else {}
    for ov in overrides or []:
        apply_override(data, ov)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        where = f"{path}: " if path else ""
        raise ConfigError(where + format_validation_error(err)) from None

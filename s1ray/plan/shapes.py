"""A causal LM's shapes from its config.json (local, HF cache, hub, or a shipped copy), and the
parameter counts the memory estimators need. Pure: no torch, no weights."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from s1ray.plan.reference_shapes import SHIPPED

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "auto": 2}


class PlanError(ValueError):
    """The plan cannot be made; the message names the config field."""


@dataclass(frozen=True)
class ModelShape:
    """What memory arithmetic needs of a decoder-only transformer (Qwen2/Llama layout)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    max_position_embeddings: int
    source: str = ""

    @classmethod
    def from_config(cls, cfg: dict, source: str = "") -> "ModelShape":
        try:
            h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(
                hidden_size=h,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or h // heads),
                vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
                max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
                source=source,
            )
        except KeyError as exc:
            raise PlanError(f"{source or 'config.json'}: no {exc.args[0]!r} (not a decoder-only LM config?)") from None

    # -- parameter counts -------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        h, q, kv = self.hidden_size, self.q_dim, self.kv_dim
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * self.intermediate_size + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        head = 0 if self.tie_word_embeddings else self.embedding_params
        return self.embedding_params + head + self.num_hidden_layers * self.layer_params + self.hidden_size

    @property
    def largest_layer_params(self) -> int:
        """DeepSpeed's notion: the most parameters one module holds itself (not its children)."""
        h = self.hidden_size
        return max(self.embedding_params, h * self.intermediate_size, h * self.q_dim + (self.q_dim if self.qkv_bias else 0))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V of every layer for one token (all KV heads)."""
        return 2 * self.num_hidden_layers * self.kv_dim * dtype_bytes


def _read_json(path: Path, field: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{field}: cannot read {path}: {exc}") from None


def _from_hub(model: str) -> Path | None:
    """config.json from the HF cache, else from the hub unless HF_HUB_OFFLINE is set."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(model, "config.json")
        if isinstance(cached, str):
            return Path(cached)
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
            return None
        return Path(hf_hub_download(model, "config.json", etag_timeout=5))
    except Exception:  # noqa: BLE001 -- any hub failure means "not available here"
        return None


def resolve_shape(model: str, field: str = "model") -> ModelShape:
    """The shape of ``model`` (a local dir or config.json path, a shipped id, or a hub id)."""
    p = Path(model).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return ModelShape.from_config(_read_json(p / "config.json", field), f"{p / 'config.json'}")
    if p.is_file() and p.name.endswith(".json"):
        return ModelShape.from_config(_read_json(p, field), str(p))
    if model in SHIPPED:
        cfg, label = SHIPPED[model]
        return ModelShape.from_config(cfg, label)
    hub = None if p.is_absolute() or model.startswith(".") else _from_hub(model)
    if hub is not None:
        return ModelShape.from_config(_read_json(hub, field), f"hub config.json of {model}")
    raise PlanError(
        f"{field}: no config.json for {model!r} (not a local model directory, not one of the shipped "
        f"shapes {sorted(SHIPPED)}, not in the HF cache, and the hub is unreachable or HF_HUB_OFFLINE is set); "
        f"make it (e.g. `s1ray tiny-model {model}`) or override {field}=PATH/config.json"
    )

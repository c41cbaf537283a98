"""The Serve application's typed config (``configs/serve/*.yaml``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from s1ray.config import EnvVarName, S1Config
from s1ray.engine.types import EngineConfig


class AutoscalingConfig(S1Config):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(32, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class ThinkingPreset(S1Config):
    """A thinking budget a ``reasoning_effort`` value stands for (request fields override it)."""

    min_thinking_tokens: int = Field(0, ge=0)
    max_thinking_tokens: int | None = Field(None, ge=0)
    num_waits: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError("min_thinking_tokens must be <= max_thinking_tokens")
        return self


class ServeConfig(S1Config):
    engine: EngineConfig
    served_model_name: str | None = Field(None, description="the name clients use; defaults to engine.model")
    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingConfig | None = Field(None, description="if set, replaces num_replicas")
    # A vLLM replica batches many requests: let many in, queue a bounded number, reject the rest (503).
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(128, ge=1)
    retry_after_s: float = Field(5, ge=0, description="Retry-After (s) on a 503 when the queue is full")
    admin_slots: int = Field(
        8, ge=1, description="Serve request slots beyond the generation limits, kept for stats/health/models"
    )
    reasoning_effort: dict[str, ThinkingPreset] = Field(
        default_factory=lambda: {
            "none": ThinkingPreset(max_thinking_tokens=0),
            "low": ThinkingPreset(max_thinking_tokens=1024),
            "medium": ThinkingPreset(max_thinking_tokens=4096),
            "high": ThinkingPreset(max_thinking_tokens=16384),
        },
        description="budget presets the OpenAI field reasoning_effort selects",
    )
    request_timeout_s: float = Field(600, gt=0, description="per-request deadline (504 after it)")
    api_key_env: EnvVarName = Field(
        None, description="name of the environment variable holding the API key (never the key itself)"
    )
    max_n: int = Field(16, ge=1, description="largest n (samples per request)")
    default_max_answer_tokens: int = Field(512, ge=1)
    num_cpus_per_replica: float = Field(1, ge=0)
    num_gpus_per_replica: float | None = Field(None, ge=0, description="default: engine.tensor_parallel_size on GPU")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.engine.model

"""Engine configuration, request and result types (pure; shared by CLI, Serve, eval, traces)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field

from s1ray.config import S1Config
from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.control import check_method
from s1ray.formats import FORMATS, FormatName


FORCING_MODES = ("rounds", "in_engine", "auto")


class EngineConfig(S1Config):
    """One vLLM engine: the model and how to run it."""

    model: str = Field(description="HF model name or local path")
    tokenizer: str | None = Field(None, description="defaults to model")
    format: FormatName = Field("s1", description="reasoning format: s1 or think-tags")
    dtype: str = "bfloat16"
    max_model_len: int = Field(4096, gt=0)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    max_num_seqs: int | None = Field(None, gt=0)
    cpu_kv_cache_gib: int | None = Field(
        2, gt=0, description="VLLM_CPU_KVCACHE_SPACE on the CPU build (ignored on GPU)"
    )
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)
    forcing: Literal["rounds", "in_engine", "auto"] = Field(
        "auto",
        description="budget-forcing backend: rounds (a new engine request per Wait), in_engine (forcing in "
        "vLLM's sampler, one request per answer; requests it cannot do exactly use rounds), or auto "
        "(in_engine where the engine can take the logits processor, else rounds); see docs/forcing.md",
    )


MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs allows


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability, with the most likely alternatives at its position."""

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (token, id, logprob), best first


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt under one control method: ``messages`` (chat), ``prompt`` (raw text) or
    ``prompt_token_ids`` (token ids, used as given)."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    method: str = "budget_forcing"
    budget: ThinkingBudget = field(default_factory=ThinkingBudget)
    thinking_class: str | None = None
    continuation: str | None = None  # overrides the format's "Wait"; "": suppress the end, append nothing
    format: str | None = None  # overrides the engine's reasoning format
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logit_bias: dict[int, float] | None = None
    max_tries: int = 8  # rejection sampling
    request_id: str | None = None
    prompt_token_ids: list[int] | None = None
    stop: tuple[str, ...] = ()  # strings that end the answer (never the thinking)
    logprobs: int | None = None  # answer tokens' logprobs with this many alternatives each
    forcing: str | None = None  # "rounds" | "in_engine" | "auto"; None: the engine's config

    def __post_init__(self) -> None:
        check_method(self.method)
        if sum(p is not None for p in (self.messages, self.prompt, self.prompt_token_ids)) != 1:
            raise BudgetError("messages", "give exactly one of messages (chat), prompt (text) or prompt_token_ids")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise BudgetError("stop", "stop strings must be non-empty strings")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise BudgetError("logprobs", f"must be an integer in [0, {MAX_LOGPROBS}], got {self.logprobs!r}")
        if self.temperature < 0:
            raise BudgetError("temperature", f"must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BudgetError("top_p", f"must be in (0, 1], got {self.top_p}")
        if isinstance(self.max_tries, bool) or not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise BudgetError("max_tries", f"must be an integer >= 1, got {self.max_tries!r}")
        if self.format is not None and self.format not in FORMATS:
            raise BudgetError("format", f"unknown reasoning format {self.format!r}; expected one of {sorted(FORMATS)}")
        if self.forcing not in (None, *FORCING_MODES):
            raise BudgetError("forcing", f"expected one of {list(FORCING_MODES)}, got {self.forcing!r}")


@dataclass
class GenerationResult:
    thinking: str
    answer: str
    thinking_tokens: int
    answer_tokens: int
    num_waits: int
    forced_end: bool
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    method: str
    rounds: int = 1
    tries: int = 1  # rejection sampling: samples drawn
    accepted: bool = True  # rejection sampling: whether the returned sample fits
    thinking_token_ids: list[int] = field(default_factory=list, repr=False)
    answer_token_ids: list[int] = field(default_factory=list, repr=False)
    answer_logprobs: list[TokenLogprob] | None = field(default=None, repr=False)  # when requested
    stop_string: str | None = None  # the request's stop string that ended the answer

    def to_dict(self, with_ids: bool = False) -> dict[str, Any]:
        d = asdict(self)
        for key in ("answer_logprobs", "stop_string"):
            if d[key] is None:
                d.pop(key)
        if not with_ids:
            d.pop("thinking_token_ids")
            d.pop("answer_token_ids")
        return d


@dataclass
class VoteOutcome:
    answer: str | None
    distribution: dict[str, int]
    samples: list[GenerationResult]
    answers: list[str | None]

    @property
    def total_tokens(self) -> int:
        return sum(s.thinking_tokens + s.answer_tokens for s in self.samples)

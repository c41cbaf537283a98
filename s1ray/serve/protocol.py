"""The HTTP request protocol: OpenAI-compatible request models with s1ray's budget fields, and
their translation into engine requests. Pure: no Ray, no vLLM. Response bodies are in
:mod:`s1ray.serve.responses`; docs/serving_api.md is the field-by-field reference.

Every field is either honoured as OpenAI/vLLM define it or refused with a 400 naming it:
unknown fields are refused (``extra="forbid"``), and OpenAI fields s1ray does not implement are
accepted only with their no-op value (:data:`NO_OP`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.control import METHODS
from s1ray.engine.types import MAX_LOGPROBS, GenerationRequest
from s1ray.formats import FORMATS

# The reasoning formats' names, from the one vocabulary, as an enum in the OpenAPI schema.
FormatChoice = Literal[tuple(FORMATS)]  # type: ignore[valid-type]

Number = StrictInt | StrictFloat
MAX_STOP = 4  # stop strings per request, as OpenAI allows
_NO_VALUE = object()

# OpenAI fields without an s1ray implementation, and the values that ask for nothing.
NO_OP: dict[str, tuple] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto", "default"),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


class Message(BaseModel):
    """A chat message. ``content`` is a string or a list of text parts (joined with newlines, as
    vLLM does); ``developer`` is OpenAI's newer name for ``system``. An assistant turn sent back
    by a client may carry its reasoning, which is not rendered (as DeepSeek's and Qwen3's chat
    templates drop earlier turns' thinking), and empty tool/refusal fields."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[dict[str, Any]]
    name: StrictStr | None = None
    reasoning_content: StrictStr | None = None
    reasoning: StrictStr | None = None
    refusal: None = None
    tool_calls: list[None] | None = Field(None, max_length=0)
    function_call: None = None
    audio: None = None
    annotations: list[Any] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, v):
        if isinstance(v, str):
            return v
        for i, part in enumerate(v):
            if part.get("type") != "text" or not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                raise ValueError(
                    f"part {i} must be {{'type': 'text', 'text': str}}; only text parts are supported, "
                    f"got type {part.get('type')!r}"
                )
        return "\n".join(p["text"] for p in v)

    def rendered(self) -> dict[str, str]:
        """The message the chat template sees."""
        out = {"role": "system" if self.role == "developer" else self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class BudgetFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    # -- thinking budget (s1ray; thinking_token_budget is vLLM's name for the cap) --------------
    min_thinking_tokens: StrictInt | None = Field(None, ge=0)
    max_thinking_tokens: StrictInt | None = Field(None, ge=0)
    thinking_token_budget: StrictInt | None = Field(None, ge=0)
    num_waits: StrictInt | None = Field(None, ge=0)
    reasoning_effort: StrictStr | None = None
    # "": suppress the end of thinking without appending a string (the paper's "no string" ablation)
    continuation: StrictStr | None = None
    control_method: Literal[METHODS] = "budget_forcing"  # type: ignore[valid-type]
    thinking_class: Literal["short", "long"] | None = None
    reasoning_format: FormatChoice | None = None
    # -- token limits: OpenAI's bound everything generated; max_answer_tokens only the answer ----
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    max_answer_tokens: StrictInt | None = Field(None, ge=1)
    # -- sampling and output --------------------------------------------------------------------
    n: StrictInt = Field(1, ge=1)
    vote: StrictBool = False
    temperature: Number = Field(0.0, ge=0, le=2)
    top_p: Number = Field(1.0, gt=0, le=1)
    # Headroom below int64 for the per-round and per-sample seed offsets the engine adds.
    seed: StrictInt | None = Field(None, ge=-(2**62), le=2**62)
    logit_bias: dict[str, Annotated[Number, Field(ge=-100, le=100)]] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    max_tries: StrictInt = Field(8, ge=1, le=64)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    timeout_s: Number | None = Field(None, gt=0)
    user: StrictStr | None = None  # an end-user id, as OpenAI's: accepted, not used
    # -- OpenAI fields s1ray does not implement: accepted only as no-ops ------------------------
    presence_penalty: Any = None
    frequency_penalty: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    store: Any = None
    metadata: Any = None
    service_tier: Any = None

    # -- checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Cross-field rules pydantic cannot express; raises :class:`BudgetError` naming the field."""
        for name, no_op in NO_OP.items():
            value = getattr(self, name, _NO_VALUE)
            if value is not _NO_VALUE and not any(value == v and type(value) is type(v) for v in no_op):
                allowed = ", ".join("null" if v is None else repr(v) for v in no_op)
                raise BudgetError(name, f"is not supported by this server (accepted only as {allowed})")
        if self.stream_options is not None and not self.stream:
            raise BudgetError("stream_options", "is only allowed with stream: true")
        if self.max_tokens is not None and self.max_completion_tokens not in (None, self.max_tokens):
            raise BudgetError("max_tokens", "differs from max_completion_tokens; give one (they mean the same)")
        if None not in (self.max_thinking_tokens, self.thinking_token_budget) and \
                self.max_thinking_tokens != self.thinking_token_budget:
            raise BudgetError("thinking_token_budget", "is an alias of max_thinking_tokens and differs from it")
        if self.stream and (self.n > 1 or self.vote):
            raise BudgetError("stream", "streaming supports n = 1 without vote")
        if self.stream and self.logprobs_k() is not None:
            raise BudgetError("logprobs", "is not supported with stream: true")

    def logprobs_k(self) -> int | None:
        return None

    @property
    def total_field(self) -> str:
        """The name the client gave the total bound (errors name it)."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def field_error(self, exc: BudgetError) -> BudgetError:
        """``exc`` with the engine's name for the total bound replaced by the client's."""
        if "max_total_tokens" not in str(exc):
            return exc
        field = self.total_field if exc.field == "max_total_tokens" else exc.field
        message = str(exc).replace("max_total_tokens", self.total_field).split(": ", 1)[1]
        return BudgetError(field, message)

    # -- translation ----------------------------------------------------------------------------
    def budget(self, default_answer_tokens: int, effort: dict[str, dict] | None = None) -> ThinkingBudget:
        """The request's budget: explicit fields over the ``reasoning_effort`` preset's."""
        preset = self._preset(effort or {})
        cap = self.max_thinking_tokens if self.max_thinking_tokens is not None else self.thinking_token_budget
        pick = lambda value, name, default: value if value is not None else preset.get(name, default)  # noqa: E731
        try:
            return ThinkingBudget(
                min_tokens=pick(self.min_thinking_tokens, "min_thinking_tokens", 0),
                max_tokens=pick(cap, "max_thinking_tokens", None),
                num_waits=pick(self.num_waits, "num_waits", 0),
                max_answer_tokens=self.max_answer_tokens or default_answer_tokens,
                max_total_tokens=self.max_completion_tokens or self.max_tokens,
            )
        except BudgetError as exc:
            raise self.field_error(exc) from None

    def _preset(self, effort: dict[str, dict]) -> dict:
        if self.reasoning_effort is None:
            return {}
        if self.reasoning_effort not in effort:
            known = sorted(effort) or "none configured"
            raise BudgetError("reasoning_effort", f"unknown value {self.reasoning_effort!r}; this server has {known}")
        return effort[self.reasoning_effort]

    def bias(self) -> dict[int, float] | None:
        if self.logit_bias is None:
            return None
        out = {}
        for k, v in self.logit_bias.items():
            if not k.lstrip("-").isdigit():
                raise BudgetError("logit_bias", f"keys must be token ids, got {k!r}")
            out[int(k)] = float(v)
        return out

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP:
            raise BudgetError("stop", f"at most {MAX_STOP} stop strings, got {len(stops)}")
        if any(not s for s in stops):
            raise BudgetError("stop", "stop strings must not be empty")
        return tuple(stops)

    def to_request(self, default_answer_tokens: int, effort: dict[str, dict] | None = None,
                   **prompt: Any) -> GenerationRequest:
        self.check()
        return GenerationRequest(
            **prompt,
            method=self.control_method,
            budget=self.budget(default_answer_tokens, effort),
            thinking_class=self.thinking_class,
            continuation=self.continuation,
            format=self.reasoning_format,
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            seed=self.seed,
            logit_bias=self.bias(),
            max_tries=self.max_tries,
            request_id=uuid.uuid4().hex,
            stop=self.stops(),
            logprobs=self.logprobs_k(),
        )


class ChatCompletionRequest(BudgetFields):
    messages: list[Message] = Field(min_length=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)

    def logprobs_k(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise BudgetError("top_logprobs", "needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


def engine_request(body: dict[str, Any], default_answer_tokens: int,
                   effort: dict[str, dict] | None = None) -> GenerationRequest:
    """A chat-completions body as an engine request: the one way into :class:`GenerationRequest`
    for the HTTP API, ``s1ray generate`` and the eval backends, so they cannot drift apart.

    Raises pydantic's ``ValidationError`` (a ``ValueError``) or :class:`BudgetError`, each naming the field.
    """
    chat = ChatCompletionRequest.model_validate(body)
    return chat.to_request(default_answer_tokens, effort, messages=[m.rendered() for m in chat.messages])


class CompletionRequest(BudgetFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    echo: StrictBool = False
    suffix: Any = None
    best_of: Any = None

    def logprobs_k(self) -> int | None:
        if self.echo and self.logprobs is not None:
            # OpenAI then returns the prompt tokens' logprobs too (lm-eval's loglikelihood relies
            # on them); s1ray does not compute them, and answer-only ones would be silently wrong.
            raise BudgetError("echo", "with logprobs needs the prompt's logprobs, which this server does not compute")
        return self.logprobs

    def prompts(self) -> list[dict[str, Any]]:
        """One engine prompt per entry: ``{"prompt": str}`` or ``{"prompt_token_ids": [...]}``."""
        p = self.prompt
        if isinstance(p, str):
            return [{"prompt": p}]
        if not p:
            raise BudgetError("prompt", "must not be empty")
        if all(isinstance(x, int) for x in p):
            return [{"prompt_token_ids": list(p)}]
        if any(isinstance(x, list) and not x for x in p):
            raise BudgetError("prompt", "a token-id prompt must not be empty")
        key = "prompt" if isinstance(p[0], str) else "prompt_token_ids"
        return [{key: x} for x in p]


class CompareRequest(BaseModel):
    """Sequential (budget forcing) vs parallel (majority voting) at one token budget."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = None
    question: StrictStr | None = None
    messages: list[Message] | None = None
    budget_tokens: StrictInt = Field(ge=1, description="thinking tokens both sides may spend in total")
    n: StrictInt = Field(4, ge=2, description="samples on the parallel side")
    force_min: StrictBool = Field(True, description="sequential side thinks the whole budget (min = max)")
    max_answer_tokens: StrictInt = Field(64, ge=1)
    temperature: Number = Field(1.0, ge=0, le=2, description="parallel side's sampling temperature")
    seed: StrictInt | None = 0
    reference_answer: StrictStr | None = None
    reasoning_format: FormatChoice | None = None

    def chat(self) -> list[dict[str, str]]:
        if (self.question is None) == (self.messages is None):
            raise BudgetError("question", "give exactly one of question or messages")
        if self.messages is not None:
            return [m.rendered() for m in self.messages]
        return [{"role": "user", "content": self.question}]

"""The HTTP protocol: OpenAI-compatible request models with s1ray's budget fields, their
translation into engine requests, and response bodies. Pure: no Ray, no vLLM.

Budget fields ride in the request body beside OpenAI's (with the openai client: ``extra_body``):

=======================  ===================================================================
``min_thinking_tokens``  int >= 0: suppress the end of thinking (append "Wait") until reached
``max_thinking_tokens``  int >= 0: force the end of thinking here
``num_waits``            int >= 0: ignore the end of thinking at least this many times
``continuation``         str: what replaces a suppressed end (default "Wait")
``control_method``       budget_forcing | token_conditional | step_conditional |
                         class_conditional | rejection_sampling | none
``thinking_class``       short | long (class_conditional)
``reasoning_format``     s1 | think-tags (default: the server's)
``max_tokens``           int >= 1: cap on *answer* tokens (thinking has its own budget)
``n`` + ``vote``         n samples; with ``vote: true`` the answers are majority-voted
``max_tries``            rejection sampling: samples drawn at most
``timeout_s``            per-request deadline, at most the server's ``request_timeout_s``
=======================  ===================================================================
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.types import GenerationRequest, GenerationResult

Number = StrictInt | StrictFloat


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class BudgetFields(BaseModel):
    # OpenAI clients send fields we do not use (stream_options, logprobs, user...): ignore them.
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    min_thinking_tokens: StrictInt = Field(0, ge=0)
    max_thinking_tokens: StrictInt | None = Field(None, ge=0)
    num_waits: StrictInt = Field(0, ge=0)
    continuation: StrictStr | None = Field(None, min_length=1)
    control_method: Literal[
        "budget_forcing", "token_conditional", "step_conditional", "class_conditional", "rejection_sampling", "none"
    ] = "budget_forcing"
    thinking_class: Literal["short", "long"] | None = None
    reasoning_format: Literal["s1", "think-tags"] | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    n: StrictInt = Field(1, ge=1)
    vote: StrictBool = False
    temperature: Number = Field(0.0, ge=0, le=2)
    top_p: Number = Field(1.0, gt=0, le=1)
    seed: StrictInt | None = None
    logit_bias: dict[str, Number] | None = None
    max_tries: StrictInt = Field(8, ge=1, le=64)
    stream: StrictBool = False
    timeout_s: Number | None = Field(None, gt=0)

    def budget(self, default_answer_tokens: int) -> ThinkingBudget:
        return ThinkingBudget(
            min_tokens=self.min_thinking_tokens,
            max_tokens=self.max_thinking_tokens,
            num_waits=self.num_waits,
            max_answer_tokens=self.max_completion_tokens or self.max_tokens or default_answer_tokens,
        )

    def bias(self) -> dict[int, float] | None:
        if self.logit_bias is None:
            return None
        out = {}
        for k, v in self.logit_bias.items():
            if not k.lstrip("-").isdigit():
                raise BudgetError("logit_bias", f"keys must be token ids, got {k!r}")
            out[int(k)] = float(v)
        return out

    def to_request(self, default_answer_tokens: int, **prompt: Any) -> GenerationRequest:
        return GenerationRequest(
            **prompt,
            method=self.control_method,
            budget=self.budget(default_answer_tokens),
            thinking_class=self.thinking_class,
            continuation=self.continuation,
            format=self.reasoning_format,
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            seed=self.seed,
            logit_bias=self.bias(),
            max_tries=self.max_tries,
            request_id=uuid.uuid4().hex,
        )


class ChatCompletionRequest(BudgetFields):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(BudgetFields):
    prompt: StrictStr | list[StrictStr]


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
    reasoning_format: Literal["s1", "think-tags"] | None = None

    def chat(self) -> list[dict[str, str]]:
        if (self.question is None) == (self.messages is None):
            raise BudgetError("question", "give exactly one of question or messages")
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.question}]


# ---------------------------------------------------------------------------- responses
def s1ray_fields(r: GenerationResult) -> dict[str, Any]:
    return {
        "thinking_tokens": r.thinking_tokens,
        "answer_tokens": r.answer_tokens,
        "num_waits": r.num_waits,
        "forced_end": r.forced_end,
        "rounds": r.rounds,
        "tries": r.tries,
        "accepted": r.accepted,
        "method": r.method,
    }


def usage(results: list[GenerationResult]) -> dict[str, Any]:
    prompt = results[0].prompt_tokens if results else 0
    thinking = sum(r.thinking_tokens for r in results)
    completion = sum(r.thinking_tokens + r.answer_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def _finish(r: GenerationResult) -> str:
    return "stop" if r.finish_reason == "stop" else "length"


def _response(kind: str, model: str, results: list[GenerationResult], vote: dict | None) -> dict[str, Any]:
    """A non-streaming chat (``kind="chat"``) or text completion body, one choice per result."""
    choices = []
    for i, r in enumerate(results):
        choice: dict[str, Any] = {"index": i}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": r.answer, "reasoning_content": r.thinking}
        else:
            choice.update(text=r.answer, reasoning_content=r.thinking, logprobs=None)
        choice.update(finish_reason=_finish(r), s1ray=s1ray_fields(r))
        choices.append(choice)
    body = {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(results),
    }
    if vote is not None:
        body["s1ray_vote"] = vote
    return body


def chat_response(model: str, results: list[GenerationResult], vote: dict | None = None) -> dict[str, Any]:
    return _response("chat", model, results, vote)


def completion_response(model: str, results: list[GenerationResult], vote: dict | None = None) -> dict[str, Any]:
    return _response("completions", model, results, vote)


def chat_chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def completion_chunk(cid: str, model: str, text: str, finish: str | None = None, **extra: Any) -> dict:
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def error_body(message: str, param: str | None = None, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}

"""OpenAI-compatible response bodies and stream chunks. Pure: no Ray, no vLLM.

Thinking is returned under both ``reasoning`` (vLLM's current name) and ``reasoning_content``
(DeepSeek's API, and the clients written against it).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from s1ray.engine.types import GenerationResult, TokenLogprob


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
    prompt = sum(r.prompt_tokens for r in results[:1])
    thinking = sum(r.thinking_tokens for r in results)
    completion = sum(r.thinking_tokens + r.answer_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def finish_reason(r: GenerationResult) -> str:
    return "stop" if r.finish_reason == "stop" else "length"


def reasoning(text: str | None) -> dict[str, str | None]:
    return {"reasoning": text, "reasoning_content": text}


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if lps is None:
        return None
    return {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.token),
         "top_logprobs": [{"token": s, "logprob": lp, "bytes": _bytes(s)} for s, _, lp in t.top]}
        for t in lps
    ]}


def completion_logprobs(lps: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape; ``offset``: where the answer starts in ``text`` (echo)."""
    if lps is None:
        return None
    offsets, pos = [], offset
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": [{s: lp for s, _, lp in t.top} for t in lps],
        "text_offset": offsets,
    }


def _choice(kind: str, i: int, r: GenerationResult, echo: str) -> dict[str, Any]:
    if kind == "chat":
        choice = {"index": i, "message": {"role": "assistant", "content": r.answer, **reasoning(r.thinking)},
                  "logprobs": chat_logprobs(r.answer_logprobs)}
    else:
        choice = {"index": i, "text": echo + r.answer, **reasoning(r.thinking),
                  "logprobs": completion_logprobs(r.answer_logprobs, len(echo))}
    choice.update(finish_reason=finish_reason(r), stop_reason=r.stop_string, s1ray=s1ray_fields(r))
    return choice


def _response(kind: str, model: str, results: list[GenerationResult], vote: dict | None,
              echoes: list[str] | None = None) -> dict[str, Any]:
    """A non-streaming chat (``kind="chat"``) or text completion body, one choice per result."""
    echoes = echoes or [""] * len(results)
    body = {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(kind, i, r, e) for i, (r, e) in enumerate(zip(results, echoes))],
        "usage": usage(results),
    }
    if vote is not None:
        body["s1ray_vote"] = vote
    return body


def chat_response(model: str, results: list[GenerationResult], vote: dict | None = None) -> dict[str, Any]:
    return _response("chat", model, results, vote)


def completion_response(model: str, results: list[GenerationResult], vote: dict | None = None,
                        echoes: list[str] | None = None) -> dict[str, Any]:
    return _response("completions", model, results, vote, echoes)


def chat_chunk(cid: str, model: str, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict:
    """One chat stream chunk; ``delta=None`` is the usage-only chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def completion_chunk(cid: str, model: str, text: str | None, finish: str | None = None, **extra: Any) -> dict:
    """One text-completion stream chunk; ``text=None`` is the usage-only chunk (no choices)."""
    choices = [] if text is None else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def error_body(message: str, param: str | None = None, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}

"""API teachers: any OpenAI-compatible ``/chat/completions`` endpoint, asyncio + httpx.

Why a plain asyncio job on the driver and not Ray Data (``map_batches`` with an async UDF, or
``ray.data.llm.HttpRequestProcessorConfig``):

* The limits that matter are *global*: a provider's requests-per-minute and concurrency quota
  belong to one API key, not to one worker. One event loop enforces them exactly with one
  token bucket and one concurrency limit; spread over a Ray actor pool they would need a
  shared rate-limiter actor (one more round trip per request) or a static split of the quota.
* The work is I/O: one process keeps hundreds of requests in flight; a cluster adds nothing
  but scheduling. (``ray job submit`` still runs it on the cluster, like the local path.)
* Ray's ``HttpRequestProcessorConfig`` (2.60) retries only 408/429/502/503/504 and connection
  errors, not 500s or malformed bodies, limits QPS per actor, and raises once retries run out,
  whereas here a row that keeps failing must come out carrying its last error.

So: ``max_concurrency`` worker coroutines share one :class:`~s1ray.http_client.HttpClient`,
which holds the token bucket, the retries with jittered backoff, ``Retry-After`` and the
per-attempt timeout. A 200 body that is not JSON, has no choices or no content is retried like
a 5xx. A row whose attempts are exhausted is emitted with ``error`` set to the last error;
nothing is dropped.

The API key is read from the environment variable named by ``teacher.api_key_env`` and is
never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from s1ray.http_client import (
    HttpCallError, HttpClient, TokenBucket, backoff_delay, read_api_key, status_error,
)
from s1ray.traces.config import ApiTeacher, PromptConfig, SamplingConfig
from s1ray.traces.records import messages_for

log = logging.getLogger("s1ray.traces")

ApiCallError = HttpCallError  # one failed attempt (the shared client's type)


@dataclass
class ApiResult:
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_response(status: int, body: bytes, headers=None) -> ApiResult:
    """One HTTP response -> :class:`ApiResult`, or :class:`ApiCallError` saying if it is retryable."""
    snippet = body[:300].decode("utf-8", "replace").strip()
    if status != 200:
        raise status_error(status, body, headers)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiCallError(f"malformed response (not JSON): {snippet[:120]!r}", True) from None
    if not isinstance(data, dict):
        raise ApiCallError(f"malformed response (not an object): {snippet[:120]!r}", True)
    if "error" in data and not data.get("choices"):
        raise ApiCallError(f"error in a 200 response: {json.dumps(data['error'])[:300]}", True)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ApiCallError(f"malformed response (no choices): {snippet[:120]!r}", True)
    choice = choices[0]
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise ApiCallError("malformed response (choices[0].message missing)", True)
    content = msg.get("content")
    reasoning = msg.get("reasoning_content")
    if reasoning is None:
        reasoning = msg.get("reasoning")  # vLLM >= 0.10 / OpenRouter spelling
    if not isinstance(content, str) and not isinstance(reasoning, str):
        raise ApiCallError("malformed response (message has neither content nor reasoning_content)", True)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ApiResult(
        content=content if isinstance(content, str) else "",
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
    )


def api_key(teacher: ApiTeacher) -> str | None:
    return read_api_key(teacher.api_key_env, ApiSetupError, "teacher.api_key_env")


class ApiSetupError(RuntimeError):
    """The API teacher cannot run at all (no key)."""


def request_body(unit: dict[str, Any], teacher: ApiTeacher, sampling: SamplingConfig, prompt: PromptConfig) -> dict:
    body: dict[str, Any] = {
        "model": teacher.model,
        "messages": messages_for(unit, prompt),
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed + int(unit["sample_index"])
    body.update(sampling.extra)
    body.update(teacher.extra_body)
    return body


class ApiClient:
    """The teacher's requests through one shared :class:`HttpClient` (see the module docstring)."""

    def __init__(self, teacher: ApiTeacher, sampling: SamplingConfig, prompt: PromptConfig, *,
                 transport=None, rng=None):
        self.teacher = teacher
        self.sampling = sampling
        self.prompt = prompt
        self.http = HttpClient(teacher, api_key=api_key(teacher), transport=transport, rng=rng)

    @property
    def requests(self) -> int:
        return self.http.requests

    async def aclose(self) -> None:
        await self.http.aclose()

    async def complete(self, unit: dict[str, Any]) -> tuple[ApiResult | None, str | None, int, float]:
        """(result, None, attempts, latency) or (None, last error, attempts, latency)."""
        body = request_body(unit, self.teacher, self.sampling, self.prompt)
        t0 = time.perf_counter()
        out = await self.http.post(body, lambda content: parse_response(200, content),
                                   what=f"row {unit['id']}/{unit['sample_index']}")
        if out.ok:
            return out.value, None, out.attempts, time.perf_counter() - t0
        n = out.attempts
        err = f"{out.error} (gave up after {n} attempt{'s' if n != 1 else ''})"
        return None, err, n, time.perf_counter() - t0


async def run_api_units(
    units: list[dict[str, Any]],
    client: ApiClient,
    on_done: Callable[[dict[str, Any], ApiResult | None, str | None, int, float], None],
) -> None:
    """Run every unit through ``client`` with ``max_concurrency`` workers; ``on_done`` per unit.

    ``on_done`` runs on the event loop (it writes shards); an exception in it stops the job.
    """
    it = iter(units)

    async def worker() -> None:
        for unit in it:  # one shared iterator: each unit is taken by exactly one worker
            res, err, attempts, latency = await client.complete(unit)
            on_done(unit, res, err, attempts, latency)

    n = min(client.teacher.max_concurrency, len(units))
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(worker())


def run_api(units: list[dict[str, Any]], cfg, on_done, transport=None) -> int:
    """Blocking entry point; returns the number of HTTP requests made."""

    async def main() -> int:
        client = ApiClient(cfg.teacher, cfg.sampling, cfg.prompt, transport=transport)
        try:
            await run_api_units(units, client, on_done)
        finally:
            await client.aclose()
        return client.requests

    try:
        return asyncio.run(main())
    except BaseExceptionGroup as eg:  # TaskGroup wraps the first failure; re-raise it plainly
        raise _first(eg) from None


def _first(eg: BaseExceptionGroup) -> BaseException:
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


__all__ = [
    "ApiCallError", "ApiClient", "ApiResult", "ApiSetupError", "TokenBucket", "backoff_delay",
    "parse_response", "request_body", "run_api", "run_api_units",
]

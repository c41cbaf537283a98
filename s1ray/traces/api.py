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

So: ``max_concurrency`` worker coroutines share one ``httpx.AsyncClient``; every attempt
takes a token from a token bucket (``requests_per_minute``, ``burst``); 429, 5xx, 408,
timeouts (``timeout_s`` per attempt, whole request), connection errors and malformed bodies
(not JSON, no choices, no content) are retried up to ``max_retries`` times with exponential
backoff and jitter (``backoff_base_s * 2**attempt``, capped at ``backoff_max_s``, "equal
jitter"; a ``Retry-After`` header is honoured up to the cap). Other 4xx (bad request, bad
key) are not retried. A row whose attempts are exhausted is emitted with ``error`` set to the
last error; nothing is dropped.

The API key is read from the environment variable named by ``teacher.api_key_env`` and is
never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from s1ray.traces.config import ApiTeacher, PromptConfig, SamplingConfig
from s1ray.traces.records import messages_for

log = logging.getLogger("s1ray.traces")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; ``acquire`` waits for one.

    ``clock`` and ``sleep`` are injectable so the limiter is testable without real time.
    """

    def __init__(self, rate_per_s: float, capacity: float, clock=time.monotonic, sleep=asyncio.sleep):
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate_per_s
        self.capacity = capacity
        self.tokens = float(capacity)
        self.clock = clock
        self.sleep = sleep
        self.last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await self.sleep((1 - self.tokens) / self.rate)


class ApiCallError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class ApiResult:
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _retry_after(headers) -> float | None:
    v = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_response(status: int, body: bytes, headers=None) -> ApiResult:
    """One HTTP response -> :class:`ApiResult`, or :class:`ApiCallError` saying if it is retryable."""
    snippet = body[:300].decode("utf-8", "replace").strip()
    if status != 200:
        retryable = status in RETRYABLE_STATUS or status >= 500
        raise ApiCallError(f"HTTP {status}: {snippet}", retryable, _retry_after(headers))
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


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter: in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2**attempt))
    d = d / 2 + rng.uniform(0, d / 2)
    if retry_after is not None:
        d = max(d, min(retry_after, cap))
    return d


def api_key(teacher: ApiTeacher) -> str | None:
    if teacher.api_key_env is None:
        return None
    key = os.environ.get(teacher.api_key_env)
    if not key:
        raise ApiSetupError(f"teacher.api_key_env: environment variable {teacher.api_key_env} is not set (or empty)")
    return key


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
    """Retrying, rate-limited chat-completions client (see the module docstring)."""

    def __init__(self, teacher: ApiTeacher, sampling: SamplingConfig, prompt: PromptConfig, *,
                 transport=None, rng: random.Random | None = None):
        import httpx

        self.teacher = teacher
        self.sampling = sampling
        self.prompt = prompt
        self.rng = rng or random.Random()
        headers = {"content-type": "application/json", **teacher.headers}
        key = api_key(teacher)
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.url = teacher.base_url.rstrip("/") + "/chat/completions"
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(teacher.timeout_s),
            limits=httpx.Limits(max_connections=teacher.max_concurrency,
                                max_keepalive_connections=teacher.max_concurrency),
            transport=transport,
        )
        rpm = teacher.requests_per_minute
        self.limiter = (
            TokenBucket(rpm / 60.0, teacher.burst or max(1.0, rpm / 60.0)) if rpm is not None else None
        )
        self.requests = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _attempt(self, body: dict) -> ApiResult:
        import httpx

        try:
            async with asyncio.timeout(self.teacher.timeout_s):
                resp = await self.client.post(self.url, json=body)
                content = resp.content
        except (TimeoutError, httpx.TimeoutException):
            raise ApiCallError(f"timeout after {self.teacher.timeout_s:g} s", True) from None
        except httpx.TransportError as exc:
            raise ApiCallError(f"connection error: {type(exc).__name__}: {exc}", True) from None
        return parse_response(resp.status_code, content, resp.headers)

    async def complete(self, unit: dict[str, Any]) -> tuple[ApiResult | None, str | None, int, float]:
        """(result, None, attempts, latency) or (None, last error, attempts, latency)."""
        body = request_body(unit, self.teacher, self.sampling, self.prompt)
        t0 = time.perf_counter()
        last = "no attempt made"
        attempts = 0
        for attempt in range(self.teacher.max_retries + 1):
            if self.limiter is not None:
                await self.limiter.acquire()
            attempts += 1
            self.requests += 1
            try:
                return await self._attempt(body), None, attempts, time.perf_counter() - t0
            except ApiCallError as exc:
                last = str(exc)
                if not exc.retryable:
                    break
                if attempt < self.teacher.max_retries:
                    delay = backoff_delay(attempt, self.teacher.backoff_base_s, self.teacher.backoff_max_s,
                                          self.rng, exc.retry_after)
                    log.debug("row %s/%s attempt %d: %s; retrying in %.2f s",
                              unit["id"], unit["sample_index"], attempts, last, delay)
                    await asyncio.sleep(delay)
        err = f"{last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"
        return None, err, attempts, time.perf_counter() - t0


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

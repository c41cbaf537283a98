"""One OpenAI-compatible endpoint config and one async HTTP client for every stage that calls one.

The trace teacher (``traces/api.py``), the curation judge and domain classifier
(``curation/llm.py``) and the eval HTTP backend (``eval/backends.py``) all POST JSON to a
``/chat/completions`` URL and need the same things around it, so they live here once:

* :class:`EndpointConfig` -- where the endpoint is and how hard to push it: ``max_concurrency``
  requests in flight, a token bucket (``requests_per_minute``, ``burst``; every attempt takes a
  token), ``max_retries`` with exponential backoff and equal jitter (``backoff_base_s * 2**n``
  capped at ``backoff_max_s``; a ``Retry-After`` header is honoured up to the cap), and a
  whole-request ``timeout_s`` per attempt. The key is read from the environment variable that
  ``api_key_env`` names; a config never holds it.
* :class:`HttpClient` -- one ``httpx.AsyncClient`` behind those limits. 408/409/425/429, every
  5xx, timeouts and connection errors are retried; other 4xx are not (a bad request or key
  will not get better). What a 200 body means is the caller's ``parse``: it raises
  :class:`HttpCallError` (saying whether a retry may help) or returns the result. A request
  whose attempts run out gives an :class:`Outcome` carrying the last error, never an exception,
  so one bad row cannot end a job.

Each stage keeps its own defaults (a teacher waits minutes, a judge seconds) by subclassing
:class:`EndpointConfig` and redeclaring the field, and its own error wording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from pydantic import AliasChoices, Field, field_validator

from s1ray.config import EnvVarName, S1Config

log = logging.getLogger("s1ray.http")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
T = TypeVar("T")


class EndpointConfig(S1Config):
    """An OpenAI-compatible ``/chat/completions`` endpoint and the limits its client keeps."""

    base_url: str = Field(description="e.g. https://api.deepseek.com/v1 (…/chat/completions is appended)")
    model: str
    api_key_env: EnvVarName = Field(None, description="NAME of the environment variable holding the key")
    max_concurrency: int = Field(16, ge=1, description="requests in flight")
    requests_per_minute: float | None = Field(None, gt=0, description="token-bucket limit (every attempt counts)")
    burst: int | None = Field(None, ge=1, description="bucket size; default: max(1, rpm/60)")
    max_retries: int = Field(6, ge=0, description="retries after the first attempt")
    # ``backoff_s`` is the curation configs' older spelling of the same setting.
    backoff_base_s: float = Field(1.0, ge=0, validation_alias=AliasChoices("backoff_base_s", "backoff_s"))
    backoff_max_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(600.0, gt=0, description="per attempt, whole request")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers (no secrets)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request-body fields")

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, v: dict[str, str]) -> dict[str, str]:
        if any(k.lower() in ("authorization", "api-key", "x-api-key") for k in v):
            raise ValueError("no credentials in configs: put the key in an env var and name it in api_key_env")
        return v

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


class HttpCallError(Exception):
    """One failed attempt; ``retryable`` says whether another may succeed."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class Outcome(Generic[T]):
    """What :meth:`HttpClient.post` ends with: ``value``, or ``error`` (the last attempt's)."""

    value: T | None
    error: str | None
    attempts: int
    retryable: bool = False  # the last error was retryable: the attempts ran out

    @property
    def ok(self) -> bool:
        return self.error is None


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


def retry_after(headers) -> float | None:
    v = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def status_error(status: int, body: bytes, headers=None) -> HttpCallError:
    """The error of a non-200 response, retryable for 408/409/425/429 and 5xx."""
    snippet = body[:300].decode("utf-8", "replace").strip()
    retryable = status in RETRYABLE_STATUS or status >= 500
    return HttpCallError(f"HTTP {status}: {snippet}", retryable, retry_after(headers))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter: in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2**attempt))
    d = d / 2 + rng.uniform(0, d / 2)
    if retry_after is not None:
        d = max(d, min(retry_after, cap))
    return d


def read_api_key(env_name: str | None, error: type[Exception] = RuntimeError, field: str = "api_key_env") -> str | None:
    """The key in the environment variable ``env_name`` (None: no key); ``error`` if it is unset."""
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise error(f"{field}: environment variable {env_name} is not set (or empty)")
    return key


class HttpClient:
    """Concurrency-limited, rate-limited, retrying JSON POSTs to one URL (see the module docstring).

    Create and use it inside one event loop (its locks and connections belong to that loop).
    """

    def __init__(self, endpoint: EndpointConfig, *, url: str | None = None, api_key: str | None = None,
                 connect_timeout_s: float | None = None, transport=None, rng: random.Random | None = None):
        import httpx

        self.endpoint = endpoint
        self.url = url or endpoint.chat_url
        self.rng = rng or random.Random()
        headers = {"content-type": "application/json", **endpoint.headers}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        n = endpoint.max_concurrency
        connect = endpoint.timeout_s if connect_timeout_s is None else connect_timeout_s
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(endpoint.timeout_s, connect=connect),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            transport=transport,
        )
        self.slots = asyncio.Semaphore(n)
        rpm = endpoint.requests_per_minute
        self.limiter = TokenBucket(rpm / 60.0, endpoint.burst or max(1.0, rpm / 60.0)) if rpm is not None else None
        self.requests = 0  # HTTP attempts made

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _attempt(self, body: dict[str, Any], parse: Callable[[bytes], T]) -> T:
        import httpx

        timeout = self.endpoint.timeout_s
        try:
            async with self.slots:  # waiting for a slot is not part of the attempt's deadline
                async with asyncio.timeout(timeout):
                    resp = await self.client.post(self.url, json=body)
                    content = resp.content
        except (TimeoutError, httpx.TimeoutException):
            raise HttpCallError(f"timeout after {timeout:g} s", True) from None
        except httpx.TransportError as exc:
            raise HttpCallError(f"connection error: {type(exc).__name__}: {exc}", True) from None
        if resp.status_code != 200:
            raise status_error(resp.status_code, content, resp.headers)
        return parse(content)

    async def post(self, body: dict[str, Any], parse: Callable[[bytes], T], what: str = "request") -> Outcome[T]:
        """POST ``body`` until ``parse`` accepts a 200 body, a non-retryable error, or retries run out.

        Exceptions other than :class:`HttpCallError` raised by ``parse`` propagate.
        """
        ep = self.endpoint
        last: HttpCallError | None = None
        attempts = 0
        for attempt in range(ep.max_retries + 1):
            if self.limiter is not None:
                await self.limiter.acquire()
            attempts += 1
            self.requests += 1
            try:
                return Outcome(await self._attempt(body, parse), None, attempts)
            except HttpCallError as exc:
                last = exc
                if not exc.retryable:
                    break
                if attempt < ep.max_retries:
                    delay = backoff_delay(attempt, ep.backoff_base_s, ep.backoff_max_s, self.rng, exc.retry_after)
                    log.debug("%s attempt %d: %s; retrying in %.2f s", what, attempts, exc, delay)
                    await asyncio.sleep(delay)
        assert last is not None
        return Outcome(None, str(last), attempts, last.retryable)


__all__ = [
    "EndpointConfig", "HttpCallError", "HttpClient", "Outcome", "RETRYABLE_STATUS", "TokenBucket",
    "backoff_delay", "read_api_key", "retry_after", "status_error",
]

"""Where an evaluation's generations come from, behind one small async interface.

* :class:`RayEngineBackend` -- the job starts ``num_engines`` Ray actors (:class:`EngineActor`),
  each owning a :class:`~s1ray.engine.vllm_engine.BudgetEngine` and serving many requests at
  once through async actor methods (``max_concurrency``), so one engine batches them all.
* :class:`HttpBackend` -- a running s1ray Serve endpoint (OpenAI-compatible
  ``/v1/chat/completions`` with s1ray's extra body fields).

Both take a *payload* (a JSON-able dict: messages, method, budget, sampling) and return one
normalised result dict: thinking, answer, thinking_tokens, answer_tokens, num_waits, forced_end,
rounds, tries, accepted, finish_reason. Ray and vLLM are imported only when a backend starts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from typing import Any, Protocol

RESULT_FIELDS = (
    "thinking",
    "answer",
    "thinking_tokens",
    "answer_tokens",
    "num_waits",
    "forced_end",
    "rounds",
    "tries",
    "accepted",
    "finish_reason",
)


class BackendError(RuntimeError):
    """A request failed for good (after retries, or refused as invalid)."""


class Backend(Protocol):
    async def start(self) -> None: ...

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------ engine (Ray actors)
def request_from_payload(p: dict[str, Any]):
    """A :class:`GenerationRequest` from a payload (raises BudgetError on bad values).

    Through the same body and protocol as the HTTP backend, so both backends run one request.
    """
    from pydantic import ValidationError

    from s1ray.config import format_validation_error
    from s1ray.engine.budget import BudgetError
    from s1ray.serve.protocol import engine_request

    try:
        return engine_request(chat_body(p, "s1ray"), p["max_answer_tokens"])
    except ValidationError as err:
        raise BudgetError("payload", format_validation_error(err)) from None


class EngineActor:
    """Owns one BudgetEngine. Used as a Ray actor: ``ray.remote(EngineActor).options(...)``."""

    def __init__(self, engine_cfg: dict[str, Any]):
        self.engine_cfg = engine_cfg
        self.engine = None

    async def start(self) -> dict[str, Any]:
        import time

        from s1ray.engine.types import EngineConfig
        from s1ray.engine.vllm_engine import BudgetEngine

        t0 = time.perf_counter()
        self.engine = await BudgetEngine.create(EngineConfig.model_validate(self.engine_cfg))
        return {"startup_s": time.perf_counter() - t0, "pid": os.getpid()}

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        from s1ray.engine.budget import BudgetError

        try:
            req = request_from_payload(payload)
            res = await self.engine.generate(req)
        except BudgetError as exc:  # invalid for this model (e.g. prompt too long): not retryable
            return {"error": str(exc)}
        d = res.to_dict()
        return {k: d[k] for k in RESULT_FIELDS}

    def stats(self) -> dict[str, Any]:
        from dataclasses import asdict

        st = asdict(self.engine.stats)
        st.pop("aborted_ids", None)  # request ids: not a counter
        return st

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


class RayEngineBackend:
    """``num_engines`` EngineActors; requests go round-robin (each engine batches its share)."""

    def __init__(
        self,
        engine_cfg,
        num_engines: int = 1,
        num_cpus: float = 0.5,
        num_gpus: float | None = None,
        max_concurrency: int = 64,
    ):
        self.engine_cfg = engine_cfg
        self.num_engines = num_engines
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_concurrency = max_concurrency
        self.actors: list = []
        self.startup: list[dict[str, Any]] = []
        self._rr = itertools.count()

    def _gpus(self) -> float:
        import ray

        if self.num_gpus is not None:
            return self.num_gpus
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        return float(self.engine_cfg.tensor_parallel_size) if has_gpu else 0.0

    async def start(self) -> None:
        import ray

        cls = ray.remote(EngineActor)
        opts = dict(num_cpus=self.num_cpus, num_gpus=self._gpus(), max_concurrency=self.max_concurrency + 8)
        self.actors = [cls.options(**opts).remote(self.engine_cfg.model_dump()) for _ in range(self.num_engines)]
        self.startup = list(await asyncio.gather(*(a.start.remote() for a in self.actors)))

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.actors[next(self._rr) % len(self.actors)]
        out = await actor.generate.remote(payload)
        if "error" in out:
            raise BackendError(out["error"])
        return out

    async def stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(a.stats.remote() for a in self.actors)))

    async def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                await a.shutdown.remote()
            except Exception:
                pass
            ray.kill(a)
        self.actors = []


# ------------------------------------------------------------------ HTTP (Serve endpoint)
def chat_body(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI-compatible request body with s1ray's extra fields (None values left out)."""
    body = {
        "model": model,
        "messages": payload["messages"],
        "n": 1,
        "max_answer_tokens": payload["max_answer_tokens"],
        "temperature": payload.get("temperature", 0.0),
        "top_p": payload.get("top_p", 1.0),
        "seed": payload.get("seed"),
        "control_method": payload["method"],
        "min_thinking_tokens": payload.get("min_thinking_tokens") or 0,
        "max_thinking_tokens": payload.get("max_thinking_tokens"),
        "num_waits": payload.get("num_waits") or 0,
        "continuation": payload.get("continuation"),
        "thinking_class": payload.get("thinking_class"),
        "reasoning_format": payload.get("format"),
    }
    return {k: v for k, v in body.items() if v is not None}


def parse_chat_response(data: dict[str, Any]) -> dict[str, Any]:
    """The first choice of a chat completion as a normalised result dict."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"response has no choices: {str(data)[:300]}") from None
    msg = choice.get("message") or {}
    ext = choice.get("s1ray") or {}
    usage = data.get("usage") or {}
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    thinking_tokens = ext.get("thinking_tokens", reasoning)
    answer_tokens = ext.get("answer_tokens")
    if answer_tokens is None and usage.get("completion_tokens") is not None:
        answer_tokens = usage["completion_tokens"] - (thinking_tokens or 0)
    if thinking_tokens is None or answer_tokens is None:
        raise BackendError("response lacks token counts (choices[0].s1ray or usage.completion_tokens_details)")
    return {
        "thinking": msg.get("reasoning_content") or "",
        "answer": msg.get("content") or "",
        "thinking_tokens": int(thinking_tokens),
        "answer_tokens": int(answer_tokens),
        "num_waits": int(ext.get("num_waits", 0)),
        "forced_end": bool(ext.get("forced_end", False)),
        "rounds": int(ext.get("rounds", 1)),
        "tries": int(ext.get("tries", 1)),
        "accepted": bool(ext.get("accepted", True)),
        "finish_reason": choice.get("finish_reason") or "stop",
    }


class HttpBackend:
    """POST ``{base_url}/v1/chat/completions`` through the shared :class:`~s1ray.http_client.HttpClient`.

    Connection errors, timeouts, 408/409/425/429 and 5xx are retried ``retries`` times with
    jittered backoff; other 4xx and malformed answers fail the request at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "s1ray",
        api_key: str | None = None,
        timeout_s: float = 3600.0,
        max_connections: int = 64,
        retries: int = 4,
        transport=None,  # tests: httpx.MockTransport
        rng: random.Random | None = None,
    ):
        from s1ray.http_client import EndpointConfig

        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        self.endpoint = EndpointConfig(base_url=url, model=model, max_concurrency=max_connections,
                                       max_retries=retries, backoff_base_s=0.5, backoff_max_s=30.0,
                                       timeout_s=timeout_s)
        self.url = self.endpoint.chat_url
        self.model = model
        self.api_key = api_key
        self.transport = transport
        self.rng = rng
        self.client = None

    async def start(self) -> None:
        from s1ray.http_client import HttpClient

        self.client = HttpClient(self.endpoint, api_key=self.api_key, connect_timeout_s=30.0,
                                 transport=self.transport, rng=self.rng)

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        from s1ray.http_client import HttpCallError

        def parse(content: bytes) -> dict[str, Any]:
            try:
                data = json.loads(content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise HttpCallError(f"malformed response (not JSON): {content[:120]!r}", False) from None
            return parse_chat_response(data)

        out = await self.client.post(chat_body(payload, self.model), parse)
        if out.ok:
            return out.value
        if not out.retryable:
            raise BackendError(out.error)  # the request itself is bad: retrying will not help
        raise BackendError(f"{self.url}: gave up after {out.attempts} tries ({out.error})")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

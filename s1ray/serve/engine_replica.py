"""The engine side of the Serve application: one replica holds one
:class:`~s1ray.engine.vllm_engine.BudgetEngine` (vLLM ``AsyncLLM``) and its generation gate.

The HTTP ingress (:mod:`s1ray.serve.app`) calls these methods through a ``DeploymentHandle``.
Keeping the engine out of the ingress is what lets a client get an answer when a replica's node
is lost mid-request: the ingress sees the handle call fail with a ``RayActorError`` and answers
503 with Retry-After (or an SSE error event once a stream has started) instead of the proxy's
bare 500. Requests run concurrently inside a replica, so vLLM batches them; Serve health-checks
each replica (``check_health`` -> the engine) and replaces one whose engine died.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ray import serve

from s1ray.engine.types import GenerationRequest, GenerationResult, VoteOutcome
from s1ray.serve.admission import Admission
from s1ray.serve.config import ServeConfig

ADMITTED = "admitted"  # a stream's first item: the generation slot is taken, chunks follow


@serve.deployment(health_check_period_s=10, health_check_timeout_s=60)
class S1RayEngine:
    async def __init__(self, config: dict):
        from s1ray.engine.vllm_engine import BudgetEngine

        self.cfg = ServeConfig.model_validate(config)
        self.engine = await BudgetEngine.create(self.cfg.engine)
        self.admission = Admission(self.cfg.max_ongoing_requests, self.cfg.max_queued_requests)

    async def check_health(self) -> None:
        await self.engine.check_health()

    @asynccontextmanager
    async def _generation_slot(self):
        await self.admission.acquire()  # QueueFull reaches the ingress, which answers 503
        try:
            yield
        finally:
            self.admission.release()

    async def generate(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        """The requests (one HTTP request's prompts) under one generation slot, concurrently."""
        async with self._generation_slot():
            return list(await asyncio.gather(*(self.engine.generate(r) for r in reqs)))

    async def vote(self, req: GenerationRequest, n: int) -> VoteOutcome:
        async with self._generation_slot():
            return await self.engine.vote(req, n)

    async def compare(self, seq_req: GenerationRequest, par_req: GenerationRequest, n: int):
        """One budget-forced sample and an ``n``-way vote, concurrently, each with its latency."""
        async def timed(coro):
            t = time.perf_counter()
            out = await coro
            return out, time.perf_counter() - t

        async with self._generation_slot():
            return await asyncio.gather(timed(self.engine.generate(seq_req)), timed(self.engine.vote(par_req, n)))

    async def stream(self, req: GenerationRequest) -> AsyncIterator[tuple[str, object]]:
        """``(ADMITTED, None)`` once a generation slot is taken, then the engine's
        ``("thinking"|"answer", text)`` chunks and ``("result", result)``; the slot is held
        until the stream ends or is cancelled."""
        async with self._generation_slot():
            yield ADMITTED, None
            async for item in self.engine.stream(req):
                yield item

    def stats(self) -> dict:
        """Engine and admission counters, read in place: no engine call, no generation slot."""
        s = self.engine.stats
        return {
            "requests": s.requests, "rounds": s.rounds, "thinking_tokens": s.thinking_tokens,
            "answer_tokens": s.answer_tokens, "forced_ends": s.forced_ends, "continuations": s.continuations,
            "aborted_requests": s.aborted_requests,
            "engine_unfinished_requests": self.engine.engine.output_processor.get_num_unfinished_requests(),
            "generation_running": self.admission.running, "generation_queued": self.admission.waiting,
        }

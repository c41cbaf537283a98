"""The Ray Serve application: an OpenAI-compatible endpoint with budget forcing.

One replica holds one :class:`~s1ray.engine.vllm_engine.BudgetEngine` (vLLM ``AsyncLLM``);
requests run concurrently inside it, so vLLM batches them. Serve provides replicas, autoscaling,
backpressure (``max_queued_requests`` -> 503) and health checks (``check_health`` -> the engine).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.types import GenerationRequest
from s1ray.serve import protocol as P
from s1ray.serve.config import ServeConfig
from s1ray.serve.metrics import ServeMetrics

api = FastAPI(title="s1ray", description="OpenAI-compatible budget-forcing endpoint")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_


@api.exception_handler(RequestValidationError)
async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return JSONResponse(P.error_body("body: is not valid JSON", "body"), status_code=400)
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # A union type adds its member's name (e.g. "int") to the path: name the request field.
    param = loc[0] if loc else "body"
    msg = first.get("msg", "invalid")
    return JSONResponse(P.error_body(f"{param}: {msg}", param), status_code=400)


@api.exception_handler(BudgetError)
async def _bad_budget(_: Request, exc: BudgetError) -> JSONResponse:
    return JSONResponse(P.error_body(str(exc), exc.field), status_code=400)


@api.exception_handler(HTTPError)
async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
    return JSONResponse(P.error_body(exc.message, exc.param, exc.type), status_code=exc.status)


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


@serve.deployment(health_check_period_s=10, health_check_timeout_s=60)
@serve.ingress(api)
class S1RayServer:
    async def __init__(self, config: dict):
        from s1ray.engine.vllm_engine import BudgetEngine

        self.cfg = ServeConfig.model_validate(config)
        self.api_key = None
        if self.cfg.api_key_env:
            self.api_key = os.environ.get(self.cfg.api_key_env)
            if not self.api_key:
                raise RuntimeError(f"api_key_env: environment variable {self.cfg.api_key_env} is not set")
        self.engine = await BudgetEngine.create(self.cfg.engine)
        self.metrics = ServeMetrics(self.cfg.model_name)

    async def check_health(self) -> None:
        await self.engine.check_health()

    # -- checks ------------------------------------------------------------------------------
    def _auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise HTTPError(401, "missing or invalid API key (Authorization: Bearer ...)", None, "authentication_error")

    def _check_common(self, body: P.BudgetFields) -> None:
        if body.model not in (self.cfg.model_name, self.cfg.engine.model):
            raise HTTPError(400, f"model: unknown model {body.model!r}; this server serves {self.cfg.model_name!r}", "model")
        if body.n > self.cfg.max_n:
            raise HTTPError(400, f"n: must be <= {self.cfg.max_n}, got {body.n}", "n")
        if body.stream and (body.n > 1 or body.vote):
            raise HTTPError(400, "stream: streaming supports n = 1 without vote", "stream")

    def _deadline(self, body) -> float:
        t = getattr(body, "timeout_s", None)
        return min(float(t), self.cfg.request_timeout_s) if t else self.cfg.request_timeout_s

    # -- endpoints ---------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> JSONResponse:
        try:
            await self.engine.check_health()
        except Exception as exc:  # noqa: BLE001 -- any engine failure means unhealthy
            return JSONResponse({"status": "unhealthy", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._auth(request)
        return {
            "object": "list",
            "data": [{"id": self.cfg.model_name, "object": "model", "created": 0, "owned_by": "s1ray",
                      "max_model_len": self.cfg.engine.max_model_len}],
        }

    @api.post("/v1/chat/completions")
    async def chat(self, body: P.ChatCompletionRequest, request: Request):
        self._auth(request)
        self._check_common(body)
        req = body.to_request(self.cfg.default_max_answer_tokens, messages=[m.model_dump() for m in body.messages])
        return await self._complete(body, req, "chat")

    @api.post("/v1/completions")
    async def completions(self, body: P.CompletionRequest, request: Request):
        self._auth(request)
        self._check_common(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise HTTPError(400, "prompt: must not be empty", "prompt")
        if len(prompts) > 1:
            if body.stream or body.n > 1:
                raise HTTPError(400, "prompt: a list of prompts needs n = 1 and no streaming", "prompt")
            reqs = [body.to_request(self.cfg.default_max_answer_tokens, prompt=p) for p in prompts]
            for r in reqs:
                self.engine.planner.prepare(r)
            results = await self._with_deadline(body, asyncio.gather(*(self.engine.generate(r) for r in reqs)), "completions")
            return P.completion_response(self.cfg.model_name, list(results))
        req = body.to_request(self.cfg.default_max_answer_tokens, prompt=prompts[0])
        return await self._complete(body, req, "completions")

    async def _complete(self, body: P.BudgetFields, req: GenerationRequest, kind: str):
        self.engine.planner.prepare(req)  # 400 before any streaming starts
        respond = P.chat_response if kind == "chat" else P.completion_response
        if body.stream:
            return StreamingResponse(self._stream(body, req, kind), media_type="text/event-stream")
        start = time.perf_counter()
        if body.n == 1 and not body.vote:
            results = [await self._with_deadline(body, self.engine.generate(req), kind)]
            vote = None
        else:
            out = await self._with_deadline(body, self.engine.vote(req, body.n), kind)
            results = out.samples
            vote = {"answer": out.answer, "distribution": out.distribution, "answers": out.answers} if body.vote else None
        self.metrics.observe(kind, req.method, results, time.perf_counter() - start)
        return respond(self.cfg.model_name, results, vote)

    async def _with_deadline(self, body, coro, kind: str):
        try:
            async with asyncio.timeout(self._deadline(body)):
                return await coro
        except TimeoutError:
            self.metrics.timeouts.inc(tags={"endpoint": kind})
            raise HTTPError(504, f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout") from None

    async def _stream(self, body: P.BudgetFields, req: GenerationRequest, kind: str):
        cid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        model = self.cfg.model_name
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._deadline(body)):
                if kind == "chat":
                    yield _sse(P.chat_chunk(cid, model, {"role": "assistant", "content": ""}))
                async for part, payload in self.engine.stream(req):
                    if part == "result":
                        result = payload
                        break
                    if kind == "chat":
                        key = "reasoning_content" if part == "thinking" else "content"
                        yield _sse(P.chat_chunk(cid, model, {key: payload}))
                    elif part == "answer":
                        yield _sse(P.completion_chunk(cid, model, payload))
        except TimeoutError:
            self.metrics.timeouts.inc(tags={"endpoint": kind})
            yield _sse(P.error_body(f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout"))
            yield _sse("[DONE]")
            return
        self.metrics.observe(kind, req.method, [result], time.perf_counter() - start)
        extra = {"usage": P.usage([result]), "s1ray": P.s1ray_fields(result)}
        if kind == "chat":
            yield _sse(P.chat_chunk(cid, model, {}, P._finish(result), **extra))
        else:
            yield _sse(P.completion_chunk(cid, model, "", P._finish(result), **extra))
        yield _sse("[DONE]")

    @api.post("/v1/s1ray/compare")
    async def compare(self, body: P.CompareRequest, request: Request) -> dict:
        """Sequential scaling (one budget-forced sample) vs parallel scaling (N-way voting at
        about the same total thinking tokens), run concurrently."""
        from s1ray.eval.grading import extract_answer, is_equivalent

        self._auth(request)
        if body.model is not None and body.model not in (self.cfg.model_name, self.cfg.engine.model):
            raise HTTPError(400, f"model: unknown model {body.model!r}", "model")
        if body.n > self.cfg.max_n:
            raise HTTPError(400, f"n: must be <= {self.cfg.max_n}, got {body.n}", "n")
        per_sample = body.budget_tokens // body.n
        if per_sample < 1:
            raise BudgetError("budget_tokens", f"must be >= n ({body.n}) so each sample gets a token")
        msgs = body.chat()
        seq_req = GenerationRequest(
            messages=msgs, format=body.reasoning_format, seed=body.seed, request_id=uuid.uuid4().hex,
            budget=ThinkingBudget(body.budget_tokens if body.force_min else 0, body.budget_tokens,
                                  max_answer_tokens=body.max_answer_tokens),
        )
        par_req = GenerationRequest(
            messages=msgs, format=body.reasoning_format, seed=body.seed, temperature=float(body.temperature),
            budget=ThinkingBudget(0, per_sample, max_answer_tokens=body.max_answer_tokens), request_id=uuid.uuid4().hex,
        )
        self.engine.planner.prepare(seq_req)
        self.engine.planner.prepare(par_req)

        async def timed(coro):
            t = time.perf_counter()
            out = await coro
            return out, time.perf_counter() - t

        (seq, seq_s), (par, par_s) = await self._with_deadline(
            body, asyncio.gather(timed(self.engine.generate(seq_req)), timed(self.engine.vote(par_req, body.n))), "compare"
        )
        seq_answer = extract_answer(seq.answer) or (seq.answer.strip() or None)

        def correct(ans):
            if body.reference_answer is None:
                return None
            return bool(ans is not None and is_equivalent(ans, body.reference_answer))

        return {
            "budget_tokens": body.budget_tokens,
            "sequential": {
                "method": "budget_forcing", "answer": seq_answer, "thinking_tokens": seq.thinking_tokens,
                "answer_tokens": seq.answer_tokens, "total_tokens": seq.thinking_tokens + seq.answer_tokens,
                "num_waits": seq.num_waits, "forced_end": seq.forced_end, "latency_s": seq_s,
                "correct": correct(seq_answer),
            },
            "parallel": {
                "method": "majority_vote", "n": body.n, "thinking_tokens_per_sample": per_sample,
                "answer": par.answer, "distribution": par.distribution, "answers": par.answers,
                "thinking_tokens": sum(s.thinking_tokens for s in par.samples),
                "total_tokens": par.total_tokens, "latency_s": par_s, "correct": correct(par.answer),
            },
        }

    @api.get("/v1/s1ray/stats")
    async def stats(self, request: Request, min_aborted: int = 0, timeout_s: float = 0.0) -> dict:
        """Engine counters. With ``min_aborted``, wait (up to ``timeout_s``) until the engine has
        aborted that many rounds: tests synchronise on this condition instead of sleeping."""
        self._auth(request)
        if min_aborted:
            try:
                async with asyncio.timeout(min(timeout_s, 60.0)):
                    await self.engine.wait_for(lambda s: s.aborted_requests >= min_aborted)
            except TimeoutError:
                pass
        s = self.engine.stats
        eng = self.engine.engine
        return {
            "requests": s.requests, "rounds": s.rounds, "thinking_tokens": s.thinking_tokens,
            "answer_tokens": s.answer_tokens, "forced_ends": s.forced_ends, "continuations": s.continuations,
            "aborted_requests": s.aborted_requests,
            "engine_unfinished_requests": eng.output_processor.get_num_unfinished_requests(),
        }


def build_app(cfg: ServeConfig):
    """A Serve application for ``cfg`` (``serve.run(build_app(cfg))``)."""
    opts: dict = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica or 0},
    }
    if cfg.autoscaling is not None:
        opts["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        opts["num_replicas"] = cfg.num_replicas
    return S1RayServer.options(**opts).bind(cfg.model_dump())

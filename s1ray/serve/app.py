"""The Ray Serve application: an OpenAI-compatible endpoint with budget forcing.

One replica holds one :class:`~s1ray.engine.vllm_engine.BudgetEngine` (vLLM ``AsyncLLM``);
requests run concurrently inside it, so vLLM batches them. Serve provides replicas, autoscaling
and health checks (``check_health`` -> the engine); an in-replica gate
(:mod:`s1ray.serve.admission`) bounds generation, so stats and health never queue behind it.
docs/serving_api.md is the API reference.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.types import GenerationRequest
from s1ray.http_client import read_api_key
from s1ray.serve import protocol as P
from s1ray.serve import responses as R
from s1ray.serve.admission import Admission, QueueFull
from s1ray.serve.config import ServeConfig
from s1ray.serve.metrics import ServeMetrics

api = FastAPI(title="s1ray", description="OpenAI-compatible budget-forcing endpoint")
# Names pydantic puts in an error's location for a union's member type, not a request field.
_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none", "StreamOptions"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.headers = status, message, param, type_, headers


def _field_path(loc) -> tuple[str, str]:
    """(top-level field, dotted path) of a pydantic error location inside the body."""
    parts: list[str] = []
    for p in loc:
        if p == "body" or (isinstance(p, str) and (p in _TYPE_NAMES or "[" in p or p.startswith("function-"))):
            continue
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return (parts[0] if parts else "body"), ("".join(parts) or "body")


@api.exception_handler(RequestValidationError)
async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return JSONResponse(R.error_body("body: is not valid JSON", "body"), status_code=400)
    param, path = _field_path(first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        msg = "is not a field this server accepts (docs/serving_api.md lists the supported ones)"
    else:
        msg = first.get("msg", "invalid").removeprefix("Value error, ")
    return JSONResponse(R.error_body(f"{path}: {msg}", param), status_code=400)


@api.exception_handler(StarletteHTTPException)
async def _http_exception(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's own errors (a body that is not UTF-8, an unknown route): OpenAI's error shape.
    if exc.status_code == 400:
        return JSONResponse(R.error_body("body: could not be parsed as UTF-8 JSON", "body"), status_code=400)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(R.error_body(str(exc.detail), None, kind), status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(BudgetError)
async def _bad_budget(_: Request, exc: BudgetError) -> JSONResponse:
    return JSONResponse(R.error_body(str(exc), exc.field), status_code=400)


@api.exception_handler(HTTPError)
async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
    return JSONResponse(R.error_body(exc.message, exc.param, exc.type), status_code=exc.status, headers=exc.headers)


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


@serve.deployment(health_check_period_s=10, health_check_timeout_s=60)
@serve.ingress(api)
class S1RayServer:
    async def __init__(self, config: dict):
        from s1ray.engine.vllm_engine import BudgetEngine

        self.cfg = ServeConfig.model_validate(config)
        self.api_key = read_api_key(self.cfg.api_key_env)
        self.engine = await BudgetEngine.create(self.cfg.engine)
        self.metrics = ServeMetrics(self.cfg.model_name)
        self.admission = Admission(self.cfg.max_ongoing_requests, self.cfg.max_queued_requests)
        self.effort = {k: v.model_dump() for k, v in self.cfg.reasoning_effort.items()}

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

    def _request(self, body: P.BudgetFields, **prompt) -> GenerationRequest:
        """The engine request, planned (tokenized, checked to fit) before anything runs."""
        req = body.to_request(self.cfg.default_max_answer_tokens, self.effort, **prompt)
        try:
            self.engine.planner.prepare(req)
        except BudgetError as exc:
            raise body.field_error(exc) from None
        return req

    def _deadline(self, body) -> float:
        t = getattr(body, "timeout_s", None)
        return min(float(t), self.cfg.request_timeout_s) if t else self.cfg.request_timeout_s

    def _busy(self) -> HTTPError:
        return HTTPError(503, "the server is at capacity and its queue is full; retry later", None,
                         "server_overloaded", {"Retry-After": str(math.ceil(self.cfg.retry_after_s))})

    @asynccontextmanager
    async def _generation_slot(self):
        try:
            await self.admission.acquire()
        except QueueFull:
            raise self._busy() from None
        try:
            yield
        finally:
            self.admission.release()

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
        req = self._request(body, messages=[m.rendered() for m in body.messages])
        return await self._complete(body, req, "chat")

    @api.post("/v1/completions")
    async def completions(self, body: P.CompletionRequest, request: Request):
        self._auth(request)
        self._check_common(body)
        prompts = body.prompts()
        if len(prompts) > 1 and (body.stream or body.n > 1):
            raise HTTPError(400, "prompt: a list of prompts needs n = 1 and no streaming", "prompt")
        reqs = [self._request(body, **p) for p in prompts]
        echoes = [self._echo(p) for p in prompts] if body.echo else [""] * len(prompts)
        if len(reqs) == 1:
            return await self._complete(body, reqs[0], "completions", echoes[0])
        results = await self._with_deadline(
            body, lambda: asyncio.gather(*(self.engine.generate(r) for r in reqs)), "completions")
        return R.completion_response(self.cfg.model_name, list(results), echoes=echoes)

    def _echo(self, prompt: dict) -> str:
        if "prompt" in prompt:
            return prompt["prompt"]
        return self.engine.tokenizer.decode(prompt["prompt_token_ids"], skip_special_tokens=False)

    async def _complete(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str = ""):
        if body.stream:
            try:
                async with asyncio.timeout(self._deadline(body)):
                    await self.admission.acquire()
            except QueueFull:
                raise self._busy() from None
            except TimeoutError:
                raise self._timed_out(body, kind) from None
            return StreamingResponse(self._stream(body, req, kind, echo), media_type="text/event-stream")
        start = time.perf_counter()
        if body.n == 1 and not body.vote:
            results = [await self._with_deadline(body, lambda: self.engine.generate(req), kind)]
            vote = None
        else:
            out = await self._with_deadline(body, lambda: self.engine.vote(req, body.n), kind)
            results = out.samples
            vote = {"answer": out.answer, "distribution": out.distribution, "answers": out.answers} if body.vote else None
        self.metrics.observe(kind, req.method, results, time.perf_counter() - start)
        if kind == "chat":
            return R.chat_response(self.cfg.model_name, results, vote)
        return R.completion_response(self.cfg.model_name, results, vote, [echo] * len(results))

    def _timed_out(self, body, kind: str) -> HTTPError:
        self.metrics.timeouts.inc(tags={"endpoint": kind})
        return HTTPError(504, f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout")

    async def _with_deadline(self, body, work, kind: str):
        """Wait for a generation slot (503 if the queue is full), then await ``work()``, all
        within the request's deadline (504 after it)."""
        try:
            async with asyncio.timeout(self._deadline(body)):
                async with self._generation_slot():
                    return await work()
        except TimeoutError:
            raise self._timed_out(body, kind) from None

    async def _stream(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str):
        """SSE chunks; holds the generation slot ``_complete`` took until the stream ends."""
        try:
            async for line in self._stream_chunks(body, req, kind, echo):
                yield line
        finally:
            self.admission.release()

    async def _stream_chunks(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str):
        cid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        model = self.cfg.model_name
        with_usage = body.stream_options is not None and body.stream_options.include_usage
        extra = {"usage": None} if with_usage else {}
        chunk = R.chat_chunk if kind == "chat" else R.completion_chunk
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._deadline(body)):
                if kind == "chat":
                    yield _sse(R.chat_chunk(cid, model, {"role": "assistant", "content": ""}, **extra))
                elif echo:
                    yield _sse(R.completion_chunk(cid, model, echo, **extra))
                async for part, payload in self.engine.stream(req):
                    if part == "result":
                        result = payload
                        break
                    if kind == "chat":
                        delta = R.reasoning(payload) if part == "thinking" else {"content": payload}
                        yield _sse(R.chat_chunk(cid, model, delta, **extra))
                    elif part == "answer":
                        yield _sse(R.completion_chunk(cid, model, payload, **extra))
        except TimeoutError:
            self.metrics.timeouts.inc(tags={"endpoint": kind})
            yield _sse(R.error_body(f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout"))
            yield _sse("[DONE]")
            return
        self.metrics.observe(kind, req.method, [result], time.perf_counter() - start)
        last = chunk(cid, model, {} if kind == "chat" else "", R.finish_reason(result), s1ray=R.s1ray_fields(result), **extra)
        last["choices"][0]["stop_reason"] = result.stop_string
        yield _sse(last)
        if with_usage:
            yield _sse(chunk(cid, model, None, usage=R.usage([result])))
        yield _sse("[DONE]")

    @api.post("/v1/s1ray/compare")
    async def compare(self, body: P.CompareRequest, request: Request) -> dict:
        """Sequential scaling (one budget-forced sample) vs parallel scaling (N-way voting at
        about the same total thinking tokens), run concurrently."""
        from s1ray.answers import extract_answer, is_equivalent

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
            body, lambda: asyncio.gather(timed(self.engine.generate(seq_req)), timed(self.engine.vote(par_req, body.n))),
            "compare",
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
    async def stats(self, request: Request) -> dict:
        """Engine and admission counters, read in place: no engine call, no generation slot."""
        self._auth(request)
        s = self.engine.stats
        return {
            "requests": s.requests, "rounds": s.rounds, "thinking_tokens": s.thinking_tokens,
            "answer_tokens": s.answer_tokens, "forced_ends": s.forced_ends, "continuations": s.continuations,
            "aborted_requests": s.aborted_requests,
            "engine_unfinished_requests": self.engine.engine.output_processor.get_num_unfinished_requests(),
            "generation_running": self.admission.running, "generation_queued": self.admission.waiting,
        }


def build_app(cfg: ServeConfig):
    """A Serve application for ``cfg`` (``serve.run(build_app(cfg))``)."""
    # Serve admits generations up to the in-replica gate's limits plus the admin slots; the gate
    # (s1ray.serve.admission) keeps generation inside its share and answers a full queue with an
    # OpenAI-shaped 503. Serve's own router queue is left unbounded (-1): it holds only requests
    # in transit to a replica, and bounding it turned a burst's second request into a plain-text
    # "dropped due to backpressure" 503 before the gate ever saw it.
    opts: dict = {
        "max_ongoing_requests": cfg.max_ongoing_requests + cfg.max_queued_requests + cfg.admin_slots,
        "max_queued_requests": -1,
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica or 0},
    }
    if cfg.autoscaling is not None:
        opts["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        opts["num_replicas"] = cfg.num_replicas
    return S1RayServer.options(**opts).bind(cfg.model_dump())

"""The Ray Serve application: an OpenAI-compatible endpoint with budget forcing.

Two deployments, as Ray Serve LLM's router and servers: this HTTP ingress (on the head node, no
CPU reserved) parses, checks and plans each request (the tokenizer, so bad input is a 400 before
any engine sees it), then calls an engine replica (:mod:`s1ray.serve.engine_replica`: one vLLM
``AsyncLLM`` each, with its generation gate) through a ``DeploymentHandle``. Serve spreads the
calls over the replicas, autoscales and health-checks them. A replica lost mid-request (its node
went away) fails the handle call here, and the client gets a retryable 503 rather than the
proxy's bare 500. docs/serving_api.md is the API reference.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.types import GenerationRequest
from s1ray.http_client import read_api_key
from s1ray.serve import protocol as P
from s1ray.serve import responses as R
from s1ray.serve.admission import QueueFull
from s1ray.serve.config import ServeConfig
from s1ray.serve.engine_replica import ADMITTED, S1RayEngine
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


@serve.deployment
@serve.ingress(api)
class S1RayServer:
    async def __init__(self, config: dict, engine):
        from s1ray.engine.planner import RequestPlanner

        self.cfg = ServeConfig.model_validate(config)
        self.api_key = read_api_key(self.cfg.api_key_env)
        self.engine = engine  # DeploymentHandle of S1RayEngine
        self.planner = await asyncio.to_thread(RequestPlanner.from_config, self.cfg.engine)
        self.metrics = ServeMetrics(self.cfg.model_name)
        self.effort = {k: v.model_dump() for k, v in self.cfg.reasoning_effort.items()}

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
            self.planner.prepare(req)
        except BudgetError as exc:
            raise body.field_error(exc) from None
        return req

    def _deadline(self, body) -> float:
        t = getattr(body, "timeout_s", None)
        return min(float(t), self.cfg.request_timeout_s) if t else self.cfg.request_timeout_s

    def _busy(self) -> HTTPError:
        return HTTPError(503, "the server is at capacity and its queue is full; retry later", None,
                         "server_overloaded", {"Retry-After": str(math.ceil(self.cfg.retry_after_s))})

    def _lost(self) -> HTTPError:
        return HTTPError(503, "the replica serving this request was lost (its node went away); retry", None,
                         "server_unavailable", {"Retry-After": str(math.ceil(self.cfg.retry_after_s))})

    async def _call(self, body, kind: str, response, first_item: bool = False):
        """Await an engine call (or a stream's first item) within the request's deadline: 504
        after it; 503 with Retry-After for a full queue or a replica lost mid-request. A
        deadline or a client that went away cancels the call, so the engine aborts it."""
        try:
            async with asyncio.timeout(self._deadline(body)):
                return await (response.__anext__() if first_item else response)
        except TimeoutError:
            response.cancel()
            raise self._timed_out(body, kind) from None
        except asyncio.CancelledError:
            response.cancel()
            raise
        except QueueFull:
            raise self._busy() from None
        except RayActorError:
            raise self._lost() from None

    # -- endpoints ---------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> JSONResponse:
        try:
            await self.engine.check_health.remote()
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
        results = await self._call(body, "completions", self.engine.generate.remote(reqs))
        return R.completion_response(self.cfg.model_name, results, echoes=echoes)

    def _echo(self, prompt: dict) -> str:
        if "prompt" in prompt:
            return prompt["prompt"]
        return self.planner.tokenizer.decode(prompt["prompt_token_ids"], skip_special_tokens=False)

    async def _complete(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str = ""):
        if body.stream:
            chunks = self.engine.options(stream=True).stream.remote(req)
            await self._call(body, kind, chunks, first_item=True)  # admitted: a 503/504 is still possible here
            return StreamingResponse(self._stream(body, req, kind, echo, chunks), media_type="text/event-stream")
        start = time.perf_counter()
        if body.n == 1 and not body.vote:
            results = await self._call(body, kind, self.engine.generate.remote([req]))
            vote = None
        else:
            out = await self._call(body, kind, self.engine.vote.remote(req, body.n))
            results = out.samples
            vote = {"answer": out.answer, "distribution": out.distribution, "answers": out.answers} if body.vote else None
        self.metrics.observe(kind, req.method, results, time.perf_counter() - start)
        if kind == "chat":
            return R.chat_response(self.cfg.model_name, results, vote)
        return R.completion_response(self.cfg.model_name, results, vote, [echo] * len(results))

    def _timed_out(self, body, kind: str) -> HTTPError:
        self.metrics.timeouts.inc(tags={"endpoint": kind})
        return HTTPError(504, f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout")

    async def _stream(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str, chunks):
        """SSE lines; the engine's stream is cancelled if it does not run to its end (a client
        that went away), which frees its generation slot and aborts the engine request."""
        finished = False
        try:
            async for line in self._stream_chunks(body, req, kind, echo, chunks):
                yield line
            finished = True
        finally:
            if not finished:
                chunks.cancel()

    async def _stream_chunks(self, body: P.BudgetFields, req: GenerationRequest, kind: str, echo: str, chunks):
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
                async for part, payload in chunks:
                    if part == "result":
                        result = payload
                        break
                    if kind == "chat":
                        delta = R.reasoning(payload) if part == "thinking" else {"content": payload}
                        yield _sse(R.chat_chunk(cid, model, delta, **extra))
                    elif part == "answer":
                        yield _sse(R.completion_chunk(cid, model, payload, **extra))
        except TimeoutError:
            chunks.cancel()
            self.metrics.timeouts.inc(tags={"endpoint": kind})
            yield _sse(R.error_body(f"request exceeded its deadline of {self._deadline(body)} s", "timeout_s", "timeout"))
            yield _sse("[DONE]")
            return
        except RayActorError:  # the status line is sent already: say it in the stream
            e = self._lost()
            yield _sse(R.error_body(e.message, None, e.type))
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
        self.planner.prepare(seq_req)
        self.planner.prepare(par_req)
        (seq, seq_s), (par, par_s) = await self._call(body, "compare",
                                                      self.engine.compare.remote(seq_req, par_req, body.n))
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
        """One engine replica's counters, read in place there: no engine call, no generation slot."""
        self._auth(request)
        try:
            return await self.engine.stats.remote()
        except RayActorError:
            raise self._lost() from None


def build_app(cfg: ServeConfig):
    """A Serve application for ``cfg`` (``serve.run(build_app(cfg))``)."""
    # Serve admits generations up to the in-replica gate's limits plus the admin slots; the gate
    # (s1ray.serve.admission) keeps generation inside its share and answers a full queue with an
    # OpenAI-shaped 503. Serve's own router queue is left unbounded (-1): it holds only requests
    # in transit to a replica, and bounding it turned a burst's second request into a plain-text
    # "dropped due to backpressure" 503 before the gate ever saw it.
    per_replica = cfg.max_ongoing_requests + cfg.max_queued_requests + cfg.admin_slots
    opts: dict = {
        "max_ongoing_requests": per_replica,
        "max_queued_requests": -1,
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica or 0},
    }
    if cfg.autoscaling is not None:
        opts["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        opts["num_replicas"] = cfg.num_replicas
    engine = S1RayEngine.options(**opts).bind(cfg.model_dump())
    # The ingress holds every request the replicas can; it is pinned to the head node, where
    # Serve's controller and proxy live, so losing a worker node never takes the API with it.
    most = cfg.autoscaling.max_replicas if cfg.autoscaling is not None else cfg.num_replicas
    ingress = {"num_replicas": 1, "max_ongoing_requests": per_replica * most, "max_queued_requests": -1,
               "ray_actor_options": {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}}}
    return S1RayServer.options(**ingress).bind(cfg.model_dump(), engine)

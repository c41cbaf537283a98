"""Budget forcing on vLLM's async engine.

Design: the pure :class:`BudgetForcer` decides; vLLM is a token source. Each *round* is one
engine request over ``prompt_ids + forcer.sequence`` as a ``TokensPrompt`` (token ids, never
re-tokenized text, so there is no drift and no out-of-vocabulary re-feed as in s1's reference).
``max_tokens`` of a round is the forcer's exact remaining budget and single-token end triggers
are ``stop_token_ids``, so the engine stops exactly where the forcer would; multi-token triggers
are caught in the stream and the request aborted.

Continuing after "Wait" starts a new request whose prefix is all cached: with
``enable_prefix_caching`` only the new tail (the last partial KV block + "Wait") is prefilled.
That is the *rounds* backend, the reference. The *in-engine* backend
(:mod:`s1ray.engine.inengine`, chosen per request by ``EngineConfig.forcing`` /
``GenerationRequest.forcing``) runs the same forcer inside vLLM's sampler as a logits processor:
it decides *before* sampling whether the model would end thinking and forces the continuation
instead, so one engine request carries the whole answer. It takes the requests for which
:func:`~s1ray.engine.forcing.in_engine_supports` says it is exact; docs/forcing.md compares them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from s1ray.answers import extract_answer
from s1ray.engine.budget import BudgetError, BudgetForcer, FormatIds, Phase, Signal, ThinkingBudget
from s1ray.engine.control import within_bounds
from s1ray.engine.planner import RequestPlanner
from s1ray.engine.progress import ForcedOutput
from s1ray.engine.stops import cut_at_stop
from s1ray.engine.types import EngineConfig, GenerationRequest, GenerationResult, VoteOutcome
from s1ray.engine.voting import majority_vote

ABORTED_IDS_KEPT = 64


@dataclass
class EngineStats:
    """Counters the Serve app exports as Ray metrics."""

    requests: int = 0
    rounds: int = 0
    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_ends: int = 0
    continuations: int = 0
    in_engine_requests: int = 0  # of ``requests``: forced in vLLM's sampler, one engine request each
    aborted_requests: int = 0  # requests the caller cancelled (disconnect, deadline), aborted in vLLM
    # The most recent aborted requests' base ids (tests find theirs); bounded, because a replica
    # lives as long as its deployment.
    aborted_ids: deque[str] = field(default_factory=lambda: deque(maxlen=ABORTED_IDS_KEPT))


def _platform_defaults(cfg: EngineConfig) -> dict:
    """``extra_engine_args`` over per-platform defaults.

    vLLM's CPU build crashes the engine ("CPU Generator does not use offset") when a seeded
    request's prompt is prefilled in chunks, which happens once many prompts arrive together;
    budget forcing sends seeded rounds, so chunked prefill is off by default on the CPU.
    """
    from vllm.platforms import current_platform

    defaults = {"enable_chunked_prefill": False} if current_platform.is_cpu() else {}
    return {**defaults, **cfg.extra_engine_args}


def _forcing_args(cfg: EngineConfig) -> dict:
    """Engine args that register the in-engine forcing processor, or {} where it cannot be
    (vLLM rejects custom logits processors under speculative decoding)."""
    if cfg.forcing == "rounds":
        return {}
    if cfg.extra_engine_args.get("speculative_config"):
        if cfg.forcing == "in_engine":
            raise BudgetError("forcing", "in_engine needs custom logits processors, which speculative decoding rejects")
        return {}
    from vllm.platforms import current_platform

    from s1ray.engine.inengine import PROCESSOR_FQCN, WORKER_EXTENSION_FQCN

    if not current_platform.is_cpu():
        # vLLM's V2 model runner takes only its own processor interface (token history on the device).
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    return {"logits_processors": [PROCESSOR_FQCN], "worker_extension_cls": WORKER_EXTENSION_FQCN}


class BudgetEngine:
    """An async vLLM engine that runs budget-forced generation for many requests at once.

    Use from a running event loop: ``engine = await BudgetEngine.create(cfg)``.
    """

    def __init__(self, cfg: EngineConfig, engine, planner: RequestPlanner, in_engine: bool = False):
        self.cfg = cfg
        self.engine = engine
        _LIVE.add(self)
        self.planner = planner
        self.tokenizer = planner.tokenizer
        self.format_ids = planner.format_ids
        self.stats = EngineStats()
        self._stats_changed = asyncio.Condition()
        self._cleanup: set[asyncio.Task] = set()  # strong refs: running abort tasks
        self.in_engine = in_engine  # the forcing processor is registered in this engine

    async def wait_for(self, predicate) -> None:
        """Wait until ``predicate(self.stats)`` holds (tests and admin endpoints sync on this)."""
        async with self._stats_changed:
            await self._stats_changed.wait_for(lambda: predicate(self.stats))

    async def _abort(self, rid: str | None, base_id: str) -> None:
        try:
            if rid is not None:
                await self.engine.abort(rid)
            self.stats.aborted_requests += 1
            self.stats.aborted_ids.append(base_id)
            async with self._stats_changed:
                self._stats_changed.notify_all()
        finally:
            self._cleanup.discard(asyncio.current_task())

    @classmethod
    async def create(cls, cfg: EngineConfig) -> "BudgetEngine":
        from vllm import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        if cfg.cpu_kv_cache_gib is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
        forcing, extra = _forcing_args(cfg), _platform_defaults(cfg)
        if forcing and "logits_processors" in extra:  # the user's own processors run before ours
            forcing["logits_processors"] = [*extra.pop("logits_processors"), *forcing["logits_processors"]]
        if forcing and "worker_extension_cls" in extra:
            raise BudgetError("extra_engine_args", "worker_extension_cls is taken by in-engine forcing; "
                              "set forcing: rounds to use your own")
        from s1ray.dataio import local_copy

        model = local_copy(cfg.model)  # a model on object storage is copied to this node
        args = AsyncEngineArgs(
            model=model,
            tokenizer=local_copy(cfg.tokenizer) if cfg.tokenizer else model,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=cfg.enforce_eager,
            seed=cfg.seed,
            **({"max_num_seqs": cfg.max_num_seqs} if cfg.max_num_seqs else {}),
            **forcing,
            **extra,
        )
        planner = RequestPlanner.from_config(cfg)
        # vLLM's server context, as `vllm serve` has it: the default ENGINE_CONTEXT has no entry
        # in vLLM's per-device scheduler table and falls back to 128 sequences / 2048 batched
        # tokens on any device (an H100 server gets 1024/8192). On the CPU the two agree.
        engine = AsyncLLM.from_engine_args(args, usage_context=UsageContext.OPENAI_API_SERVER)
        return cls(cfg, engine, planner, in_engine=bool(forcing))

    def shutdown(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.shutdown()
            _disarm_del(engine)

    async def check_health(self) -> None:
        """Raises if the engine is dead (Serve's health check relies on this)."""
        if self.engine.errored:
            raise RuntimeError(f"vLLM engine is dead: {self.engine.dead_error}")
        await self.engine.check_health()

    # -- generation ------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest) -> GenerationResult:
        result = None
        async for kind, payload in self.stream(req, chunks=False):
            if kind == "result":
                result = payload
        assert result is not None
        return result

    async def stream(self, req: GenerationRequest, chunks: bool = True) -> AsyncIterator[tuple[str, object]]:
        """Yield ("thinking"|"answer", text) chunks as they are final, then ("result", result).
        ``chunks=False`` yields the result alone: it decodes the whole text once, so a caller
        that does not stream (``generate``) skips decoding every delta on the way."""
        plan, prompt, ids = self.planner.prepare(req)
        if not plan.resample:
            async for item in self._stream_one(req, prompt, ids, plan.budget, req.seed, chunks=chunks):
                yield item
            return
        # Rejection sampling: draw until a sample's thinking fits the bounds (capped).
        best = None
        for t in range(req.max_tries):
            seed = None if req.seed is None else req.seed + t
            res = await self._collect(req, prompt, ids, plan.budget, seed, temperature=req.temperature or 1.0)
            res.tries, res.method = t + 1, req.method
            res.accepted = within_bounds(res.thinking_tokens, plan.bounds)
            if best is None or res.accepted or res.thinking_tokens < best.thinking_tokens:
                best = res
            if res.accepted:
                break
        best.tries = t + 1
        if chunks:
            yield "thinking", best.thinking
            yield "answer", best.answer
        yield "result", best

    async def _collect(self, req, prompt, ids, budget, seed, temperature=None) -> GenerationResult:
        result = None
        async for kind, payload in self._stream_one(req, prompt, ids, budget, seed, temperature, chunks=False):
            if kind == "result":
                result = payload
        return result

    async def _stream_one(
        self, req, prompt: list[int], ids: FormatIds, budget: ThinkingBudget, seed, temperature=None,
        chunks: bool = True,
    ) -> AsyncIterator[tuple[str, object]]:
        from vllm import TokensPrompt

        base_id = req.request_id or uuid.uuid4().hex
        temperature = req.temperature if temperature is None else temperature
        if self._forces_in_engine(req, ids, temperature):
            from s1ray.engine.inengine_client import stream_in_engine

            async for item in stream_in_engine(self, req, prompt, ids, budget, seed, temperature, base_id, chunks):
                yield item
            return
        forcer = BudgetForcer(ids, budget)
        output = ForcedOutput(forcer, self.tokenizer, req.stop, req.logprobs, chunks)
        self.stats.requests += 1
        forcer.start()
        rounds, rid = 0, None
        try:
            while forcer.phase is not Phase.DONE:
                seq = forcer.sequence
                room = self.cfg.max_model_len - len(prompt) - len(seq)
                if room <= 0:
                    forcer.end_of_round()
                    continue
                rid = f"{base_id}-{rounds}"
                rounds += 1
                sp = self._round_params(forcer, req, room, temperature, seed, rounds)
                gen = self.engine.generate(TokensPrompt(prompt_token_ids=prompt + seq), sp, rid)
                sig, finished = Signal.CONTINUE, False
                try:
                    async for out in gen:
                        comp = out.outputs[0]
                        for j, tok in enumerate(comp.token_ids):
                            sig = output.feed(tok, comp.logprobs[j] if comp.logprobs else None)
                            if sig is not Signal.CONTINUE:
                                break
                        finished = out.finished
                        if sig is Signal.CONTINUE and finished and isinstance(comp.stop_reason, int):
                            # vLLM may leave the stop token out of token_ids: account for it.
                            if not comp.token_ids or comp.token_ids[-1] != comp.stop_reason:
                                sig = output.feed(comp.stop_reason)
                        for chunk in output.flush():
                            yield chunk
                        if sig is not Signal.CONTINUE:
                            break
                finally:
                    await gen.aclose()
                if sig is not Signal.CONTINUE and not finished:
                    await self.engine.abort(rid)  # the forcer ended this round before the engine did
                rid = None
                if sig is Signal.CONTINUE:
                    forcer.end_of_round()
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away (client disconnect, deadline) at any point: free the engine.
            # A task of its own: a second cancel() of this one must not interrupt the abort.
            self._cleanup.add(asyncio.get_running_loop().create_task(self._abort(rid, base_id)))
            raise
        for chunk in output.flush(final=True):
            yield chunk
        result = self._result(forcer, len(prompt), req, rounds)
        result.answer_logprobs, result.stop_string = output.logprobs, output.answer.matched
        yield "result", result

    @staticmethod
    def _round_params(forcer: BudgetForcer, req, room: int, temperature, seed, rounds: int):
        """vLLM's sampling params for one round of the forcer (``rounds`` counts this one)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=min(forcer.round_max_tokens(), room),
            min_tokens=forcer.round_min_tokens(),
            stop_token_ids=forcer.round_stop_ids(),
            ignore_eos=True,  # the forcer, not the generation config, decides where turns end
            temperature=temperature,
            top_p=req.top_p,
            seed=None if seed is None else seed + 7919 * rounds,
            logit_bias=req.logit_bias,
            logprobs=req.logprobs if forcer.phase is Phase.ANSWER else None,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
            skip_special_tokens=False,
        )

    def _forces_in_engine(self, req: GenerationRequest, ids: FormatIds, temperature: float) -> bool:
        """The backend for one request: its ``forcing`` (else the engine's), in_engine only where
        :func:`~s1ray.engine.forcing.in_engine_supports` says it is exact."""
        from s1ray.engine.forcing import in_engine_supports

        mode = req.forcing or self.cfg.forcing
        if mode == "rounds":
            return False
        if not self.in_engine:
            if req.forcing == "in_engine":
                raise BudgetError("forcing", "this engine was built without the in-engine forcing processor")
            return False
        return in_engine_supports(req, ids, temperature) is None

    def _result(self, forcer: BudgetForcer, prompt_len: int, req: GenerationRequest, rounds: int) -> GenerationResult:
        dec = lambda t: self.tokenizer.decode(t, skip_special_tokens=False)  # noqa: E731
        st = self.stats
        st.rounds += rounds
        st.thinking_tokens += forcer.thinking_tokens
        st.answer_tokens += forcer.answer_tokens
        st.forced_ends += int(forcer.forced_end)
        st.continuations += forcer.num_waits
        return GenerationResult(
            thinking=dec(forcer.thinking_ids),
            answer=cut_at_stop(dec(forcer.answer_ids), req.stop)[0],
            thinking_tokens=forcer.thinking_tokens,
            answer_tokens=forcer.answer_tokens,
            num_waits=forcer.num_waits,
            forced_end=forcer.forced_end,
            finish_reason=forcer.answer_finish or "length",
            prompt_tokens=prompt_len,
            method=req.method,
            rounds=rounds,
            thinking_token_ids=list(forcer.thinking_ids),
            answer_token_ids=list(forcer.answer_ids),
        )

    # -- parallel scaling ------------------------------------------------------------------
    async def vote(self, req: GenerationRequest, n: int) -> VoteOutcome:
        """N samples of one prompt, run concurrently (prefix caching shares the prompt's KV),
        answers extracted and majority-voted; ties go to the earliest sample."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BudgetError("n", f"must be an integer >= 1, got {n!r}")
        base = req.request_id or uuid.uuid4().hex
        reqs = [
            replace(req, seed=None if req.seed is None else req.seed + i, request_id=f"{base}-s{i}")
            for i in range(n)
        ]
        samples = await asyncio.gather(*(self.generate(r) for r in reqs))
        answers = [extract_answer(s.answer) or (s.answer.strip() or None) for s in samples]
        vote = majority_vote(answers)
        return VoteOutcome(vote.answer, vote.distribution, list(samples), answers)


# -- interpreter exit -----------------------------------------------------------------------------
# AsyncLLM.__del__ calls shutdown() again. When the object is only collected during interpreter
# finalization, that call fails (module globals already gone) and printing the error imports
# ``io`` -- which can deadlock on the import lock against a thread still running, hanging the
# process after all its work is done (seen: pytest after its summary line). So: shut down every
# live engine at exit, while the interpreter is whole, and make __del__ a no-op once shut down.
_LIVE: "weakref.WeakSet[BudgetEngine]" = weakref.WeakSet()
_DISARMED: dict[type, type] = {}


def _disarm_del(llm) -> None:
    """Swap ``llm``'s class for a subclass whose ``__del__`` does nothing (it is shut down)."""
    cls = type(llm)
    sub = _DISARMED.get(cls)
    if sub is None:
        sub = _DISARMED[cls] = type(f"ShutDown{cls.__name__}", (cls,), {"__del__": lambda self: None})
    try:
        llm.__class__ = sub
    except TypeError:  # an engine type whose layout forbids it: leave its __del__ alone
        pass


@atexit.register
def _shutdown_live_engines() -> None:
    for eng in list(_LIVE):
        try:
            eng.shutdown()
        except Exception:  # noqa: BLE001 -- best effort at exit
            pass

"""The frontend side of the in-engine backend: one vLLM request per answer, forcing in the sampler.

The request carries its budget in ``SamplingParams.extra_args`` for
:class:`~s1ray.engine.inengine.BudgetForcingLogitsProcessor`; its output ids are the whole
sequence (thinking with continuations, the end-of-thinking ids, the answer), which
:class:`~s1ray.engine.forcing.OutputSplitter` splits as it streams. It stops on the end-of-turn
id (sampled, or forced at the answer cap) or at the context.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

from s1ray.engine.budget import FormatIds, Phase, ThinkingBudget
from s1ray.engine.forcing import PAYLOAD_KEY, OutputSplitter, forcing_payload

log = logging.getLogger(__name__)


def request_max_tokens(budget: ThinkingBudget, ids: FormatIds, room: int) -> int:
    """The whole answer's token bound: thinking cap + end of thinking + answer cap + end of turn."""
    cap = budget.thinking_cap
    if cap is None:
        return room
    return min(room, cap + len(ids.thinking_end) + budget.max_answer_tokens + 1)


async def _continuations(engine, key: str, split: OutputSplitter) -> int:
    if not split.may_hold_continuations():
        return 0
    found = (await engine.engine.collective_rpc("s1ray_forcing_waits", args=([key],)))[0]
    if key in found:
        return found[key]
    # The worker's record is gone (more finished requests than it keeps): count the ids.
    log.warning("in-engine forcing: no continuation count for %s; counting continuation ids", key)
    return split.thinking_ids.count(split.ids.continuation[0])


async def stream_in_engine(
    engine, req, prompt: list[int], ids: FormatIds, budget: ThinkingBudget, seed, temperature: float, base_id: str,
    chunks: bool = True,
) -> AsyncIterator[tuple[str, object]]:
    """Like the rounds loop in ``BudgetEngine._stream_one``, in a single engine request (text
    chunks only with ``chunks``: the result decodes the whole text anyway)."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from s1ray.engine.detok import IncrementalDecoder

    split = OutputSplitter(ids, budget)
    rid = f"{base_id}-0"
    # The processor's state is keyed by this, not by the request id a caller may reuse: a key seen
    # again can then only be the same request back from preemption.
    key = uuid.uuid4().hex
    sp = SamplingParams(
        max_tokens=request_max_tokens(budget, ids, engine.cfg.max_model_len - len(prompt)),
        stop_token_ids=sorted(ids.answer_stop),
        ignore_eos=True,
        temperature=temperature,
        top_p=req.top_p,
        seed=seed,
        logit_bias=req.logit_bias,
        output_kind=RequestOutputKind.DELTA,
        detokenize=False,
        skip_special_tokens=False,
        extra_args={PAYLOAD_KEY: forcing_payload(key, ids, budget, temperature, seed)},
    )
    decoders = {"thinking": IncrementalDecoder(engine.tokenizer), "answer": IncrementalDecoder(engine.tokenizer)}
    emitted = {"thinking": 0, "answer": 0}

    def flush(final: bool = False):
        out = []
        if not chunks:  # nobody reads them: the result decodes the text once
            return out
        for phase, toks in (("thinking", split.thinking_ids), ("answer", split.answer_ids)):
            upto = split.final_thinking() if phase == "thinking" and not final else len(toks)
            if upto > emitted[phase]:
                text = decoders[phase].push(toks[emitted[phase] : upto])
                emitted[phase] = upto
                if text:
                    out.append((phase, text))
        return out

    engine.stats.requests += 1
    engine.stats.in_engine_requests += 1
    live = rid
    try:
        gen = engine.engine.generate(TokensPrompt(prompt_token_ids=prompt), sp, rid)
        try:
            async for out in gen:
                comp = out.outputs[0]
                for tok in comp.token_ids:
                    split.push(tok)
                if out.finished:
                    live = None
                    if split.phase is not Phase.DONE and isinstance(comp.stop_reason, int):
                        split.push(comp.stop_reason)  # vLLM may leave the stop id out of token_ids
                for chunk in flush():
                    yield chunk
        finally:
            await gen.aclose()
        split.end()
        split.num_waits = await _continuations(engine, key, split)
    except (asyncio.CancelledError, GeneratorExit):
        # The caller went away (client disconnect, deadline): free the engine, in a task of its
        # own so that a second cancel() of this one cannot interrupt the abort.
        engine._cleanup.add(asyncio.get_running_loop().create_task(engine._abort(live, base_id)))
        raise
    for chunk in flush(final=True):
        yield chunk
    yield "result", engine._result(split, len(prompt), req, 1)

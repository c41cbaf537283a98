"""The in-engine backend against the rounds backend on a real vLLM engine (CPU, tiny random model).

Both run on the session engine (built with ``forcing: auto``, so it has the processor), chosen
per request.
"""

import asyncio
import math

import pytest

from s1ray.engine.budget import ThinkingBudget
from s1ray.engine.types import GenerationRequest
from s1ray.formats import FORMATS

pytestmark = pytest.mark.vllm

QUESTIONS = [[{"role": "user", "content": "What is 12 + 30?"}], [{"role": "user", "content": "Name a prime."}]]
CONT = " Wait, let me check"  # several tokens: a cap can fall inside it
GRID = [  # (budget, continuation override)
    (ThinkingBudget(16, None, max_answer_tokens=6), None),  # min only
    (ThinkingBudget(0, 24, max_answer_tokens=6), None),  # max only
    (ThinkingBudget(10, 40, max_answer_tokens=6), None),  # both
    (ThinkingBudget(0, 60, num_waits=2, max_answer_tokens=6), None),  # num_waits
    (ThinkingBudget(13, 13, max_answer_tokens=4), CONT),  # the cap falls inside a continuation
    (ThinkingBudget(0, 0, max_answer_tokens=4), None),  # zero cap
    (ThinkingBudget(4, None, max_answer_tokens=6, max_total_tokens=20), None),  # total bound (OpenAI max_tokens)
]


def trigger_of(engine, fmt):
    return engine.planner.ids_for(FORMATS[fmt], None).end_triggers[0][0]


def test_greedy_in_engine_equals_rounds_token_for_token(engine, loop):
    cases = [(fmt, q, budget, cont, bias) for fmt in sorted(FORMATS) for q in QUESTIONS[:1]
             for budget, cont in GRID for bias in (None, 6.0)]

    def req(fmt, q, budget, cont, bias, forcing):
        lb = {trigger_of(engine, fmt): bias} if bias else None  # with a bias the model tries to stop
        return GenerationRequest(messages=q, format=fmt, budget=budget, continuation=cont, logit_bias=lb,
                                 forcing=forcing)

    async def run(forcing):  # each backend's requests together, one backend after the other
        return await asyncio.gather(*(engine.generate(req(*c, forcing)) for c in cases))

    def timing():  # the processor's own account of its cost (bench_engine.py reports it)
        return loop.run(engine.engine.collective_rpc("s1ray_forcing_timing"))[0]

    before, t0 = engine.stats.in_engine_requests, timing()
    ref = loop.run(run("rounds"))
    t1 = timing()
    got = loop.run(run("in_engine"))
    t2 = timing()
    assert engine.stats.in_engine_requests == before + len(cases)
    assert t1 == t0  # rounds requests never enter the processor
    assert t2["steps"] - t1["steps"] >= max(len(b.thinking_token_ids) for b in got)
    assert 0 < t2["apply_s"] - t1["apply_s"] < t2["step_s"] - t1["step_s"]  # apply is a part of the step
    for c, a, b in zip(cases, ref, got):
        assert b.rounds == 1
        assert (b.thinking_token_ids, b.answer_token_ids) == (a.thinking_token_ids, a.answer_token_ids), c
        assert (b.num_waits, b.forced_end, b.finish_reason, b.thinking, b.answer) == (
            a.num_waits, a.forced_end, a.finish_reason, a.thinking, a.answer), c
    # the grid really exercised both ends of the budget
    assert any(r.num_waits for r in ref) and any(r.forced_end and r.num_waits for r in ref)
    assert any(r.finish_reason == "length" and r.answer_tokens for r in ref)


def ks_statistic(a: list[int], b: list[int]) -> float:
    values = sorted(set(a) | set(b))
    return max(abs(sum(x <= v for x in a) / len(a) - sum(x <= v for x in b) / len(b)) for v in values)


def test_sampled_in_engine_matches_rounds_in_distribution(engine, loop):
    """Temperature 1, many seeds: Control is 100% and the number of Waits per answer has the same
    distribution under both backends. Tolerances: the means within 4 standard errors of their
    difference, and the two-sample Kolmogorov-Smirnov statistic under its 0.1% critical value
    (1.95 * sqrt(2 / n)); both are deterministic for these seeds."""
    n, lo, hi = 160, 24, 48
    bias = {trigger_of(engine, "s1"): math.log(1999 / 7)}  # tries to stop about every 8 tokens

    async def run(forcing):
        return await asyncio.gather(*(engine.generate(GenerationRequest(
            messages=QUESTIONS[i % 2], budget=ThinkingBudget(lo, hi, max_answer_tokens=3), logit_bias=bias,
            temperature=1.0, seed=1000 + i, forcing=forcing)) for i in range(n)))

    ref, got = loop.run(run("rounds")), loop.run(run("in_engine"))
    assert all(r.rounds == 1 for r in got)
    for r in ref + got:  # Control = 100%
        assert lo <= r.thinking_tokens <= hi and r.thinking_tokens == len(r.thinking_token_ids)
    wa, wb = [r.num_waits for r in ref], [r.num_waits for r in got]
    ma, mb = sum(wa) / n, sum(wb) / n
    va = sum((x - ma) ** 2 for x in wa) / (n - 1)
    vb = sum((x - mb) ** 2 for x in wb) / (n - 1)
    assert ma > 1, "the model hardly tried to stop: the test would not compare anything"
    assert abs(ma - mb) <= 4 * math.sqrt((va + vb) / n), (ma, mb, va, vb)
    assert ks_statistic(wa, wb) <= 1.95 * math.sqrt(2 / n), (sorted(wa), sorted(wb))
    assert len({tuple(r.thinking_token_ids) for r in got}) > n // 2  # really sampled, not one path


def test_top_p_and_multi_token_requests_fall_back_to_rounds(engine, loop):
    before = engine.stats.in_engine_requests
    r = loop.run(engine.generate(GenerationRequest(messages=QUESTIONS[0], budget=ThinkingBudget(4, 16, max_answer_tokens=2),
                                                   temperature=1.0, top_p=0.9, seed=1,
                                                   logit_bias={trigger_of(engine, "s1"): 8.0})))
    assert engine.stats.in_engine_requests == before and r.rounds > 1 and 4 <= r.thinking_tokens <= 16


def test_a_reused_request_id_starts_from_a_fresh_forcer(engine, loop):
    """Callers may reuse request ids; the processor must not take the second request for the
    first one back from preemption (that one's forcer is DONE and would end the answer at once)."""
    req = GenerationRequest(messages=QUESTIONS[0], budget=ThinkingBudget(0, 16, max_answer_tokens=5),
                            request_id="reused-id", forcing="in_engine")
    a, b = loop.run(engine.generate(req)), loop.run(engine.generate(req))
    assert (a.thinking_token_ids, a.answer_token_ids) == (b.thinking_token_ids, b.answer_token_ids)
    assert a.thinking_tokens == 16 and a.answer_tokens == 5


def test_apply_equals_the_one_it_replaced():
    """The processor's apply (rows re-read only at events, one softmax for the stop draws, one index
    copy per step) writes the same logits, step for step, as the version before it
    (bench/_forcing_before.py) on a mixed batch: greedy and sampled rows at two temperatures,
    min/max/num_waits budgets, a model that often tries to stop."""
    import torch
    from bench_modules import load_bench
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from s1ray.engine.budget import FormatIds
    from s1ray.engine.forcing import PAYLOAD_KEY, forcing_payload
    from s1ray.engine.inengine import BudgetForcingLogitsProcessor

    before = load_bench("_forcing_before")
    ids = FormatIds(thinking_end=(203, 1, 685, 203), end_triggers=((1,), (2,), (0,)), continuation=(436, 9),
                    answer_stop=frozenset({0, 2}))
    budgets = [ThinkingBudget(20, 40, max_answer_tokens=8), ThinkingBudget(0, 12, max_answer_tokens=30),
               ThinkingBudget(30, None, max_answer_tokens=5), ThinkingBudget(0, 60, num_waits=3, max_answer_tokens=4)]

    def processor(cls):  # 12 forced rows and, last, one plain request the processor must not touch
        proc, outs = cls(None, torch.device("cpu"), False), [[] for _ in range(13)]
        added = [(i, SamplingParams(extra_args={PAYLOAD_KEY: forcing_payload(
            f"r{i}", ids, budgets[i % 4], (0.0, 1.0, 0.7)[i % 3], i)}), [], outs[i]) for i in range(12)]
        added.append((12, SamplingParams(), [], outs[12]))
        proc.update_state(BatchUpdate(batch_size=13, removed=[], added=added, moved=[]))
        return proc, outs

    now, old = processor(BudgetForcingLogitsProcessor), processor(before.ProcessorBefore)
    gen = torch.Generator().manual_seed(3)
    for step in range(120):
        logits = torch.randn(13, 700, generator=gen)
        logits[:, 1] += 3.0  # an end trigger is often the model's choice
        a, b = now[0].apply(logits.clone()), old[0].apply(logits.clone())
        assert torch.equal(a, b), f"step {step}"
        assert torch.equal(a[12], logits[12])
        for proc, outs in (now, old):
            for out, tok in zip(outs, a.argmax(-1).tolist()):
                out.append(tok)
    assert [r.forcer.num_waits for _, r in sorted(now[0].rows.items())] == \
        [r.forcer.num_waits for _, r in sorted(old[0].rows.items())]
    assert sum(r.forcer.num_waits for r in now[0].rows.values()) > 0  # Waits really happened

"""Engine benchmark: what budget forcing costs on top of plain vLLM generation, per backend.

Four comparisons, each printed as a ratio of configurations measured in one run:

(a) budget forcing vs plain generation, for both backends. C concurrent prompts; budget forcing
    with min = max = T thinking tokens and a logit bias on the end-of-thinking trigger, so the
    model tries to stop often and "Wait"s really happen -- with the *rounds* backend each is a new
    vLLM request, with the *in-engine* backend the logits processor forces it inside the one
    request; vs plain ``AsyncLLM.generate`` of the same prompts with ``max_tokens = T + A,
    ignore_eos=True`` (the same number of tokens in one request each), same sampling parameters
    and logit bias. Ratios: output tokens/s of each backend / plain, and in-engine / rounds.
(b) rounds + prefix caching vs rounds without it: the same budget-forced workload on an engine
    with ``enable_prefix_caching=False``, where every round re-prefills the prompt and all the
    thinking so far. Ratio: tokens/s with / without prefix caching.
(c) N-way voting (``engine.vote(req, n=N)``: N samples in one call, run concurrently) vs N
    separate ``engine.generate`` calls one after another. Ratio: time of N sequential / vote.
(d) a loaded engine: ``max_num_seqs = S`` and L > S concurrent prompts at one Wait level, so
    requests queue; a rounds continuation re-enters the queue behind the others. Per-request
    latency p50/p99 and tokens/s, rounds / in-engine.

One engine per configuration, started and shut down in turn. Run:
``python bench/bench_engine.py [--model PATH | --shape qwen2.5-0.5b] [--quick]``.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid

from _common import (Timer, base_parser, device_name, engine_config, messages, ratio, resolve_model, shutdown,
                     table, trigger_id, write_json)


def parse_args(argv=None):
    p = base_parser(__doc__.split("\n")[0], "bench_engine")
    p.add_argument("--concurrency", "-c", type=int, default=None, help="concurrent prompts (default 16)")
    p.add_argument("--thinking-tokens", "-t", type=int, default=None,
                   help="T: min = max thinking tokens (default 512, --quick 128)")
    p.add_argument("--answer-tokens", type=int, default=8, help="A: answer cap")
    p.add_argument("--stop-every", type=int, nargs="+", default=[0, 16, 1], metavar="K",
                   help="workload levels, one (a)/(b) row each: a logit bias on the end trigger so the "
                        "model tries to stop about every K sampled tokens (0: no bias, 1: every token). "
                        "The bias assumes a random-init model's near-uniform logits; with a real model "
                        "give --bias. Default: %(default)s")
    p.add_argument("--bias", type=float, nargs="+", default=None,
                   help="explicit logit biases instead of --stop-every (0: none)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of (a) and (b), both sides (default 1: greedy decoding of a random "
                        "model flips between never and always stopping as the bias grows)")
    p.add_argument("--n", type=int, default=None, help="N for voting (default 8, --quick 4)")
    p.add_argument("--loaded-seqs", type=int, default=4, help="S: max_num_seqs of the loaded engine (d)")
    p.add_argument("--loaded-concurrency", type=int, default=None, help="L: prompts at once in (d) (default 4 S)")
    p.add_argument("--reps", type=int, default=None,
                   help="alternating repetitions of each same-engine measurement; the best is kept "
                        "(default 3, --quick 1)")
    a = p.parse_args(argv)
    a.concurrency = a.concurrency or 16
    a.thinking_tokens = a.thinking_tokens or (128 if a.quick else 512)
    a.n = a.n or (4 if a.quick else 8)
    a.reps = a.reps or (1 if a.quick else 3)
    a.loaded_concurrency = a.loaded_concurrency or 4 * a.loaded_seqs
    return a


# ------------------------------------------------------------------------------------------ runs
def bias_levels(args, vocab_size: int) -> list[tuple[str, float]]:
    """(label, logit bias on the trigger) per workload level."""
    if args.bias is not None:
        return [(f"bias {b:g}", b) for b in args.bias]
    out = []
    for k in args.stop_every:
        if k <= 0:
            out.append(("no Wait", 0.0))
        elif k == 1:
            out.append(("stop every token", 50.0))
        else:  # p(trigger) = 1/k when the other vocab_size - 1 logits are about equal
            out.append((f"stop every ~{k}", math.log((vocab_size - 1) / (k - 1))))
    return out


BACKENDS = ("rounds", "in_engine")


def bf_request(i: int, T: int, A: int, bias: dict | None, temperature: float, seed=None, forcing=None):
    from s1ray.engine.budget import ThinkingBudget
    from s1ray.engine.types import GenerationRequest

    return GenerationRequest(messages=messages(i), budget=ThinkingBudget(T, T, max_answer_tokens=A),
                             logit_bias=bias, temperature=temperature, seed=seed, forcing=forcing)


def latency_stats(lat: list[float]) -> dict:
    s = sorted(lat)
    q = lambda f: s[min(len(s) - 1, round(f * (len(s) - 1)))]  # noqa: E731
    return dict(p50_s=q(0.5), p99_s=q(0.99))


async def timed(coro):
    t = time.perf_counter()
    res = await coro
    return res, time.perf_counter() - t


async def run_budget_forcing(engine, C, T, A, bias, temperature, forcing="rounds") -> dict:
    reqs = [bf_request(i, T, A, bias, temperature, forcing=forcing) for i in range(C)]
    inside = forcing == "in_engine"
    t0 = await forcing_timing(engine) if inside else None
    with Timer() as t:
        done = await asyncio.gather(*(timed(engine.generate(r)) for r in reqs))
    t1 = await forcing_timing(engine) if inside else None
    res, lat = [r for r, _ in done], [x for _, x in done]
    cont = len(engine.format_ids.continuation)
    think = sum(r.thinking_tokens for r in res)
    ans = sum(r.answer_tokens for r in res)
    waits = sum(r.num_waits for r in res)
    assert all(r.thinking_tokens == T for r in res), [r.thinking_tokens for r in res]  # Control = 100%
    return dict(seconds=t.s, requests=C, thinking_tokens=think, answer_tokens=ans, tokens=think + ans,
                sampled_tokens=think + ans - waits * cont,  # minus the injected "Wait" tokens
                waits_per_req=waits / C, rounds_per_req=sum(r.rounds for r in res) / C,
                tok_s=(think + ans) / t.s, **latency_stats(lat),
                **({"apply_share": (t1["apply_s"] - t0["apply_s"]) / (t1["step_s"] - t0["step_s"])} if inside else {}))


async def forcing_timing(engine) -> dict:
    """The in-engine processor's totals: seconds in its apply, and the engine's step period
    while forced rows are in the batch (both timed inside the engine, in the same steps)."""
    return (await engine.engine.collective_rpc("s1ray_forcing_timing"))[0]


async def run_plain(engine, C, T, A, bias, temperature) -> dict:
    """Plain vLLM on the same engine: the same prompts' ids, one request each, T + A tokens."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    prompts = [engine.planner.prepare(bf_request(i, T, A, bias, temperature))[1] for i in range(C)]
    sp = SamplingParams(max_tokens=T + A, ignore_eos=True, temperature=temperature, logit_bias=bias,
                        output_kind=RequestOutputKind.DELTA, detokenize=False, skip_special_tokens=False)

    async def one(p):
        n = 0
        async for out in engine.engine.generate(TokensPrompt(prompt_token_ids=p), sp, uuid.uuid4().hex):
            n += len(out.outputs[0].token_ids)
        return n

    with Timer() as t:
        done = await asyncio.gather(*(timed(one(p)) for p in prompts))
    tok = sum(n for n, _ in done)
    return dict(seconds=t.s, requests=C, tokens=tok, sampled_tokens=tok, rounds_per_req=1.0, waits_per_req=0.0,
                tok_s=tok / t.s, **latency_stats([x for _, x in done]))


async def run_vote(engine, n, T, A, bias, reps: int) -> dict:
    """n samples at temperature 1: one vote() call vs n generate() calls one after another
    (and, for reference, n separate generate() calls at once). Best of ``reps``; the order of
    the three alternates between repetitions, so no side always runs first."""
    tok = lambda rs: sum(r.thinking_tokens + r.answer_tokens for r in rs)  # noqa: E731

    async def vote(seed):
        out = await engine.vote(bf_request(0, T, A, bias, 1.0, seed=seed), n)
        assert len(out.samples) == n
        return out.samples

    async def sequential(seed):
        return [await engine.generate(bf_request(0, T, A, bias, 1.0, seed=seed + i)) for i in range(n)]

    async def concurrent(seed):
        return await asyncio.gather(*(engine.generate(bf_request(0, T, A, bias, 1.0, seed=seed + i)) for i in range(n)))

    runs = {"vote": vote, "sequential": sequential, "concurrent": concurrent}
    secs = {k: [] for k in runs}
    tokens = {}
    for rep in range(reps):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for k in order:
            with Timer() as t:
                samples = await runs[k](1 + 100 * rep)
            secs[k].append(t.s)
            tokens[k] = tok(samples)
    return dict(n=n, vote_s=min(secs["vote"]), sequential_s=min(secs["sequential"]),
                concurrent_s=min(secs["concurrent"]), vote_tokens=tokens["vote"],
                sequential_tokens=tokens["sequential"], concurrent_tokens=tokens["concurrent"],
                seconds_all=secs)


def best(runs: list[dict]) -> dict:
    """The neighbours' load only ever slows a run down: keep the fastest repetition."""
    b = dict(max(runs, key=lambda r: r["tok_s"]))
    b["tok_s_all"] = [round(r["tok_s"], 1) for r in runs]
    return b


async def with_engine(cfg, body):
    from s1ray.engine.vllm_engine import BudgetEngine

    t = time.perf_counter()
    engine = await BudgetEngine.create(cfg)
    print(f"  engine up in {time.perf_counter() - t:.0f} s", flush=True)
    try:
        # Warm-up: the first requests pay one-off costs (allocation, caches); a full batch, or
        # the first level's first run is measured on a colder engine than the rest.
        for forcing in BACKENDS if engine.in_engine else BACKENDS[:1]:
            await run_budget_forcing(engine, 16, 64, 2, None, 1.0, forcing)
        await run_plain(engine, 16, 64, 2, None, 1.0)
        return await body(engine)
    finally:
        shutdown(engine)


async def measure_levels(engine, args, levels, trig, backends=BACKENDS, C=None) -> dict:
    """Per level: plain vLLM and each backend ("bf" is rounds, "ie" in-engine), alternating."""
    C, T, A, temp = C or args.concurrency, args.thinking_tokens, args.answer_tokens, args.temperature
    key = {"rounds": "bf", "in_engine": "ie"}
    out = {}
    for label, b in levels:
        bias = {trig: b} if b else None
        runs = {"plain": [], **{key[f]: [] for f in backends}}
        for rep in range(args.reps):  # alternate, so all see about the same neighbours
            order = ["plain", *backends]
            for name in order if rep % 2 == 0 else reversed(order):
                r = (await run_plain(engine, C, T, A, bias, temp) if name == "plain"
                     else await run_budget_forcing(engine, C, T, A, bias, temp, name))
                runs["plain" if name == "plain" else key[name]].append(r)
        out[label] = {"bias": b, **{k: best(v) for k, v in runs.items()}}
        if "ie" in runs:
            out[label]["ie"]["apply_share_all"] = [r["apply_share"] for r in runs["ie"]]
        line = "   ".join(f"{k} {out[label][k]['tok_s']:7.0f} tok/s ({out[label][k]['rounds_per_req']:.1f} rounds/req, "
                           f"p50 {out[label][k]['p50_s']:.2f} s)" for k in runs)
        print(f"  {label:>18}: {line}", flush=True)
    return out


# ------------------------------------------------------------------------------------------ main
async def main(args) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    model, model_desc = resolve_model(args)
    C, T, A = args.concurrency, args.thinking_tokens, args.answer_tokens
    trig = trigger_id(AutoTokenizer.from_pretrained(model))
    levels = bias_levels(args, AutoConfig.from_pretrained(model).vocab_size)
    vote_level = next((lv for lv in levels if lv[1] and lv[1] < 50), levels[0])
    print(f"model: {model_desc}\ndevice: {device_name()}\nworkload: {C} concurrent prompts, T={T} thinking tokens "
          f"(min=max), A<={A} answer tokens, temperature {args.temperature}, levels "
          f"{[(lb, round(b, 2)) for lb, b in levels]}, voting N={args.n}, reps={args.reps}\n", flush=True)

    async def on_cached(engine):
        out = await measure_levels(engine, args, levels, trig)
        out["vote"] = await run_vote(engine, args.n, T, A, {trig: vote_level[1]} if vote_level[1] else None,
                                     args.reps)
        out["vote"]["level"] = vote_level[0]
        print(f"  vote n={args.n}: {out['vote']['vote_s']:.2f} s; {args.n} sequential generate calls "
              f"{out['vote']['sequential_s']:.2f} s", flush=True)
        return out

    t0 = time.perf_counter()
    print("[1/3] engine with prefix caching (the default)", flush=True)
    cached = await with_engine(engine_config(args, model), on_cached)
    print("[2/3] engine without prefix caching (rounds only)", flush=True)
    uncached = await with_engine(engine_config(args, model, enable_prefix_caching=False),
                                 lambda e: measure_levels(e, args, levels, trig, backends=BACKENDS[:1]))
    S, L = args.loaded_seqs, args.loaded_concurrency
    print(f"[3/3] loaded engine: max_num_seqs={S}, {L} prompts at once, level {vote_level[0]}", flush=True)
    loaded = await with_engine(engine_config(args, model, max_num_seqs=S),
                               lambda e: measure_levels(e, args, [vote_level], trig, C=L))
    loaded = loaded[vote_level[0]]
    total = time.perf_counter() - t0
    processor = processor_cost(args, AutoConfig.from_pretrained(model).vocab_size, cached[levels[0][0]]["plain"])

    ratios = report(args, model_desc, levels, cached, uncached, loaded, total)
    ratios["processor"] = processor
    return dict(bench="engine", model=model_desc, model_path=model, args=vars(args), seconds=total,
                levels=levels, cached=cached, uncached=uncached, loaded=loaded, ratios=ratios)


def processor_cost(args, vocab: int, plain: dict) -> dict:
    """The in-engine processor's ``apply`` alone on this workload's batch and vocab (as
    ``bench_forcing_step.py`` times it: one torch thread, like vLLM's CPU worker), against the
    plain decode step measured above. Unlike the engine runs this does not move with the
    neighbours' load: plain step / (step + apply) is what in-engine forcing costs the engine's step
    (the frontend's own work per token, which rounds pays too, is not in it)."""
    import torch
    from bench_forcing_step import measure

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        us = measure(args.concurrency, vocab, args.thinking_tokens, args.temperature)
    finally:
        torch.set_num_threads(threads)
    step_us = 1e6 * plain["seconds"] / (args.thinking_tokens + args.answer_tokens)
    out = {"apply_us_per_step": us["now"], "apply_us_per_step_before": us["before"], "plain_step_us": step_us,
           "in_engine_vs_plain_from_apply": step_us / (step_us + us["now"]),
           "in_engine_vs_plain_from_apply_before": step_us / (step_us + us["before"])}
    print(f"  (a') the processor's apply alone, {args.concurrency} rows x {vocab} ids: {us['now']:.0f} us per step "
          f"(the one before: {us['before']:.0f} us) against a plain decode step of {step_us:.0f} us: "
          f"step / (step + apply) = {out['in_engine_vs_plain_from_apply']:.3f}x (before: "
          f"{out['in_engine_vs_plain_from_apply_before']:.3f}x)", flush=True)
    return out


# ------------------------------------------------------------------------------------------ report
def paired_ratios(a: list[float], b: list[float], name: str) -> dict:
    r = sorted(x / y for x, y in zip(a, b))
    return {f"{name}_median": statistics.median(r), f"{name}_min": r[0], f"{name}_max": r[-1]}


def level_ratios(pc: dict, npc: dict, b: float) -> dict:
    bf_vs_plain = ratio(pc["bf"]["tok_s"], pc["plain"]["tok_s"])
    # Wall time beyond what the same tokens cost as one plain request, per extra round.
    extra = pc["bf"]["seconds"] - pc["bf"]["tokens"] / pc["plain"]["tok_s"]
    rounds = pc["bf"]["rounds_per_req"]
    return {
        "bias": b,
        "rounds_per_request": rounds,
        "bf_vs_plain_tok_s": bf_vs_plain,
        "in_engine_vs_plain_tok_s": ratio(pc["ie"]["tok_s"], pc["plain"]["tok_s"]),
        # per repetition, in-engine over the plain run beside it (same neighbours): the median and
        # the range say how much of the ratio above is the machine moving between runs
        **paired_ratios(pc["ie"]["tok_s_all"], pc["plain"]["tok_s_all"], "in_engine_vs_plain_paired"),
        # in the engine, in the in-engine runs' own steps: a plain step is the step less apply
        "in_engine_vs_plain_engine_step": 1 - statistics.median(pc["ie"]["apply_share_all"]),
        "in_engine_vs_rounds_tok_s": ratio(pc["ie"]["tok_s"], pc["bf"]["tok_s"]),
        "extra_ms_per_round": 1000 * extra / max(rounds - 1, 1),
        "prefix_cache_vs_none_tok_s": ratio(pc["bf"]["tok_s"], npc["bf"]["tok_s"]),
        # each side divided by its own engine's plain throughput: robust to the neighbours'
        # load changing between the two engines' time windows
        "prefix_cache_vs_none_normalized": ratio(bf_vs_plain, ratio(npc["bf"]["tok_s"], npc["plain"]["tok_s"])),
    }


def report(args, model_desc, levels, cached, uncached, loaded, total) -> dict:
    C, T, A = args.concurrency, args.thinking_tokens, args.answer_tokens
    rows, ratios = [], {}
    cols = ("seconds", "tokens", "tok_s", "rounds_per_req", "waits_per_req", "p50_s", "p99_s")
    for label, b in levels:
        pc, npc = cached[label], uncached[label]
        for cfg, r in (("plain vLLM", pc["plain"]), ("rounds", pc["bf"]), ("in-engine", pc["ie"]),
                       ("plain vLLM, no prefix cache", npc["plain"]), ("rounds, no prefix cache", npc["bf"])):
            rows.append(dict(level=label, config=cfg, **{k: r[k] for k in cols}))
        ratios[label] = level_ratios(pc, npc, b)
    for cfg, k in (("plain vLLM", "plain"), ("rounds", "bf"), ("in-engine", "ie")):
        rows.append(dict(level=f"loaded: {args.loaded_concurrency} > max_num_seqs {args.loaded_seqs}", config=cfg,
                         **{c: loaded[k][c] for c in cols}))
    ratios["loaded"] = {k: ratio(loaded["bf"][k], loaded["ie"][k]) for k in ("p50_s", "p99_s")}
    ratios["loaded"]["in_engine_vs_rounds_tok_s"] = ratio(loaded["ie"]["tok_s"], loaded["bf"]["tok_s"])
    ratios["loaded"]["in_engine_vs_plain_tok_s"] = ratio(loaded["ie"]["tok_s"], loaded["plain"]["tok_s"])
    v = cached["vote"]
    ratios["vote"] = {"n": v["n"], "sequential_over_vote_time": ratio(v["sequential_s"], v["vote_s"]),
                      "concurrent_separate_over_vote_time": ratio(v["concurrent_s"], v["vote_s"])}

    print(f"\n=== bench_engine: {model_desc} on {device_name()} ({total:.0f} s) ===")
    print(f"C={C} concurrent prompts, T={T} thinking tokens (min=max), A<={A} answer tokens, temperature "
          f"{args.temperature}; tokens = thinking (incl. injected 'Wait') + answer; best of {args.reps}\n")
    print(table(rows, [("level", "level", "s"), ("config", "config", "s"), ("seconds", "s", ".2f"),
                       ("tokens", "tokens", "d"), ("tok_s", "tok/s", ".0f"), ("rounds_per_req", "rounds/req", ".1f"),
                       ("waits_per_req", "waits/req", ".1f"), ("p50_s", "p50 s", ".2f"), ("p99_s", "p99 s", ".2f")]))
    print()
    print(table([dict(what=f"vote(n={v['n']}): one call", s=v["vote_s"], tok=v["vote_tokens"]),
                 dict(what=f"{v['n']} generate calls, sequential", s=v["sequential_s"], tok=v["sequential_tokens"]),
                 dict(what=f"{v['n']} generate calls, concurrent", s=v["concurrent_s"], tok=v["concurrent_tokens"])],
                [("what", f"voting ({v['level']}, temperature 1)", "s"), ("s", "s", ".2f"), ("tok", "tokens", "d")]))
    print("\nratios (> 1: the first named is faster):")
    for label, _ in levels:
        r = ratios[label]
        print(f"  [{label}: {r['rounds_per_request']:.1f} rounds/request with rounds]")
        print(f"    (a) in-engine vs plain vLLM, tokens/s:             {r['in_engine_vs_plain_tok_s']:.2f}x"
              f"   (in-engine vs rounds: {r['in_engine_vs_rounds_tok_s']:.2f}x)")
        print(f"        per repetition, in-engine / the plain run beside it: median "
              f"{r['in_engine_vs_plain_paired_median']:.2f}x, range {r['in_engine_vs_plain_paired_min']:.2f}-"
              f"{r['in_engine_vs_plain_paired_max']:.2f}x")
        print(f"        in the engine, (step - apply) / step over the in-engine runs' steps: "
              f"{r['in_engine_vs_plain_engine_step']:.3f}x")
        print(f"    (a) rounds vs plain vLLM, tokens/s:                {r['bf_vs_plain_tok_s']:.2f}x"
              f"   (~{r['extra_ms_per_round']:.1f} ms extra wall time per extra round)")
        print(f"    (b) prefix caching vs none, rounds tok/s:          {r['prefix_cache_vs_none_tok_s']:.2f}x"
              f"   (each normalized by its engine's plain tok/s: {r['prefix_cache_vs_none_normalized']:.2f}x)")
    print(f"  (c) vote(n={v['n']}) vs {v['n']} sequential generate calls, time: "
          f"{ratios['vote']['sequential_over_vote_time']:.2f}x   (vs {v['n']} concurrent separate calls: "
          f"{ratios['vote']['concurrent_separate_over_vote_time']:.2f}x)")
    lr = ratios["loaded"]
    print(f"  (d) loaded, rounds / in-engine latency: p50 {lr['p50_s']:.2f}x, p99 {lr['p99_s']:.2f}x; "
          f"in-engine vs rounds tokens/s {lr['in_engine_vs_rounds_tok_s']:.2f}x, "
          f"in-engine vs plain {lr['in_engine_vs_plain_tok_s']:.2f}x")
    return ratios


if __name__ == "__main__":
    args = parse_args()
    results = asyncio.run(main(args))
    write_json(args.out, results)

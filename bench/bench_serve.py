"""Serve benchmark: the HTTP endpoint under load vs the same engine called directly.

1. Ray (local, ``num_cpus=4``, no dashboard) + Serve on 127.0.0.1 with the model; C concurrent
   clients (``httpx.AsyncClient``, loopback) send M budget-forced chat completions between them
   (closed loop: each client sends its next request when its last one is answered).
   Measured: requests/s, thinking tokens/s, latency.
2. N-way voting through Serve: one request with ``n: N, vote: true`` vs N separate requests
   (sent at once, and one after another).
3. Serve and Ray shut down, then the same ``BudgetEngine`` (same engine config) started in this
   process and driven with the same workload: C concurrent coroutines, M ``engine.generate``
   calls.

Ratios: Serve / direct for requests/s and thinking tokens/s (what HTTP + Serve's proxy and
router cost); N separate requests / one voting request, in wall time.

Run: ``python bench/bench_serve.py [--model PATH | --shape qwen2.5-0.5b] [--quick]``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import time

from _common import (Timer, base_parser, device_name, engine_config, messages, ratio, resolve_model, shutdown,
                     table, trigger_id, write_json)

MODEL_NAME = "s1ray-bench"


def parse_args(argv=None):
    p = base_parser(__doc__.split("\n")[0], "bench_serve")
    p.add_argument("--concurrency", "-c", type=int, default=8, help="concurrent clients (default %(default)s)")
    p.add_argument("--requests", "-m", type=int, default=None, help="requests per load run (default 96, --quick 16)")
    p.add_argument("--thinking-tokens", "-t", type=int, default=None,
                   help="T: min = max thinking tokens per request (default 128, --quick 64)")
    p.add_argument("--answer-tokens", type=int, default=8, help="answer cap (max_answer_tokens)")
    p.add_argument("--stop-every", type=int, default=16, metavar="K",
                   help="logit bias on the end trigger so that a random-init model tries to stop about every K "
                        "tokens, i.e. 'Wait' rounds happen (0: no bias; default %(default)s)")
    p.add_argument("--bias", type=float, default=None, help="explicit logit bias instead of --stop-every")
    p.add_argument("--n", type=int, default=None, help="N for voting (default 8, --quick 4)")
    p.add_argument("--reps", type=int, default=None, help="repetitions of each measurement, best kept "
                                                          "(default 3, --quick 1)")
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' logs")
    a = p.parse_args(argv)
    a.requests = a.requests or (16 if a.quick else 96)
    a.thinking_tokens = a.thinking_tokens or (64 if a.quick else 128)
    a.n = a.n or (4 if a.quick else 8)
    a.reps = a.reps or (1 if a.quick else 3)
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bias_value(args, vocab_size: int) -> float:
    if args.bias is not None:
        return args.bias
    k = args.stop_every
    if k <= 0:
        return 0.0
    if k == 1:
        return 50.0
    return math.log((vocab_size - 1) / (k - 1))  # p(trigger) ~ 1/k with near-uniform logits


async def closed_loop(one, M: int, C: int) -> dict:
    """C workers share M requests; ``one(i)`` returns the thinking tokens of request i."""
    todo = iter(range(M))
    lat, think = [], []

    async def worker():
        for i in todo:  # a shared iterator: each request goes to exactly one worker
            t = time.perf_counter()
            think.append(await one(i))
            lat.append(time.perf_counter() - t)

    with Timer() as t:
        await asyncio.gather(*(worker() for _ in range(C)))
    lat.sort()
    return dict(seconds=t.s, requests=M, thinking_tokens=sum(think), req_s=M / t.s, think_tok_s=sum(think) / t.s,
                p50_s=statistics.median(lat), p95_s=lat[min(len(lat) - 1, int(0.95 * len(lat)))])


def best(runs: list[dict]) -> dict:
    b = dict(max(runs, key=lambda r: r["req_s"]))
    b["req_s_all"] = [round(r["req_s"], 2) for r in runs]
    return b


# ------------------------------------------------------------------------------------------ Serve
def chat_body(i: int, args, trig: int, bias: float, **extra) -> dict:
    body = {"model": MODEL_NAME, "messages": messages(i), "min_thinking_tokens": args.thinking_tokens,
            "max_thinking_tokens": args.thinking_tokens, "max_answer_tokens": args.answer_tokens, "temperature": 1.0}
    if bias:
        body["logit_bias"] = {str(trig): bias}
    body.update(extra)
    return body


async def drive_serve(base: str, args, trig: int, bias: float) -> dict:
    import httpx

    T, N = args.thinking_tokens, args.n
    url = base + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=max(args.concurrency, N) + 4, max_keepalive_connections=max(args.concurrency, N) + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def post(body) -> dict:
            r = await client.post(url, json=body)
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
            return r.json()

        async def one(i):
            out = await post(chat_body(i, args, trig, bias))
            n = out["usage"]["completion_tokens_details"]["reasoning_tokens"]
            assert n == T, out["usage"]
            return n

        await closed_loop(one, args.concurrency, args.concurrency)  # warm-up: connections, router, caches
        loads = []
        for _ in range(args.reps):
            loads.append(await closed_loop(one, args.requests, args.concurrency))
            print(f"  serve load: {loads[-1]['req_s']:.2f} req/s, {loads[-1]['think_tok_s']:.0f} thinking tok/s", flush=True)

        # One n=N vote request vs N separate requests (at once; one after another). The order
        # alternates between repetitions so that no side always runs first; best of reps.
        def usage_thinking(out):
            return out["usage"]["completion_tokens_details"]["reasoning_tokens"]

        async def vote(seed):
            out = await post(chat_body(0, args, trig, bias, n=N, vote=True, seed=seed))
            assert len(out["choices"]) == N and "s1ray_vote" in out
            return usage_thinking(out)

        async def at_once(seed):
            outs = await asyncio.gather(*(post(chat_body(0, args, trig, bias, seed=seed + j)) for j in range(N)))
            return sum(map(usage_thinking, outs))

        async def one_by_one(seed):
            return sum([usage_thinking(await post(chat_body(0, args, trig, bias, seed=seed + j))) for j in range(N)])

        runs = {"vote": vote, "separate_concurrent": at_once, "separate_sequential": one_by_one}
        secs = {k: [] for k in runs}
        thinking = {}
        for rep in range(args.reps):
            for k in (list(runs) if rep % 2 == 0 else list(reversed(runs))):
                with Timer() as t:
                    thinking[k] = await runs[k](1000 * rep)
                secs[k].append(t.s)
            print(f"  vote n={N}: {secs['vote'][-1]:.2f} s; {N} separate requests at once "
                  f"{secs['separate_concurrent'][-1]:.2f} s, one after another {secs['separate_sequential'][-1]:.2f} s",
                  flush=True)
    vote = {f"{k}_s": min(v) for k, v in secs.items()}
    vote.update(thinking_tokens=thinking, seconds_all=secs)
    return dict(load=best(loads), vote=vote)


def run_serve(args, model: str, trig: int, bias: float) -> dict:
    import ray
    from ray import serve

    from s1ray.serve.app import build_app
    from s1ray.serve.config import ServeConfig

    t0 = time.perf_counter()
    port = free_port()
    # address="local": a cluster of our own, never a neighbour's `ray start` cluster.
    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=args.verbose)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cfg = ServeConfig(
            engine=engine_config(args, model).model_dump(),
            served_model_name=MODEL_NAME,
            max_ongoing_requests=max(64, 2 * args.concurrency, 2 * args.n),
            max_queued_requests=256,
            request_timeout_s=600,
            max_n=max(16, args.n),
            default_max_answer_tokens=args.answer_tokens,
        )
        serve.run(build_app(cfg), name="s1ray-bench", route_prefix="/")
        print(f"  Ray + Serve + engine up in {time.perf_counter() - t0:.0f} s (127.0.0.1:{port})", flush=True)
        return asyncio.run(drive_serve(f"http://127.0.0.1:{port}", args, trig, bias))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


# ------------------------------------------------------------------------------------------ direct
async def run_direct(args, model: str, trig: int, bias: float) -> dict:
    from s1ray.engine.budget import ThinkingBudget
    from s1ray.engine.types import GenerationRequest
    from s1ray.engine.vllm_engine import BudgetEngine

    T = args.thinking_tokens
    t0 = time.perf_counter()
    engine = await BudgetEngine.create(engine_config(args, model))
    print(f"  engine up in {time.perf_counter() - t0:.0f} s", flush=True)
    try:
        async def one(i):
            r = await engine.generate(GenerationRequest(
                messages=messages(i), budget=ThinkingBudget(T, T, max_answer_tokens=args.answer_tokens),
                logit_bias={trig: bias} if bias else None, temperature=1.0))
            assert r.thinking_tokens == T
            return r.thinking_tokens

        await closed_loop(one, args.concurrency, args.concurrency)  # warm-up, as for Serve
        loads = []
        for _ in range(args.reps):
            loads.append(await closed_loop(one, args.requests, args.concurrency))
            print(f"  direct load: {loads[-1]['req_s']:.2f} req/s, {loads[-1]['think_tok_s']:.0f} thinking tok/s",
                  flush=True)
        return dict(load=best(loads))
    finally:
        shutdown(engine)


# ------------------------------------------------------------------------------------------ main
def main(args) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    model, model_desc = resolve_model(args)
    trig = trigger_id(AutoTokenizer.from_pretrained(model))
    bias = bias_value(args, AutoConfig.from_pretrained(model).vocab_size)
    C, M, T, N = args.concurrency, args.requests, args.thinking_tokens, args.n
    print(f"model: {model_desc}\ndevice: {device_name()}\nworkload: {C} concurrent clients, {M} chat completions "
          f"per run, T={T} thinking tokens (min=max), max_answer_tokens={args.answer_tokens}, temperature 1, trigger bias "
          f"{bias:.2f}; voting N={N}; reps={args.reps}\n", flush=True)

    t0 = time.perf_counter()
    print("[1/2] Ray Serve over HTTP (loopback)", flush=True)
    serve_res = run_serve(args, model, trig, bias)
    print("[2/2] the same engine, in-process", flush=True)
    direct_res = asyncio.run(run_direct(args, model, trig, bias))
    total = time.perf_counter() - t0

    s, d, v = serve_res["load"], direct_res["load"], serve_res["vote"]
    ratios = {
        "serve_vs_direct_req_s": ratio(s["req_s"], d["req_s"]),
        "serve_vs_direct_thinking_tok_s": ratio(s["think_tok_s"], d["think_tok_s"]),
        "serve_vs_direct_p50_latency": ratio(s["p50_s"], d["p50_s"]),
        "separate_concurrent_over_vote_time": ratio(v["separate_concurrent_s"], v["vote_s"]),
        "separate_sequential_over_vote_time": ratio(v["separate_sequential_s"], v["vote_s"]),
    }

    print(f"\n=== bench_serve: {model_desc} on {device_name()} ({total:.0f} s) ===")
    print(f"{C} concurrent clients, {M} requests per run, T={T} thinking tokens (min=max), "
          f"max_answer_tokens={args.answer_tokens}, trigger bias {bias:.2f}; best of {args.reps}\n")
    cols = [("path", "path", "s"), ("seconds", "s", ".2f"), ("req_s", "req/s", ".2f"),
            ("think_tok_s", "thinking tok/s", ".0f"), ("p50_s", "p50 s", ".3f"), ("p95_s", "p95 s", ".3f")]
    print(table([dict(path="Ray Serve, HTTP", **s), dict(path="BudgetEngine, in-process", **d)], cols))
    print()
    print(table([dict(what=f"one request, n={N}, vote=true", s=v["vote_s"]),
                 dict(what=f"{N} separate requests, at once", s=v["separate_concurrent_s"]),
                 dict(what=f"{N} separate requests, one after another", s=v["separate_sequential_s"])],
                [("what", "voting through Serve", "s"), ("s", "s", ".2f")]))
    print("\nratios:")
    print(f"  Serve / direct, requests/s:         {ratios['serve_vs_direct_req_s']:.2f}x")
    print(f"  Serve / direct, thinking tokens/s:  {ratios['serve_vs_direct_thinking_tok_s']:.2f}x")
    print(f"  Serve / direct, p50 latency:        {ratios['serve_vs_direct_p50_latency']:.2f}x")
    print(f"  {N} separate requests at once / one n={N} vote request, time:          "
          f"{ratios['separate_concurrent_over_vote_time']:.2f}x")
    print(f"  {N} separate requests one after another / one n={N} vote request, time: "
          f"{ratios['separate_sequential_over_vote_time']:.2f}x")
    return dict(bench="serve", model=model_desc, model_path=model, args=vars(args), seconds=total, bias=bias,
                serve=serve_res, direct=direct_res, ratios=ratios)


if __name__ == "__main__":
    args = parse_args()
    results = main(args)
    write_json(args.out, results)

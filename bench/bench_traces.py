"""Trace generation throughput: the Ray Data job vs the same vLLM engine driven directly.

    python bench/bench_traces.py [--quick] [--rows N] [--max-tokens M] [--model PATH | --shape qwen2.5-0.5b]

Both sides generate the same N prompts (the job's own prompt rendering, token ids identical)
with the same engine arguments and greedy sampling, ``ignore_eos`` so every row is exactly M
tokens long:

* **direct**: ``vllm.LLM(...)`` in a fresh process, one ``generate`` call over all prompts
  (the engine's best case: it sees every request at once).
* **ray data**: ``run_traces`` -- the real job: Ray Data + ``ray.data.llm``'s vLLM stage, pre-
  and postprocessing (thinking/answer split, student-token counts, answer extraction), rows
  streamed to the driver and written as parquet shards + manifest.

Reported per side: rows/s and output tokens/s of the *generation phase*, and end to end
(including engine start-up, and for Ray Data the cluster start). The direct engine's
generation phase is its ``generate`` call. For Ray Data it runs from the first request entering
the engine (a row's arrival at the driver minus its engine latency, which Ray's vLLM stage
measures from submission) to the last row reaching the driver, so it includes everything
after the engine: postprocessing, transfer, shard writes. The headline is the ratio
ray data / direct of generation-phase output tokens/s, from this one run: the two sides
alternate ``--reps`` times (default 3) and each side's best is kept (per-rep ratios printed too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (Timer, base_parser, device_name, has_cuda, ratio, resolve_model, table,
                     wait_for_engine_exit, write_json)

QUESTIONS = [
    "What is {a} + {b}?", "Compute {a} * {b}.", "Is {a} a prime number?", "Solve x + {a} = {b}.",
    "What is the remainder of {b} divided by {a}?", "Simplify {a}/{b}.",
]


def questions(n: int) -> list[dict]:
    return [{"id": f"b{i:05d}", "question": QUESTIONS[i % len(QUESTIONS)].format(a=i % 97 + 2, b=i % 89 + 3),
             "source": "bench", "answer": None} for i in range(n)]


def engine_kwargs(args, model: str) -> dict:
    eager = args.enforce_eager if args.enforce_eager is not None else not has_cuda()
    return dict(model=model, max_model_len=args.max_model_len, dtype=args.dtype, enforce_eager=eager,
                enable_prefix_caching=True, tensor_parallel_size=1, **json.loads(args.engine_kwargs))


def traces_config(args, model: str, qfile: Path, out: Path):
    from s1ray.config import load_config
    from s1ray.traces.config import TracesConfig

    ek = engine_kwargs(args, model)
    cuda = has_cuda()
    over = [
        f"input.path={qfile}", f"output_dir={out}", f"teacher.engine.model={model}",
        f"teacher.device={'cuda' if cuda else 'cpu'}", f"teacher.engine.max_model_len={ek['max_model_len']}",
        f"teacher.engine.dtype={ek['dtype']}", f"teacher.engine.enforce_eager={str(ek['enforce_eager']).lower()}",
        f"teacher.batch_size={args.batch_size}", f"teacher.max_concurrent_batches={args.max_concurrent_batches}",
        "teacher.engine.cpu_kv_cache_gib=1", "teacher.cpu_engine_num_cpus=0.5", "teacher.map_num_cpus=0.25",
        *([f"teacher.map_concurrency={args.map_concurrency}"] if args.map_concurrency else []),
        *([f"teacher.max_pending_requests={args.max_pending}"] if args.max_pending else []),
        f"sampling.max_tokens={args.max_tokens}", "sampling.temperature=0", "sampling.extra={ignore_eos: true}",
        "reasoning_format=none", f"shard_size={args.rows}", "progress_interval_s=10",
        f"teacher.engine.extra_engine_args={args.engine_kwargs}", *args.ray_set,
    ]
    if not cuda:
        over += ["ray.num_cpus=2", "ray.object_store_memory_mb=512"]
    return load_config(TracesConfig, None, over)


def run_direct(args, model: str, qfile: Path, out_json: Path) -> None:
    """Child process: the same prompts through vllm.LLM directly."""
    from vllm import LLM, SamplingParams

    from s1ray.traces.inputs import read_questions
    from s1ray.traces.records import load_tokenizer, make_units, render_prompt

    cfg = traces_config(args, model, qfile, Path(tempfile.mkdtemp()))
    tok = load_tokenizer(model)
    units = make_units(read_questions(cfg.input), 1)
    prompts = [{"prompt_token_ids": tok.encode(render_prompt(tok, u, cfg.prompt), add_special_tokens=False)}
               for u in units]
    t0 = time.perf_counter()
    llm = LLM(**engine_kwargs(args, model))
    start_s = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True, skip_special_tokens=False)
    with Timer() as gen:
        outs = llm.generate(prompts, sp, use_tqdm=False)
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    out_json.write_text(json.dumps({"rows": len(outs), "tokens": toks, "gen_s": gen.s, "start_s": start_s,
                                    "e2e_s": time.perf_counter() - t0}))


def run_ray(args, model: str, qfile: Path) -> dict:
    from s1ray.traces.job import run_traces

    out = Path(tempfile.mkdtemp(prefix="s1ray-bench-traces-"))
    cfg = traces_config(args, model, qfile, out / "traces")
    arrivals: list[tuple[float, float, int]] = []  # (arrival at the driver, engine latency, tokens)

    def on_row(row):
        arrivals.append((time.perf_counter(), float(row.get("latency_s") or 0.0), int(row.get("completion_tokens") or 0)))

    t0 = time.perf_counter()
    res = run_traces(cfg, on_row=on_row)
    e2e = time.perf_counter() - t0
    assert res.errors == 0 and res.generated == args.rows, res
    # Generation phase: from the first request entering an engine (a row's arrival minus its
    # engine latency, which the vLLM stage measures from submission) to the last row reaching
    # the driver -- so it includes everything after the engine: postprocess, transfer, shards.
    gen_start = min(t - lat for t, lat, _ in arrivals)
    return {"rows": len(arrivals), "tokens": sum(n for *_, n in arrivals), "e2e_s": e2e,
            "start_s": gen_start - t0, "gen_s": arrivals[-1][0] - gen_start,
            "first_row_s": arrivals[0][0] - t0}


def _parser():
    p = base_parser(__doc__.split("\n")[0], "bench_traces")
    p.add_argument("--rows", type=int, default=None, help="prompts (default 2048; --quick 512)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per row (default 256; --quick 128)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-concurrent-batches", type=int, default=8)
    p.add_argument("--map-concurrency", type=int, default=None, help="teacher.map_concurrency of the Ray Data side")
    p.add_argument("--max-pending", type=int, default=None, help="teacher.max_pending_requests of the Ray Data side")
    p.add_argument("--engine-kwargs", default="{}", help='extra vLLM engine args for both sides, JSON '
                   '(e.g. \'{"distributed_executor_backend": "mp"}\')')
    p.add_argument("--ray-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted traces-config override for the Ray Data side only (repeatable), "
                   "e.g. teacher.offline_batch_defaults=false")
    p.add_argument("--reps", type=int, default=None, help="alternations of the two sides, best of each "
                   "kept (default 3; --quick 1)")
    p.add_argument("--phase", choices=["direct"], help=argparse_hidden())
    p.add_argument("--model-path", help=argparse_hidden())
    p.add_argument("--questions", help=argparse_hidden())
    p.add_argument("--result", help=argparse_hidden())
    return p


def main() -> int:
    args = _parser().parse_args()
    args.rows = args.rows or (512 if args.quick else 2048)
    args.max_tokens = args.max_tokens or (128 if args.quick else 256)
    args.reps = args.reps or (1 if args.quick else 3)
    if args.phase == "direct":
        run_direct(args, args.model_path, Path(args.questions), Path(args.result))
        return 0

    model, desc = resolve_model(args)
    tmp = Path(tempfile.mkdtemp(prefix="s1ray-bench-traces-"))
    qfile = tmp / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions(args.rows)))
    print(f"bench_traces: {args.rows} prompts x {args.max_tokens} tokens (ignore_eos), model: {desc}, "
          f"device: {device_name()}", flush=True)

    # Direct engine first, in its own process (its engine is gone before Ray starts).
    result = tmp / "direct.json"
    cmd = [sys.executable, __file__, "--phase", "direct", "--model-path", model, "--questions", str(qfile),
           "--result", str(result), "--rows", str(args.rows), "--max-tokens", str(args.max_tokens),
           "--max-model-len", str(args.max_model_len), "--dtype", args.dtype,
           "--batch-size", str(args.batch_size), "--max-concurrent-batches", str(args.max_concurrent_batches),
           "--engine-kwargs", args.engine_kwargs]
    if args.enforce_eager is not None:
        cmd.append("--enforce-eager" if args.enforce_eager else "--no-enforce-eager")
    # Alternate the two sides ``reps`` times and keep each side's best generation phase: on a
    # shared machine the neighbours' load only ever slows a run down.
    directs, rays = [], []
    for rep in range(args.reps):
        waited = wait_for_engine_exit()  # the previous side's engine processes are gone
        with Timer() as t:
            subprocess.run(cmd, check=True, env=os.environ.copy())
        directs.append(json.loads(result.read_text()))
        waited += wait_for_engine_exit()
        rays.append(run_ray(args, model, qfile))
        if waited > 1:
            print(f"(waited {waited:.0f} s for earlier engine processes to exit)", flush=True)
        print(f"rep {rep + 1}/{args.reps} ({t.s:.0f} s direct): output tok/s direct "
              f"{directs[-1]['tokens'] / directs[-1]['gen_s']:.0f}, ray data {rays[-1]['tokens'] / rays[-1]['gen_s']:.0f}",
              flush=True)
    direct = min(directs, key=lambda r: r["gen_s"])
    ray_res = min(rays, key=lambda r: r["gen_s"])

    d_rows, d_tok = direct["rows"] / direct["gen_s"], direct["tokens"] / direct["gen_s"]
    r_rows, r_tok = ray_res["rows"] / ray_res["gen_s"], ray_res["tokens"] / ray_res["gen_s"]
    rows = [
        {"side": "direct vllm.LLM", "rows_s": d_rows, "tok_s": d_tok, "start_s": direct["start_s"],
         "e2e_rows_s": direct["rows"] / direct["e2e_s"], "e2e_tok_s": direct["tokens"] / direct["e2e_s"]},
        {"side": "ray data job", "rows_s": r_rows, "tok_s": r_tok, "start_s": ray_res["start_s"],
         "e2e_rows_s": ray_res["rows"] / ray_res["e2e_s"], "e2e_tok_s": ray_res["tokens"] / ray_res["e2e_s"]},
    ]
    print()
    print(table(rows, [("side", "", ""), ("rows_s", "rows/s", ".1f"), ("tok_s", "out tok/s", ".0f"),
                       ("start_s", "start-up s", ".1f"), ("e2e_rows_s", "e2e rows/s", ".2f"),
                       ("e2e_tok_s", "e2e tok/s", ".0f")]))
    tok_ratio = ratio(r_tok, d_tok)
    print(f"\noutput tokens: direct {direct['tokens']}, ray data {ray_res['tokens']} "
          f"(generation phase: direct {direct['gen_s']:.1f} s, ray data {ray_res['gen_s']:.1f} s)")
    print(f"ratio ray data / direct (generation phase): rows/s {ratio(r_rows, d_rows):.3f}, "
          f"output tok/s {tok_ratio:.3f}  (goal: >= 0.90)")
    per_rep = [ratio(r["tokens"] / r["gen_s"], d["tokens"] / d["gen_s"]) for d, r in zip(directs, rays)]
    print(f"per-rep ratios (output tok/s): {', '.join(f'{x:.3f}' for x in per_rep)}")
    print(f"ratio ray data / direct (end to end, incl. start-up): "
          f"{ratio(rows[1]['e2e_tok_s'], rows[0]['e2e_tok_s']):.3f}")
    write_json(args.out, {"bench": "traces", "ratios": {"ray data / direct vllm.LLM, output tok/s": tok_ratio,
                                                        "ray data / direct vllm.LLM, rows/s": ratio(r_rows, d_rows)},
                          "model": desc, "rows": args.rows, "max_tokens": args.max_tokens,
                          "batch_size": args.batch_size, "direct": direct, "ray_data": ray_res,
                          "table": rows, "ratio_tok_s": tok_ratio, "per_rep_ratio_tok_s": per_rep,
                          "reps": {"direct": directs, "ray_data": rays}, "ratio_rows_s": ratio(r_rows, d_rows)})
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())

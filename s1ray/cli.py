"""The ``s1ray`` command: one entry point, one subcommand per job or tool.

    s1ray pipeline|curate|traces|train|eval|serve --config PATH [dotted.key=value ...]
    s1ray tiny-model OUT_DIR [--seed N]
    s1ray plan --config FILE [--gpu H100] [--strict] [key=value ...]
    s1ray generate --model PATH --prompt TEXT [--min-thinking-tokens N] [--max-thinking-tokens M]
                   [--num-waits K] [--format s1|think-tags] [--method ...] [--n N] [--json]

A job loads its typed config (YAML + dotted overrides) and calls its function in
:mod:`s1ray.jobs`; ``jobs/*.py`` (the ``ray job submit`` entrypoints) call the same ones.
Exit status: 0 done; 2 bad config or input, with one line naming the field and no traceback;
1 the job failed (one line here, the traceback in the job's log).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from s1ray.config import ConfigError
from s1ray.engine.budget import BudgetError


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from s1ray.tiny_model import make_tiny_model

    path = make_tiny_model(args.out_dir, seed=args.seed)
    print(path)
    return 0


def _build_generate(args: argparse.Namespace):
    from pydantic import ValidationError

    from s1ray.config import format_validation_error
    from s1ray.engine.types import EngineConfig
    from s1ray.serve.protocol import engine_request

    try:
        cfg = EngineConfig(
            model=args.model,
            format=args.format,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
            seed=args.seed,
        )
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "control_method": args.method,
        "min_thinking_tokens": args.min_thinking_tokens,
        "max_thinking_tokens": args.max_thinking_tokens,
        "num_waits": args.num_waits,
        "max_answer_tokens": args.max_answer_tokens,
        "continuation": args.continuation,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    try:  # the HTTP API's schema: one translation into GenerationRequest
        req = engine_request(body, args.max_answer_tokens)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    return cfg, req


async def _generate(cfg, req, n: int) -> dict:
    from s1ray.engine.planner import RequestPlanner
    from s1ray.engine.vllm_engine import BudgetEngine

    RequestPlanner.from_config(cfg).prepare(req)  # refuse bad input before a slow engine start
    engine = await BudgetEngine.create(cfg)
    try:
        if n == 1:
            return (await engine.generate(req)).to_dict()
        out = await engine.vote(req, n)
        return {
            "answer": out.answer,
            "distribution": out.distribution,
            "answers": out.answers,
            "samples": [s.to_dict() for s in out.samples],
        }
    finally:
        engine.shutdown()


def _cmd_generate(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise BudgetError("n", f"must be >= 1, got {args.n}")
    cfg, req = _build_generate(args)
    result = asyncio.run(_generate(cfg, req, args.n))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif "samples" in result:
        print(f"voted answer: {result['answer']}  distribution: {result['distribution']}")
    else:
        print(f"--- thinking ({result['thinking_tokens']} tokens, {result['num_waits']} waits, "
              f"forced end: {result['forced_end']}) ---\n{result['thinking']}")
        print(f"--- answer ({result['answer_tokens']} tokens) ---\n{result['answer']}")
    return 0


# -- jobs: typed config -> a function in s1ray.jobs ----------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="load and tokenize the data, print stats, train nothing")
    p.add_argument("--toy-data", type=int, metavar="N", help="write N toy examples to dataset.source if it is missing")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs for a local Ray cluster started by the job")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="load data, print the plan, generate nothing")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 on a cluster (behind your auth)")
    p.add_argument("--port", type=int, default=8000)


@dataclass(frozen=True)
class Job:
    help: str
    config: str  # "module:Class", the job's typed config
    run: str  # "module:function" in s1ray.jobs, called as run(cfg, args) -> exit status
    example: str  # a shipped config
    add_args: Callable[[argparse.ArgumentParser], None] | None = None


JOBS: dict[str, Job] = {
    "pipeline": Job("the whole recipe, stage by stage, resumable", "s1ray.pipeline.config:PipelineConfig",
                    "s1ray.jobs:pipeline", "configs/pipeline/miniature.yaml"),
    "curate": Job("curate an s1K-style dataset on Ray Data", "s1ray.curation.config:CurationConfig",
                  "s1ray.jobs:curate", "configs/curation/miniature.yaml"),
    "traces": Job("generate reasoning traces (vLLM on Ray Data, or an API)", "s1ray.traces.config:TracesConfig",
                  "s1ray.jobs:traces", "configs/traces/tiny_local.yaml"),
    "train": Job("SFT on Ray Train + DeepSpeed, export an HF model", "s1ray.train.config:TrainConfig",
                 "s1ray.jobs:train", "configs/train/tiny_cpu.yaml", _train_args),
    "eval": Job("budget-forcing evaluation sweep: tables and plots", "s1ray.eval.config:EvalConfig",
                "s1ray.jobs:evaluate", "configs/eval/tiny.yaml", _eval_args),
    "serve": Job("OpenAI-compatible Serve app with budget forcing, until Ctrl-C", "s1ray.serve.config:ServeConfig",
                 "s1ray.jobs:serve", "configs/serve/tiny.yaml", _serve_args),
}


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _run_job(args: argparse.Namespace) -> int:
    import logging
    import os

    from s1ray.config import load_config

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # s1ray's own INFO lines; a job's stages send stderr to their log files (s1ray.console).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = JOBS[args.command]
    cfg = load_config(_load(job.config), args.config, args.overrides)
    return _load(job.run)(cfg, args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1ray", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    for name, job in JOBS.items():
        j = sub.add_parser(name, help=job.help, description=f"{job.help}. Example: s1ray {name} --config {job.example}")
        j.add_argument("--config", required=True, help=f"a YAML file, e.g. {job.example}")
        j.add_argument("overrides", nargs="*", help="dotted overrides, e.g. engine.max_model_len=2048")
        if job.add_args:
            job.add_args(j)
        j.set_defaults(func=_run_job)

    t = sub.add_parser("tiny-model", help="write a random-init tiny Qwen2 model + local tokenizer")
    t.add_argument("out_dir")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_tiny_model)

    g = sub.add_parser("generate", help="budget-forced generation for one prompt")
    g.add_argument("--model", required=True, help="HF model name or local path")
    g.add_argument("--prompt", required=True)
    g.add_argument("--min-thinking-tokens", type=int, default=0)
    g.add_argument("--max-thinking-tokens", type=int, default=None)
    g.add_argument("--num-waits", type=int, default=0, help="ignore the end of thinking at least K times")
    g.add_argument("--max-answer-tokens", type=int, default=512)
    g.add_argument("--format", default="s1", help="reasoning format: s1 or think-tags")
    g.add_argument("--method", default="budget_forcing")
    g.add_argument("--continuation", default=None, help='what replaces a suppressed end (default "Wait")')
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n", type=int, default=1, help="samples; >1 majority-votes their answers")
    g.add_argument("--max-model-len", type=int, default=4096)
    g.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=_cmd_generate)

    from s1ray.plan.cli import add_arguments as add_plan_arguments, run_plan

    pl = sub.add_parser("plan", help="per-GPU memory, Ray resources and expected time of a config, offline")
    add_plan_arguments(pl)
    pl.set_defaults(func=run_plan)
    return p


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    from s1ray.config import format_validation_error

    msg = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
    return " ".join(msg.split()) or type(exc).__name__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Dotted overrides may come before or after a job's flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    flags = [a for a in extra if a.startswith("-")]
    if flags or (extra and args.func is not _run_job):
        parser.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.func is _run_job:
        from s1ray.jobs import bad_input_errors

        bad_input = bad_input_errors()
    else:
        bad_input = (BudgetError, ConfigError, ValueError)
    try:
        return args.func(args)
    except bad_input as exc:
        print(f"s1ray {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"s1ray {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- one line; the traceback is in the job's log
        cause = getattr(exc, "cause", None)  # a Ray task error: say what failed in the task
        exc = cause if isinstance(cause, BaseException) else exc
        print(f"s1ray {args.command}: failed: {type(exc).__name__}: {_one_line(exc)[:500]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

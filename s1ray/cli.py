"""The ``s1ray`` command: one entry point, one subcommand per tool.

    s1ray tiny-model OUT_DIR [--seed N]
    s1ray plan --config FILE [--gpu H100] [--strict] [key=value ...]
    s1ray generate --model PATH --prompt TEXT [--min-thinking-tokens N] [--max-thinking-tokens M]
                   [--num-waits K] [--format s1|think-tags] [--method ...] [--n N] [--json]

Bad input exits with status 2 and one line naming the parameter, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

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
    from s1ray.engine.budget import ThinkingBudget
    from s1ray.engine.types import EngineConfig, GenerationRequest

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
    budget = ThinkingBudget(
        min_tokens=args.min_thinking_tokens,
        max_tokens=args.max_thinking_tokens,
        num_waits=args.num_waits,
        max_answer_tokens=args.max_answer_tokens,
    )
    req = GenerationRequest(
        messages=[{"role": "user", "content": args.prompt}],
        method=args.method,
        budget=budget,
        continuation=args.continuation,
        temperature=args.temperature,
        seed=args.seed,
    )
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1ray", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BudgetError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

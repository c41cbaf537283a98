"""``s1ray plan --config FILE [--kind K] [--gpu H100] [--examples N] [--strict] [--json] [key=value ...]``.

Exit status: 0 when the plan is printed (whether or not it fits; the verdict says), 1 with
``--strict`` when any stage does not fit, 2 for a bad config or an unknown model shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s1ray.plan.anchors import GPU_BYTES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a train, engine, serve, eval, traces, curation or pipeline YAML")
    p.add_argument("--kind", default=None, help="config kind (default: its directory under configs/)")
    p.add_argument("--gpu", default="H100", choices=sorted(GPU_BYTES), help="device the GPU stages are planned for")
    p.add_argument("--examples", type=int, default=None, help="SFT examples (default: dataset.limit, else 1,000)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a stage does not fit")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. block_size=20000")


def run_plan(args: argparse.Namespace) -> int:
    """Plan the config; raises ConfigError/PlanError (exit 2 in the caller) on bad input."""
    from s1ray.config import ConfigError, load_config
    from s1ray.plan.configs import plan_config
    from s1ray.plan.report import format_plans, plans_json
    from s1ray.plan.stages import PlanOptions
    from s1ray.registry import CONFIG_KINDS, config_model

    kind = args.kind or Path(args.config).parent.name
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"--kind: cannot tell the config kind from {args.config!r}; pass one of {sorted(CONFIG_KINDS)}")
    cfg = load_config(config_model(kind), args.config, args.overrides)
    plans = plan_config(kind, cfg, PlanOptions(gpu=args.gpu, examples=args.examples))
    print(json.dumps(plans_json(plans), indent=1) if args.json else format_plans(plans))
    return 1 if args.strict and not all(p.fits for p in plans) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="s1ray plan", description="per-GPU memory, resources and time of a job")
    add_arguments(p)
    try:
        return run_plan(p.parse_args(argv))
    except ValueError as exc:  # ConfigError, PlanError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

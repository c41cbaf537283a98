"""Evaluate a model the way the s1 paper does: accuracy, Control, Scaling, Performance, plots.

    python jobs/evaluate.py --config configs/eval/tiny.yaml [dotted.key=value ...] [--dry-run]
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/eval/s1_32b.yaml

Writes <output_dir>/samples.jsonl (every sample; a rerun skips those already there), metrics.md,
metrics.csv, points.csv, voting.csv, accuracy_vs_thinking.png, voting_vs_forcing.png.
Exit status: 0 done, 1 some samples failed (rerun to retry them), 2 bad config or data.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def _dry_run(cfg) -> None:
    from s1ray.eval.samples import read_samples, sample_key
    from s1ray.eval.sweep import SAMPLES_FILE, load_items, plan_sweep

    specs = plan_sweep(cfg, load_items(cfg))
    done = {sample_key(r) for r in read_samples(Path(cfg.resolved_output_dir()) / SAMPLES_FILE)}
    todo = Counter((s.item.dataset, s.mode, s.method) for s in specs if s.key not in done)
    print(f"{len(specs)} samples planned, {len(specs) - sum(todo.values())} already done")
    for (d, mode, m), n in sorted(todo.items()):
        print(f"  {d:<14} {mode:<4} {m:<20} {n} to generate")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML under configs/eval/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. limit=10 engine.max_model_len=8192")
    p.add_argument("--dry-run", action="store_true", help="load data, print the plan, generate nothing")
    args = p.parse_args(argv)

    from s1ray.config import ConfigError, load_config
    from s1ray.eval.config import EvalConfig
    from s1ray.eval.data import DataError
    from s1ray.eval.sweep import SetupMismatch, run_sweep, summary

    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
        if args.dry_run:
            _dry_run(cfg)
            return 0
        res = run_sweep(cfg)
    except (ConfigError, DataError, SetupMismatch) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    summary(res, echo=print)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a model the way the s1 paper does: accuracy, Control, Scaling, Performance, plots.

    python jobs/evaluate.py --config configs/eval/tiny.yaml [dotted.key=value ...] [--dry-run]
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/eval/s1_32b.yaml

Writes <output_dir>/samples.jsonl (a rerun skips those already there), metrics.md, metrics.csv,
points.csv, voting.csv and the plots. Exit status 1 when some samples failed (rerun to retry
them). Same as ``s1ray eval``.

Exit status: 0 done, 1 failed, 2 bad config or input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from s1ray import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli.main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

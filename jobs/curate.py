"""Curate an s1K-style dataset from question pools: Ray Data, stage by stage, resumable.

    python jobs/curate.py --config configs/curation/miniature.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python jobs/curate.py \
        --config configs/curation/s1_pools.yaml output_dir=/shared/runs/curation/s1

Stages: ingest -> dedupe (+ 8-gram decontamination) -> quality -> difficulty -> domains -> select
-> export, each cached under <output_dir>/stages/ (a rerun redoes only what changed; force=[all]
redoes everything). Dataset: <output_dir>/dataset; report: <output_dir>/report; log:
<output_dir>/logs/curate.log. Same as ``s1ray curate``.

Exit status: 0 done, 1 failed, 2 bad config or input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from s1ray import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli.main(["curate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""Curate an s1K-style dataset from question pools: Ray Data, stage by stage, resumable.

    python jobs/curate.py --config configs/curation/miniature.yaml [dotted.key=value ...]
    python jobs/curate.py --config configs/curation/miniature.yaml selection.method=random selection.seed=3
    ray job submit --working-dir . -- python jobs/curate.py \
        --config configs/curation/s1_pools.yaml output_dir=/shared/runs/curation/s1

Stages: ingest -> dedupe (+ 8-gram decontamination) -> quality -> difficulty -> domains -> select
-> export. Each writes <output_dir>/stages/<stage>/{kept,rejects} atomically with a fingerprint of
its config and inputs; a rerun redoes only the stages whose config or inputs changed (force=[all]
redoes everything). The dataset lands in <output_dir>/dataset (hf/ + s1k.parquet), the report in
<output_dir>/report (report.json, report.md, PNGs). Prints one JSON summary.
Exit status: 0 done; 1 a stage failed (earlier stages stay cached; rerun to resume); 2 bad config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML under configs/curation/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. selection.size=500 force=[select]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from s1ray.config import ConfigError, load_config
    from s1ray.curation.config import CurationConfig
    from s1ray.curation.pipeline import CurationError, run_curation

    try:
        cfg = load_config(CurationConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"curate: {exc}", file=sys.stderr)
        return 2
    try:
        res = run_curation(cfg)
    except ConfigError as exc:  # inputs the driver checks before Ray starts: eval sets, output_dir
        print(f"curate: {exc}", file=sys.stderr)
        return 2
    except CurationError as exc:
        print(f"curate: FAILED: {exc}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in res.to_dict().items() if k != "stages"}
    summary["stages"] = {s: {k: st.get(k) for k in ("rows_in", "rows_out", "rejected", "elapsed_s", "rows_per_s", "cached")}
                         for s, st in res.stages.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

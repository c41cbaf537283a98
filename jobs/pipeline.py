"""The whole s1 recipe as one job: traces -> curation -> SFT -> evaluation (-> Serve).

    python jobs/pipeline.py --config configs/pipeline/miniature.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/pipeline/s1_32b.yaml

Every stage resumes: rerunning skips stages already done with the same config.
Exit status: 0 done, 1 a stage failed, 2 bad config.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2")
    args = p.parse_args(argv)

    from s1ray.config import ConfigError, load_config
    from s1ray.pipeline.config import PipelineConfig

    try:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from s1ray.pipeline.run import PipelineRunner

    try:
        summary = PipelineRunner(cfg).run()
    except ConfigError as exc:  # inputs checked on the driver: eval sets, model paths, storage
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- report, exit non-zero
        print(f"pipeline failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({s: round(v["wall_s"], 1) for s, v in summary["stages"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SFT a reasoning model (s1's recipe) on Ray Train + DeepSpeed; export an HF model vLLM serves.

    python jobs/train_sft.py --config configs/train/tiny_cpu.yaml --toy-data 32     # CPU, 2 workers
    python jobs/train_sft.py --config configs/train/tiny_cpu.yaml max_steps=4 packing=true
    ray job submit --working-dir . -- python jobs/train_sft.py --config configs/train/s1_32b.yaml
    python jobs/train_sft.py --config configs/train/s1_32b.yaml --dry-run           # data stats only

Dotted overrides follow the config (``dataset.limit=64``, ``zero_stage=2``). Submitting the same
``name`` (and ``storage_path``) again resumes the run from its newest complete checkpoint; worker
failures restart from it automatically (``max_failures``). The model is exported to
``export_dir`` (default ``<storage_path>/<name>/export``).
Exit status: 0 done, 1 training failed, 2 bad config or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML under configs/train/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. max_steps=10 dataset.limit=64")
    p.add_argument("--dry-run", action="store_true", help="load and tokenize the data, print stats, train nothing")
    p.add_argument("--toy-data", type=int, metavar="N", help="write N toy examples to dataset.source if it is missing")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs for a local Ray cluster started by the job")
    args = p.parse_intermixed_args(argv)  # overrides may come before or after the flags

    from s1ray.config import ConfigError, load_config
    from s1ray.train.config import TrainConfig
    from s1ray.train.data import DataError

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if args.toy_data and not Path(cfg.dataset.source).exists():
            from s1ray.train.toy import write_toy_dataset

            print(f"wrote {write_toy_dataset(cfg.dataset.source, args.toy_data)}")
        if args.dry_run:
            from s1ray.train.trainer import describe_data, prepare_data, resolve_paths

            data, _ = prepare_data(resolve_paths(cfg))
            print(describe_data(data.stats))
            return 0
        from s1ray.train.trainer import run

        ray_init = {"num_cpus": args.ray_num_cpus} if args.ray_num_cpus else None
        res = run(cfg, ray_init=ray_init)
    except (ConfigError, DataError) as exc:
        print(f"train_sft: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # training failed after max_failures restarts
        print(f"train_sft: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"metrics": res.metrics, "checkpoint": res.checkpoint, "export_dir": res.export_dir,
                      "data": res.data_stats}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate reasoning traces (or solver samples) for a question dataset: Ray Data + vLLM, or an API.

    python jobs/generate_traces.py --config configs/traces/tiny_local.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python jobs/generate_traces.py \
        --config configs/traces/qwen_solver.yaml input.path=data/questions.parquet
    DEEPSEEK_API_KEY=... python jobs/generate_traces.py --config configs/traces/r1_api.yaml

Writes <output_dir>/shard-NNNNN.parquet (or .jsonl) and manifest.json; a rerun of the same
config skips the (id, sample_index) rows already in completed shards. Prints one JSON summary.
Exit status: 0 done; 1 the job failed (every row failed, too many errors, the engine or the
endpoint could not be used -- the message says what was kept; rerun to resume); 2 bad config,
input or output_dir.
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
    p.add_argument("--config", required=True, help="YAML under configs/traces/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. input.limit=100 teacher.replicas=4")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from s1ray.config import ConfigError, load_config
    from s1ray.traces.api import ApiSetupError
    from s1ray.traces.config import TracesConfig
    from s1ray.traces.inputs import InputError
    from s1ray.traces.job import TracesJobError, run_traces
    from s1ray.traces.output import InjectedFailure, OutputMismatch

    try:
        cfg = load_config(TracesConfig, args.config, args.overrides)
        res = run_traces(cfg)
    except (ConfigError, InputError, OutputMismatch) as exc:
        print(f"generate_traces: {exc}", file=sys.stderr)
        return 2
    except (TracesJobError, ApiSetupError, InjectedFailure) as exc:
        print(f"generate_traces: FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

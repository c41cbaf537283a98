"""Generate reasoning traces (or solver samples) for a question dataset: Ray Data + vLLM, or an API.

    python jobs/generate_traces.py --config configs/traces/tiny_local.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python jobs/generate_traces.py \
        --config configs/traces/qwen_solver.yaml input.path=data/questions.parquet
    DEEPSEEK_API_KEY=... python jobs/generate_traces.py --config configs/traces/r1_api.yaml

Writes <output_dir>/shard-NNNNN.parquet (or .jsonl) and manifest.json; a rerun skips the rows
already in completed shards. Same as ``s1ray traces``.

Exit status: 0 done, 1 failed, 2 bad config or input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from s1ray import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli.main(["traces", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""SFT a reasoning model (s1's recipe) on Ray Train + DeepSpeed; export an HF model vLLM serves.

    python jobs/train_sft.py --config configs/train/tiny_cpu.yaml --toy-data 32     # CPU, 2 workers
    python jobs/train_sft.py --config configs/train/tiny_cpu.yaml max_steps=4 packing=true
    ray job submit --working-dir . -- python jobs/train_sft.py --config configs/train/s1_32b.yaml
    python jobs/train_sft.py --config configs/train/s1_32b.yaml --dry-run           # data stats only

Submitting the same ``name`` (and ``storage_path``) again resumes from the newest complete
checkpoint. Same as ``s1ray train``.

Exit status: 0 done, 1 failed, 2 bad config or input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from s1ray import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

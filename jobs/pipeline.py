"""The whole s1 recipe as one job: traces -> curation -> SFT -> evaluation (-> Serve).

    python jobs/pipeline.py --config configs/pipeline/miniature.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/pipeline/s1_32b.yaml

Every stage resumes: rerunning skips stages already done with the same config. One log per stage
in <work_dir>/logs/. Same as ``s1ray pipeline``.

Exit status: 0 done, 1 failed, 2 bad config or input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from s1ray import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli.main(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

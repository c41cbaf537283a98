#!/usr/bin/env bash
# Set up and run the embedded default on a CPU, no network: s1 in miniature
# (curation -> SFT with Ray Train + DeepSpeed -> budget-forcing sweep -> Serve), ~5 min on 2 cores after the install.
# Results: runs/pipeline/miniature/eval/{metrics.md,accuracy_vs_thinking.png}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false
python jobs/pipeline.py --config configs/pipeline/miniature.yaml "$@"
echo; cat runs/pipeline/miniature/eval/metrics.md

#!/usr/bin/env bash
# Set up and run the embedded default on a CPU, no network: s1 in miniature
# (curation -> SFT with Ray Train + DeepSpeed -> budget-forcing sweep -> Serve).
# Prints one line per stage and ends with the metrics table and where the plot is;
# each stage's full log is in runs/pipeline/miniature/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cpu
exec s1ray pipeline --config configs/pipeline/miniature.yaml "$@"

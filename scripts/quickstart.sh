#!/usr/bin/env bash
# Set up and run the embedded default on a CPU: make the tiny model, then budget-forced generation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false
[ -f .tiny/model/config.json ] || s1ray tiny-model .tiny/model --seed 0
s1ray generate --model .tiny/model --prompt "What is 12 + 30?" \
  --min-thinking-tokens 32 --max-thinking-tokens 64 --max-answer-tokens 16 --enforce-eager --json

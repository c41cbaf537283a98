#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit, Ray and vLLM tiers on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit, Ray and vLLM tiers on the CPU.
# With no arguments the Ray Train (DeepSpeed) tests, the 2-node cluster's included, run in a pytest
# process of their own, so they start from a process with no Ray or vLLM state left by other
# modules (a Ray that an earlier module left running once hung them and ended the run silently).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cpu
if [ "$#" -gt 0 ]; then
  exec python -m pytest -q -p no:cacheprovider "$@"
fi
TRAIN_TESTS=(tests/test_train_ray.py tests/test_train_loss_ray.py tests/test_cluster.py tests/test_cluster_data.py
            tests/test_cluster_serve.py tests/test_cluster_traces.py tests/test_paper.py)
python -m pytest -q -p no:cacheprovider "${TRAIN_TESTS[@]/#/--ignore=}"
python -m pytest -q -p no:cacheprovider "${TRAIN_TESTS[@]}"

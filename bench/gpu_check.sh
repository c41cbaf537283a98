#!/usr/bin/env bash
# The prepared GPU check: one call on one H100/H200, at most 10 minutes, one JSON.
#   bash bench/gpu_check.sh              # writes $OUT/gpu_check.json (default bench/results/)
#   bash bench/gpu_check.sh --dry-run    # tiny shapes on the CPU: the same code path, no sub-benches
# It runs what is installed and records the rest as skipped, with the reason: on a machine with
# torch alone that is the loss comparison (fused_chunked vs logits at 8k/16k/32k tokens);
# with vllm / ray / deepspeed also the engine, traces and train benches' GPU shapes.
# What each part measures: bench/gpu_check.py's docstring and bench/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
# 570 s for everything: the parts share a 540 s budget, and a hung part cannot outlast this.
exec timeout -k 10 570 "$PY" bench/gpu_check.py --budget-s 540 "$@"

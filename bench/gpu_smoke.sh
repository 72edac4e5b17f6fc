#!/usr/bin/env bash
# The first run on a GPU machine: torch/CUDA/device, throughput, 20 steps of every method, a compiled run, Ctrl-C +
# resume, torchrun with unused parts; one table at the end (what each check does: bench/gpu_smoke.py's docstring).
#
#   bash bench/gpu_smoke.sh              # on a GPU machine (about 10 minutes on one GPU), offline
#   bash bench/gpu_smoke.sh --cpu        # the dry run: the same checks CI-sized on the CPU
#   bash bench/gpu_smoke.sh --out DIR    # keep the runs and logs in DIR (default: a new temporary folder)
#
# Exit code 0 when every check passed. PYTHON=... picks the interpreter (default: the clone's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # model.init=random everywhere; nothing may be downloaded
exec "$PY" bench/gpu_smoke.py "$@"

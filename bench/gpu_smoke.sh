#!/usr/bin/env bash
# The first run on a GPU machine: torch/CUDA/device, throughput, 20 steps of every method, a compiled run, Ctrl-C +
# resume, torchrun with unused parts; one table at the end (what each check does: bench/gpu_smoke.py's docstring).
#
#   bash bench/gpu_smoke.sh              # on a GPU machine (about 10 minutes on one GPU), offline
#   bash bench/gpu_smoke.sh --cpu        # the dry run: the same checks CI-sized on the CPU
#   bash bench/gpu_smoke.sh --out DIR    # keep the runs and logs in DIR (default: a new temporary folder)
#
# Offline: model.init=random everywhere (no weights are downloaded), data from data_samples/.
# Exit code 0 when every check passed. PYTHON=... picks the interpreter (default: the clone's .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/bench/gpu_smoke.py" "$@"

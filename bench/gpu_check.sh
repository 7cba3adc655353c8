#!/usr/bin/env bash
# One prepared GPU check of training, scoring, the RL reward function and the server (bench/gpu_check.py).
#   bash bench/gpu_check.sh              on a machine with a CUDA GPU (writes bench/results/gpu_check.json)
#   bash bench/gpu_check.sh --dry-run    the same steps, tiny, on the CPU (what CI runs, so the script cannot rot)
# On a bare GPU machine without this project's dependencies, carry their wheels in .whl/ (installed below, offline).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python3 -c "import transformers, trl, datasets, accelerate, evaluate, pipeline" 2>/dev/null; then
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        python3 -m pip install -q -e ".[test]" || exit 1
    fi
fi
exec python3 bench/gpu_check.py "$@"

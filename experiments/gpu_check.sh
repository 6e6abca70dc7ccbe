#!/usr/bin/env bash
# One command on a GPU machine (H100 / H200, jax 0.11.x CUDA already installed, no package
# registry): install the wheels carried in .whl/ (experiments/gpu_wheels.sh fills it), put
# the checkout on PYTHONPATH and run the GPU check into $OUT (or ./runs/gpu_check).
#   bash experiments/gpu_check.sh [--skip SECTION,...] [--budget-s 450] [--dry-run]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  # only what the machine lacks: pip leaves installed packages (jax, numpy, ...) alone
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/jaxprune-site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/jaxprune-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  >"$OUT/nvidia_smi.csv" 2>&1 || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1
timeout 470 "$PY" -m experiments.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"

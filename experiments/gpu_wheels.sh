#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels jaxprune needs that a GPU machine's
# image may lack, for CPython 3.12 on x86-64 (the H100 / H200 machines). Run here, with
# network; experiments/gpu_check.sh installs them there with --no-index --no-deps.
# The image already has jax 0.11 (CUDA), numpy, flax, optax, chex, orbax, einops,
# safetensors, torch: those are not fetched (two versions of one package break the install).
#   bash experiments/gpu_wheels.sh [EXTRA_REQUIREMENT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PY=${PYTHON:-python3}
NEEDED=(gin-config grain array-record portpicker importlib_resources "$@")  # grain needs the last 3
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl "${NEEDED[@]}"
ls -l .whl
for w in .whl/*.whl; do  # name any dependency the image may lack
  echo "== $w"; unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done

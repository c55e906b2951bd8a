#!/usr/bin/env bash
# CPU training-step bench: our EfficientNetV2 vs timm eager, same torch, same thread count.
# Forward + cross-entropy + backward of B0 at 128 px, batch 16. Rounds alternate ours/timm; the
# table shows min and median step times and the ratio of the mins (compare.py Note [noisy shared
# CPUs]); results go to bench/results/model.json.
#   BUILD_DIR=build-model THREADS=2 ROUNDS=2 bench/model/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=${PYTHON:-$ROOT/.venv/bin/python}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
VARIANT=${VARIANT:-b0}
IMAGE=${IMAGE:-128}
BATCH=${BATCH:-16}
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-3}
OUT=${OUT:-$ROOT/bench/results/model.json}

cmake --build "$BUILD" --target bench_model_step >/dev/null
ARGS=(--variant "$VARIANT" --image "$IMAGE" --batch "$BATCH" --threads "$THREADS"
      --iters "$ITERS" --warmup "$WARMUP")
{
  for _ in $(seq "$ROUNDS"); do
    "$BUILD/bin/bench_model_step" "${ARGS[@]}" --json
    "$PY" "$ROOT/bench/model/timm_step.py" "${ARGS[@]}"
  done
} | "$PY" "$ROOT/bench/model/compare.py" "$OUT" \
    "CPU fwd+bwd, torch $("$PY" -c 'import torch;print(torch.__version__)'), $THREADS threads, $(nproc) cores"
echo "wrote $OUT"

#!/usr/bin/env bash
# GPU training throughput (run on the GPU machine, from the repository root): our EfficientNetV2
# vs timm eager in the same run, bf16 autocast + channels_last, SGD step included (the setting of
# the peer numbers in docs/build-notes.md), batch 256: B0@224 and B2@260.
# The GPU machine has no gRPC and no OpenCV C++: configure without them; only this bench's targets
# are built. Results: bench/results/model_gpu.json.
#   bench/model/gpu.sh            (BUILD_DIR, PYTHON, ROUNDS, ITERS, WARMUP may be set)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-gpu}
PY=${PYTHON:-python3}
ROUNDS=${ROUNDS:-2}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
OUT=${OUT:-$ROOT/bench/results/model_gpu.json}

TORCH_PREFIX=$("$PY" -c 'import torch;print(torch.utils.cmake_prefix_path)')
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPython3_EXECUTABLE="$(command -v "$PY")" \
    -DEFFNET_WITH_GRPC=OFF -DEFFNET_WITH_OPENCV=OFF -DEFFNET_BUILD_TESTS=OFF
fi
cmake --build "$BUILD" --target bench_model_step -j"$(nproc)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

COMMON=(--batch 256 --device cuda --bf16 --channels-last --optimizer --cudnn-benchmark
        --iters "$ITERS" --warmup "$WARMUP")
{
  for _ in $(seq "$ROUNDS"); do
    for case in "b0 224" "b2 260"; do
      set -- $case
      "$BUILD/bin/bench_model_step" --variant "$1" --image "$2" "${COMMON[@]}" --json
      "$PY" "$ROOT/bench/model/timm_step.py" --variant "$1" --image "$2" "${COMMON[@]}"
    done
  done
} | "$PY" "$ROOT/bench/model/compare.py" "$OUT" \
    "GPU train step, bf16 autocast, channels_last, SGD, torch $("$PY" -c 'import torch;print(torch.__version__)')"
echo "wrote $OUT"

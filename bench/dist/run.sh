#!/usr/bin/env bash
# Data-parallel benches on this (CPU) machine:
#  1. all-reduce bus bandwidth per message size, MPI backend, 2 ranks (mpirun --oversubscribe);
#  2. step time of EfficientNetV2 at world size 1 with the reducer off vs on, and the projection
#     of step time / scaling efficiency to 8-256 GPUs (see Note [projection model] in
#     bench_step.cpp).
# Prints the tables and writes bench/results/dist.json.
#   BUILD_DIR=build-dist IMAGE=128 BATCH=8 bench/dist/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
VARIANT=${VARIANT:-b0}
IMAGE=${IMAGE:-128}
BATCH=${BATCH:-8}
ITERS=${ITERS:-5}
ROUNDS=${ROUNDS:-2}
MAX_MB=${MAX_MB:-64}
GPU_STEP_MS=${GPU_STEP_MS:-44}
OUT=${OUT:-$ROOT/bench/results/dist.json}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=${MPIRUN:-mpirun}

cmake --build "$BUILD" --target bench_dist_allreduce bench_dist_step >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$MPIRUN" --oversubscribe -np 2 "$BUILD/bin/bench_dist_allreduce" --backend mpi --max-mb "$MAX_MB" \
  --json "$TMP/allreduce.json"
# Default buckets (1 MB first, 25 MB cap) and small ones (4 MB cap): B0's 27 MB of gradients fit
# in two default buckets, the second ready only at the end of backward, so little overlaps.
for CAP in 25 4; do
  "$MPIRUN" --oversubscribe --bind-to none -np 1 "$BUILD/bin/bench_dist_step" \
    --variant "$VARIANT" --image "$IMAGE" --batch "$BATCH" --iters "$ITERS" --rounds "$ROUNDS" \
    --gpu-step-ms "$GPU_STEP_MS" --bucket-cap-mb "$CAP" --json "$TMP/step_cap$CAP.json"
done

mkdir -p "$(dirname "$OUT")"
python3 - "$TMP" "$OUT" <<'PY'
import json, os, platform, sys
tmpdir, dest = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(os.path.join(tmpdir, name)))
out = {
    "machine": f"{platform.node()}, {os.cpu_count()} cores, CPU only, load average "
               f"{os.getloadavg()[0]:.1f} at the end (shared machine)",
    "allreduce_mpi_2ranks": load("allreduce.json"),
    "step_world1_bucket_cap_25mb": load("step_cap25.json"),
    "step_world1_bucket_cap_4mb": load("step_cap4.json"),
}
tmp = dest + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, indent=2)
os.replace(tmp, dest)
PY
echo "wrote $OUT"

#!/usr/bin/env bash
# GPU check of the NCCL path (run on the GPU machine from the repository root; it cannot run on
# the CPU machines). NCCL refuses two ranks on one GPU (docs/build-notes.md trap 4), so everything runs
# at world size 1, which still calls ncclAllReduce / ncclBroadcast for real.
#  1. builds effnet_dist + the dist benches and tests with the CUDA/NCCL path;
#  2. single-process dist unit tests;
#  3. NCCL all-reduce bandwidth per message size (world size 1: algbw only, busbw factor is 0);
#  4. step time of B0 at 224 px, batch 64, reducer off vs on, NCCL backend;
#  5. loss curve over 30 steps, same seed: CUDA + NCCL vs CPU + MPI; the first 10 steps must agree
#     within 1 % (GPU and CPU kernels round differently and training amplifies it later), and both
#     curves must go down.
# Usage (device tool): bash bench/dist/gpu.sh  [BUILD_DIR=build-gpu] ; results under $OUT or ./gpu-out
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD_DIR:-build-gpu}
RESULTS=${OUT:-$ROOT/gpu-out}
mkdir -p "$RESULTS"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
PREFIX="$TORCH_PREFIX"
if [ -d "$ROOT/.deps/grpc/usr" ]; then
  PREFIX="$ROOT/.deps/grpc/usr;$TORCH_PREFIX"
  export LD_LIBRARY_PATH="$ROOT/.deps/grpc/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
GRPC_FLAG=-DEFFNET_WITH_GRPC=OFF
[ -d "$ROOT/.deps/grpc/usr" ] && GRPC_FLAG=-DEFFNET_WITH_GRPC=ON
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DEFFNET_WITH_OPENCV=OFF "$GRPC_FLAG" -DPython3_EXECUTABLE="$(command -v python3)" \
  | grep -E "NCCL backend|Error" || true
grep -q "EFFNET_HAVE_NCCL" "$BUILD/build.ninja" || { echo "NCCL backend not configured"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target dist_unit_tests bench_dist_allreduce bench_dist_step

echo "== dist unit tests"
"$BUILD/tests/dist_unit_tests" 2>&1 | tail -3

echo "== NCCL all-reduce, world size 1"
mpirun -np 1 "$BUILD/bin/bench_dist_allreduce" --backend nccl --max-mb 256 \
  --json "$RESULTS/allreduce_nccl.json"

echo "== step time, B0 224 px batch 64, reducer off vs on (NCCL)"
mpirun -np 1 "$BUILD/bin/bench_dist_step" --device cuda --backend nccl --image 224 --batch 64 \
  --iters 20 --rounds 2 --json "$RESULTS/step_nccl.json"

echo "== loss curve: CUDA + NCCL vs CPU + MPI, same seed"
mpirun -np 1 "$BUILD/bin/bench_dist_step" --loss-curve 30 --device cuda --backend nccl \
  --image 64 --batch 16 --json "$RESULTS/loss_cuda.json" >/dev/null
mpirun -np 1 "$BUILD/bin/bench_dist_step" --loss-curve 30 --device cpu --backend mpi \
  --image 64 --batch 16 --json "$RESULTS/loss_cpu.json" >/dev/null
python3 - "$RESULTS/loss_cuda.json" "$RESULTS/loss_cpu.json" <<'PY'
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
assert g["backend"] == "nccl", g["backend"]
worst = 0.0  # over the first 10 steps
print(f"{'step':>4} {'cuda+nccl':>10} {'cpu+mpi':>10} {'rel':>8}")
for i, (a, b) in enumerate(zip(g["losses"], c["losses"])):
    rel = abs(a - b) / max(abs(b), 1e-6)
    if i < 10:
        worst = max(worst, rel)
    print(f"{i:4d} {a:10.4f} {b:10.4f} {rel:8.4f}")
print(f"first/last loss cuda: {g['losses'][0]:.4f} -> {g['losses'][-1]:.4f}; worst rel diff (10 steps) {worst:.4f}")
ok = worst < 0.01 and g["losses"][-1] < g["losses"][0] and c["losses"][-1] < c["losses"][0]
sys.exit(0 if ok else 1)
PY
echo "gpu.sh: OK (results in $RESULTS)"

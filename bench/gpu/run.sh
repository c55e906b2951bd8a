#!/usr/bin/env bash
# The GPU proof in one command (Note [CUDA graph step], worker/train/graph_step.h), from the
# repository root on the GPU machine (device tool), printing one table and writing JSON to $OUT:
#   1. ctest -L gpu: CUDA vs CPU logits, a bf16 step, the captured step equal to the eager one,
#      the NCCL reducer at world 1;
#   2. training throughput, ours (eager and CUDA graph) vs timm eager, same GPU, bf16,
#      channels_last, SGD, batch 256: B0 at 128, 192, 224 px, B2 at 260 px;
#   3. the study on the GPU: study-b0/b1/b2 (10 epochs each, early stopping off) on the Flipkart
#      store carried in .gpu-data/flipkart (bench/gpu/pack_store.py), wall time of each and of all
#      three next to the study's Keras CPU times;
#   4. data-parallel overhead at world 1 (reducer + NCCL vs the plain step), and the loss curve of
#      CUDA + NCCL against CPU + MPI.
#   bench/gpu/run.sh            the GPU run (needs nvidia-smi)
#   bench/gpu/run.sh --dry-run  the same code path on a CPU: device cpu, tiny sizes, graphs
#                               skipped, a generated store (CI: test bench_gpu_dry_run)
# Environment: BUILD_DIR (GPU: build-gpu; dry run: build), PYTHON, OUT (default gpu-out), ROUNDS,
# EFFNET_GPU_NO_BUILD=1 (use the build as it is).
# Before the GPU run, here:  bench/gpu/pack_store.py pack <study store at 260 px> .gpu-data/flipkart
# (.gpu-data/ is ignored by git; carry it, and .deps/grpc if built: docs/build-notes.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
RESULTS=${OUT:-$ROOT/gpu-out}
mkdir -p "$RESULTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/effnet-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
START=$(date +%s)
log() { echo "[gpu $(( $(date +%s) - START ))s] $*"; }

# ---- 0. build (GPU: configure build-gpu with Ninja on all cores; dry run: the existing build) ----
TARGETS="train_unit_tests test_model dist_unit_tests bench_model_step bench_dist_step effnet-train"
if [ $DRY = 1 ]; then
  BUILD=${BUILD_DIR:-$ROOT/build}
  DEVICE=cpu
  TARGETS="$TARGETS effnet-synth effnet-prepare"
else
  BUILD=${BUILD_DIR:-$ROOT/build-gpu}
  DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee "$RESULTS/gpu.txt"
  if [ ! -f "$BUILD/build.ninja" ]; then
    TORCH_PREFIX=$("$PY" -c 'import torch;print(torch.utils.cmake_prefix_path)')
    PREFIX="$TORCH_PREFIX" GRPC=OFF
    if [ -d "$ROOT/.deps/grpc/usr" ]; then
      PREFIX="$ROOT/.deps/grpc/usr;$TORCH_PREFIX" GRPC=ON
      export LD_LIBRARY_PATH="$ROOT/.deps/grpc/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    fi
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
      -DEFFNET_WITH_OPENCV=OFF -DEFFNET_WITH_GRPC=$GRPC -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DPython3_EXECUTABLE="$(command -v "$PY")" >"$RESULTS/configure.log" 2>&1 \
      || { tail -30 "$RESULTS/configure.log"; exit 1; }
  fi
fi
if [ -z "${EFFNET_GPU_NO_BUILD:-}" ]; then  # set by the CI test: the build is there already
  log "building $TARGETS in $BUILD"
  # shellcheck disable=SC2086
  cmake --build "$BUILD" -j"$(nproc)" --target $TARGETS >"$RESULTS/build.log" 2>&1 \
    || { tail -40 "$RESULTS/build.log"; exit 1; }
fi
BIN=$BUILD/bin

# ---- 1. CUDA tests ----
log "ctest -L gpu"
set +e
(cd "$BUILD" && ctest -L gpu --output-on-failure) >"$RESULTS/ctest_gpu.log" 2>&1
CTEST_RC=$?
set -e
grep -E "tests passed|Skipped|Failed|\*\*\*" "$RESULTS/ctest_gpu.log" || true

# ---- 2. throughput: ours eager / graph vs timm eager, alternating rounds ----
ROUNDS=${ROUNDS:-2}
if [ $DRY = 1 ]; then
  CASES=("b0 64"); COMMON=(--batch 4 --device cpu --optimizer --iters 2 --warmup 1 --threads 2)
  GRAPH_RUNS=(eager)
  ROUNDS=1
else
  CASES=("b0 128" "b0 192" "b0 224" "b2 260")
  COMMON=(--batch 256 --device cuda --bf16 --channels-last --optimizer --cudnn-benchmark
          --iters 15 --warmup 5)
  GRAPH_RUNS=(eager graph)
fi
log "throughput: ${CASES[*]} x ${GRAPH_RUNS[*]} + timm, $ROUNDS rounds"
{
  for _ in $(seq "$ROUNDS"); do
    for c in "${CASES[@]}"; do
      set -- $c
      for g in "${GRAPH_RUNS[@]}"; do
        extra=(); [ "$g" = graph ] && extra=(--cuda-graph)
        "$BIN/bench_model_step" --variant "$1" --image "$2" "${COMMON[@]}" "${extra[@]}" --json \
          || echo "bench_model_step $1@$2 $g failed" >&2
      done
      "$PY" bench/model/timm_step.py --variant "$1" --image "$2" "${COMMON[@]}" \
        || echo "timm_step $1@$2 failed" >&2
    done
  done
} 2>"$RESULTS/throughput.err" | tee "$RESULTS/throughput.jsonl" \
  | "$PY" bench/model/compare.py "$RESULTS/throughput.json" \
    "train step, $DEVICE, torch $("$PY" -c 'import torch;print(torch.__version__)')" \
  | tee "$RESULTS/throughput.txt" || true

# ---- 3. the study ----
DATA=$WORK/study.h5
if [ $DRY = 1 ]; then
  # A generated store prepared as effnet-study prepares one, then packed and unpacked as the
  # Flipkart store is for the GPU machine (the same path).
  "$BIN/effnet-synth" --out "$WORK/synth" --per-class 5 --size 32 --seed 3 >/dev/null
  "$BIN/effnet-prepare" --csv "$WORK/synth/synth.csv" --images "$WORK/synth/images" \
    --out "$WORK/prepared.h5" --size 32 --test-fraction 0.15 --val-fraction 0.2 \
    --augment-offline >/dev/null 2>&1
  "$PY" bench/gpu/pack_store.py pack "$WORK/prepared.h5" "$WORK/pack"
  "$PY" bench/gpu/pack_store.py unpack "$WORK/pack" "$DATA"
  VARIANTS="b0"; STUDY_SET=(--set job.epochs=1 --set runtime.threads=2)
elif [ -f "$ROOT/.gpu-data/flipkart/skeleton.h5" ]; then
  "$PY" bench/gpu/pack_store.py unpack "$ROOT/.gpu-data/flipkart" "$DATA"
  VARIANTS="b0 b1 b2"; STUDY_SET=()
else
  echo "no .gpu-data/flipkart: the study step is skipped (see the header)" >&2
  VARIANTS=""
fi
echo "[]" >"$WORK/study.json"
for v in $VARIANTS; do
  log "study-$v"
  t0=$(date +%s.%N)
  set +e
  "$BIN/effnet-train" --preset "study-$v" --data "$DATA" --out "$WORK/study-$v" \
    --set job.early_stopping.patience=0 --set output.progress=false --set output.tensorboard=false \
    "${STUDY_SET[@]}" >"$RESULTS/study-$v.log" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  "$PY" - "$WORK/study.json" "$v" "$t0" "$t1" "$rc" "$WORK/study-$v/summary.json" <<'PY'
import json, os, sys
path, v, t0, t1, rc, summary = sys.argv[1:7]
rows = json.load(open(path))
s = json.load(open(summary)) if os.path.exists(summary) else {}
rows.append({"variant": v, "wall_s": round(float(t1) - float(t0), 2), "rc": int(rc),
             "summary": {k: s.get(k) for k in ("test_accuracy", "fit_time_s", "best_epoch",
                                                 "stop_reason", "device") if k in s}})
json.dump(rows, open(path, "w"), indent=2)
PY
  [ "$rc" = 0 ] || tail -20 "$RESULTS/study-$v.log"
done
cp "$WORK/study.json" "$RESULTS/study.json"

# ---- 4. data-parallel overhead at world 1, loss curve ----
log "data-parallel overhead at world 1"
if [ $DRY = 1 ]; then
  DP=(--device cpu --backend mpi --image 64 --batch 4 --iters 2 --rounds 1)
else
  DP=(--device cuda --backend nccl --image 224 --batch 256 --iters 15 --rounds 2)
fi
mpirun -np 1 "$BIN/bench_dist_step" "${DP[@]}" --json "$RESULTS/dp_overhead.json" \
  >"$RESULTS/dp_overhead.log" 2>&1 || { tail -20 "$RESULTS/dp_overhead.log"; }
if [ $DRY = 0 ]; then
  mpirun -np 1 "$BIN/bench_dist_step" --loss-curve 30 --device cuda --backend nccl --image 64 \
    --batch 16 --json "$RESULTS/loss_cuda.json" >/dev/null 2>&1 || true
  mpirun -np 1 "$BIN/bench_dist_step" --loss-curve 30 --device cpu --backend mpi --image 64 \
    --batch 16 --json "$RESULTS/loss_cpu.json" >/dev/null 2>&1 || true
fi

# ---- the table and gpu_run.json ----
"$PY" - "$RESULTS" "$DRY" "$CTEST_RC" "$(( $(date +%s) - START ))" <<'PY'
import json, os, sys
res, dry, ctest_rc, total = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
def load(name, default=None):
    p = os.path.join(res, name)
    return json.load(open(p)) if os.path.exists(p) else default
out = {"dry_run": dry, "ctest_gpu_rc": ctest_rc, "total_s": total, "targets": {}}
print("\n== bench/gpu/run.sh" + (" --dry-run" if dry else "") + f": {total} s")
print(f"1. ctest -L gpu: {'ok' if ctest_rc == 0 else 'FAILED'} (rc {ctest_rc})")
tp = load("throughput.json", {"results": []})
out["throughput"] = tp["results"]
print("2. throughput (img/s):")
for r in tp["results"]:
    o, t = r["ours"], r["timm"]
    print(f"   {r['case']:<28} {r['ours_step']:<6} ours {o['batch'] * 1000 / o['min_ms']:>8.0f}"
          f"  timm {t['batch'] * 1000 / t['min_ms']:>8.0f}  x{r['speedup_vs_timm']:.2f}")
best = {}
for r in tp["results"]:
    best[r["case"]] = max(best.get(r["case"], 0), r["speedup_vs_timm"])
keras = {"b0": 4589, "b1": 3418, "b2": 4598}  # the study's Keras fits on a CPU PC (10 epochs)
study = load("study.json", [])
out["study"] = study
print("3. study (10 epochs each, early stopping off):" if not dry else "3. study (dry run):")
for r in study:
    s = r["summary"]
    print(f"   study-{r['variant']}: {r['wall_s']:.1f} s (Keras CPU {keras[r['variant']]} s), "
          f"rc {r['rc']}, fit {s.get('fit_time_s')} s, test accuracy {s.get('test_accuracy')}")
total_study = sum(r["wall_s"] for r in study)
if study:
    print(f"   all: {total_study:.1f} s")
dp = load("dp_overhead.json")
if dp:
    over = dp["reducer_on"]["step_ms"] / dp["reducer_off"]["step_ms"] - 1
    out["dp_overhead"] = {"off_ms": dp["reducer_off"]["step_ms"],
                          "on_ms": dp["reducer_on"]["step_ms"], "overhead": over}
    print(f"4. data-parallel overhead at world 1: {dp['reducer_off']['step_ms']:.2f} -> "
          f"{dp['reducer_on']['step_ms']:.2f} ms ({100 * over:+.1f} %)")
lc, lp = load("loss_cuda.json"), load("loss_cpu.json")
if lc and lp:
    worst = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(lc["losses"][:10], lp["losses"][:10]))
    out["loss_curve_worst_rel_10_steps"] = worst
    print(f"   loss curve CUDA+NCCL vs CPU+MPI, worst relative difference over 10 steps: {worst:.4f}")
if not dry:
    def at(case_prefix):
        return max((v for k, v in best.items() if k.startswith(case_prefix)), default=None)
    t = out["targets"]
    t["b0_128_vs_timm>=2.0"] = at("b0@128")
    t["b0_224_vs_timm>=1.3"] = at("b0@224")
    t["b2_260_vs_timm>=1.3"] = at("b2@260")
    t["study_all_s<60"] = total_study if len(study) == 3 else None
    t["dp_overhead<=0.03"] = out.get("dp_overhead", {}).get("overhead")
    print("targets:", json.dumps(t))
json.dump(out, open(os.path.join(res, "gpu_run.json"), "w"), indent=2)
ok = ctest_rc == 0 and bool(tp["results"]) and (study or not dry) and dp is not None
ok = ok and all(r["rc"] == 0 for r in study)
sys.exit(0 if ok else 1)
PY

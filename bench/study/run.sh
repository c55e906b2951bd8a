#!/usr/bin/env bash
# The study on a CPU: effnet-train against a plain timm eager loop (fp32, and bf16 autocast +
# channels_last) and against the study's own Keras on TensorFlow CPU, each training the same
# epochs of the same HDF5 store with the same threads, in alternating rounds; prints seconds per
# epoch (first and steady state), train img/s and the ratios, our epoch profile against steps x
# bench_model_step's step, and writes JSON. Run it on a quiet machine (nothing else of yours).
#   bench/study/run.sh [--variant b0] [--epochs 2] [--rounds 2] [--threads N] [--store S]
#                      [--peers "ours timm-fp32 timm-bf16 keras ranks"] [--out results.json]
# (ranks: effnet-run with N ranks x 1 thread against effnet-train's 1 rank x N threads)
# The store: a study store at the variant's size (default: prepared from ../shared/data/flipkart
# into runs/bench-study/ as launch/effnet-study prepares it). The Keras peer installs
# tensorflow-cpu into its own venv, bench/study/.venv-tf (not part of scripts/setup.sh).
# Environment: BUILD_DIR (build), PYTHON (the project venv: torch + timm).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${BUILD_DIR:-$ROOT/build}/bin
PY=${PYTHON:-$ROOT/.venv/bin/python}
VARIANT=b0 EPOCHS=2 ROUNDS=2 THREADS=$(nproc) STORE="" OUTFILE=$ROOT/bench/results/study.json
PEERS="ours timm-fp32 timm-bf16 keras"
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --out) OUTFILE=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
declare -A SIZE=([b0]=224 [b1]=240 [b2]=260 [b3]=300)
S=${SIZE[$VARIANT]}
if [ -z "$STORE" ]; then
  STORE=$ROOT/runs/bench-study/study$S.h5
  if [ ! -f "$STORE" ]; then
    mkdir -p "$(dirname "$STORE")"
    FK=$ROOT/../shared/data/flipkart
    "$BIN/effnet-prepare" --csv "$FK/flipkart_com-ecommerce_sample_1050.csv" --images "$FK/images" \
      --out "$STORE" --size "$S" --test-fraction 0.15 --val-fraction 0.2 --augment-offline \
      >"$STORE.log" 2>&1 || { tail "$STORE.log"; exit 1; }
  fi
fi
TFPY=$ROOT/bench/study/.venv-tf/bin/python
if [[ " $PEERS " == *" keras "* ]] && [ ! -x "$TFPY" ]; then
  python3 -m venv "$ROOT/bench/study/.venv-tf"
  "$TFPY" -m pip install -q "tensorflow-cpu==2.21.*" h5py numpy
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/effnet-study-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LINES=$WORK/lines.jsonl

epochs_of() {  # metrics.jsonl -> one JSON line per epoch (impl $2), with its profile
  "$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") != "epoch":
        continue
    p = r["profile_s"]
    val = p.get("validation", 0.0)
    print(json.dumps({"impl": sys.argv[2], "epoch": r["epoch"], "epoch_s": r["epoch_time_s"],
                      "train_s": r["epoch_time_s"] - val, "val_s": val, "steps": r["step"],
                      "train_img_per_s": r["img_per_s_global"], "threads": int(sys.argv[3]),
                      "profile_s": p}))
PY
}

ours() {  # one effnet-train run of $EPOCHS epochs, $THREADS intra-op threads
  local out=$WORK/ours-$1
  "$BIN/effnet-train" --preset "study-$VARIANT" --data "$STORE" --out "$out" \
    --set job.epochs="$EPOCHS" --set job.early_stopping.patience=0 --set runtime.threads="$THREADS" \
    --set output.progress=false --set output.tensorboard=false >"$out.log" 2>&1 \
    || { tail "$out.log" >&2; return 1; }
  epochs_of "$out/metrics.jsonl" effnet-train "$THREADS"
}

ours_ranks() {  # the same under effnet-run: $THREADS ranks x 1 thread (the CPU data-parallel path)
  local out=$WORK/ranks-$1 cfg=$WORK/ranks.yaml
  "$PY" - "$ROOT/worker/train/presets/study-$VARIANT.yaml" "$cfg" "$EPOCHS" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["job"]["epochs"] = int(sys.argv[3])
c["job"]["early_stopping"]["patience"] = 0
c.setdefault("runtime", {})["threads"] = 1
c.setdefault("output", {}).update(progress=False, tensorboard=False)
yaml.safe_dump(c, open(sys.argv[2], "w"))
PY
  "$BIN/effnet-run" --np "$THREADS" --config "$cfg" --data "$STORE" --out "$out" >"$out.log" 2>&1 \
    || { tail "$out.log" >&2; return 1; }
  epochs_of "$out/metrics.jsonl" "effnet-run ${THREADS}x1" 1
}

for round in $(seq "$ROUNDS"); do
  for peer in $PEERS; do
    echo "[study bench] round $round: $peer" >&2
    case $peer in
      ours) ours "$round" ;;
      ranks) ours_ranks "$round" ;;
      timm-fp32) "$PY" bench/study/peers.py timm --store "$STORE" --variant "$VARIANT" \
                   --epochs "$EPOCHS" --threads "$THREADS" ;;
      timm-bf16) "$PY" bench/study/peers.py timm --store "$STORE" --variant "$VARIANT" \
                   --epochs "$EPOCHS" --threads "$THREADS" --bf16-cl ;;
      keras) "$TFPY" bench/study/peers.py keras --store "$STORE" --variant "$VARIANT" \
               --epochs "$EPOCHS" --threads "$THREADS" 2>/dev/null ;;
    esac | sed "s/^{/{\"round\": $round, /" >>"$LINES"
  done
done
# Our model step alone (the trainer's settings here: bf16 + channels_last where auto turns them
# on), for the epoch-vs-steps check.
STEP_FLAGS=()
if grep -q "bf16 autocast on, channels_last on" "$WORK/ours-1.log" 2>/dev/null; then
  STEP_FLAGS=(--bf16 --channels-last)
fi
"$BIN/bench_model_step" --variant "$VARIANT" --classes 7 --image "$S" --batch 16 \
  --threads "$THREADS" --warmup 2 --iters 5 --optimizer "${STEP_FLAGS[@]}" --json \
  | sed 's/^{/{"kind": "model_step", /' >>"$LINES"
"$PY" bench/study/compare.py "$LINES" "$OUTFILE" "$VARIANT" "$STORE" "$(uptime)"

#!/usr/bin/env bash
# The first command after set-up: generated photos -> HDF5 -> a 2-rank CPU run of the `tiny`
# preset under effnet-run (coordinator + mpirun) -> the results table.
#
#   scripts/demo.sh [OUT_DIR]            (default runs/demo; each call makes a new run-<time> in it)
#
# Environment: EFFNET_BUILD_DIR (default build), EFFNET_DEMO_NP (ranks, default 2),
# EFFNET_DEMO_PER_CLASS (generated images per class, default 400).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${EFFNET_BUILD_DIR:-$ROOT/build}
BIN=$BUILD/bin
OUT=${1:-$ROOT/runs/demo}
NP=${EFFNET_DEMO_NP:-2}
PER_CLASS=${EFFNET_DEMO_PER_CLASS:-400}

for tool in effnet-synth effnet-prepare effnet-coordinator effnet-worker effnet-run; do
  if [[ ! -x $BIN/$tool ]]; then
    echo "demo.sh: $BIN/$tool is missing; build first (scripts/setup.sh, or" \
         "cmake --build $BUILD --target $tool)" >&2
    exit 1
  fi
done

mkdir -p "$OUT"
DATA=$OUT/data.h5
if [[ ! -f $DATA ]]; then
  echo "== generating $PER_CLASS images per class (7 classes) into $OUT/synth"
  "$BIN/effnet-synth" --out "$OUT/synth" --per-class "$PER_CLASS" --size 64 --seed 1
  echo "== preparing $DATA (written atomically)"
  "$BIN/effnet-prepare" --csv "$OUT/synth/synth.csv" --images "$OUT/synth/images" \
    --out "$DATA" --size 64
fi

RUN=$OUT/run-$(date +%Y%m%d-%H%M%S)
echo "== training: $NP CPU ranks, preset tiny, run directory $RUN"
# Every rank is one process; keep their intra-op threads from fighting over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$BIN/effnet-run" --np "$NP" --oversubscribe \
  --config "$ROOT/worker/train/presets/tiny.yaml" --data "$DATA" --out "$RUN"

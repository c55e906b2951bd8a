#!/usr/bin/env bash
# Storage benchmark: img/s of (a) effnet-prepare on the real data (skipped with a message when
# ../shared/data/flipkart is absent) and (b) the reader's random batches of 256 at 224 px from the
# page cache, next to a plain mmap + memcpy of the same bytes (target ratio >= 0.5).
#   bench/storage/run.sh [BUILD_DIR] [OUT_JSON]      (defaults: build, bench/results/storage.json)
# Needs the targets bench_storage and effnet-prepare built in BUILD_DIR.
# Scaling series instead (effnet-synth, effnet-prepare, effnet-inspect on N generated 32 px JPEGs:
# seconds and peak memory per stage; also needs effnet-synth and effnet-inspect):
#   bench/storage/run.sh --scaling [N1,N2,...] [BUILD_DIR] [OUT_JSON]
#     (defaults: 5000,20000,80000, build, bench/results/storage_scaling.json)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "${1:-}" = "--scaling" ]; then
  sizes="${2:-5000,20000,80000}"
  build="${3:-$root/build}"
  out="${4:-$root/bench/results/storage_scaling.json}"
  for t in bench_storage effnet-synth effnet-prepare effnet-inspect; do
    if [ ! -x "$build/bin/$t" ]; then
      echo "run.sh: $build/bin/$t missing; build it: cmake --build $build --target $t" >&2
      exit 1
    fi
  done
  mkdir -p "$(dirname "$out")"
  exec "$build/bin/bench_storage" --scaling "$sizes" --bin-dir "$build/bin" --out "$out" \
    --tmp "${TMPDIR:-/tmp}"
fi
build="${1:-$root/build}"
out="${2:-$root/bench/results/storage.json}"
data="${EFFNET_FLIPKART_DIR:-$root/../shared/data/flipkart}"
[ -d "$data" ] || data="/work/shared/data/flipkart"
for t in bench_storage effnet-prepare; do
  if [ ! -x "$build/bin/$t" ]; then
    echo "run.sh: $build/bin/$t missing; build it: cmake --build $build --target $t" >&2
    exit 1
  fi
done
if [ ! -f "$data/flipkart_com-ecommerce_sample_1050.csv" ]; then
  echo "run.sh: real data not found at $data: part (a) skipped"
  data=""
fi
mkdir -p "$(dirname "$out")"
exec "$build/bin/bench_storage" --out "$out" --prepare-bin "$build/bin/effnet-prepare" \
  ${data:+--data "$data"} --tmp "${TMPDIR:-/tmp}"

#!/usr/bin/env bash
# effnet-probe against a real effnet-coordinator started with the flags the Deployment uses
# (k8s/base/coordinator.yaml): Ready with the job's token, refused at once with a wrong or no token.
# Usage: probe_live.sh BIN_DIR
set -euo pipefail
bin="$(cd "$1" && pwd)"
work="$(mktemp -d)"
coord_pid=""
cleanup() {
  if [ -n "$coord_pid" ]; then kill "$coord_pid" 2>/dev/null || true; wait "$coord_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$bin/effnet-synth" --out synth --per-class 6 --size 32 --seed 3 >synth.log 2>&1
"$bin/effnet-prepare" --csv synth/synth.csv --images synth/images --out dataset.h5 >prepare.log 2>&1
printf 'job:\n  epochs: 2\n' >config.yaml
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >token
echo "not-the-job-token-at-all" >bad-token
port=$((20000 + RANDOM % 20000))
"$bin/effnet-coordinator" --data=dataset.h5 --config=config.yaml --world-size=2 --port="$port" \
  --state-dir=state --token-file=token --heartbeat-timeout=60 --stay >coordinator.log 2>&1 &
coord_pid=$!
probe=("$bin/effnet-probe" --address="127.0.0.1:$port" --method=/effnet.v1.Coordinator/GetJobState)
if ! "${probe[@]}" --token-file=token --timeout=2 --wait=30; then
  cat coordinator.log; echo "FAIL: probe with the job token"; exit 1
fi
start=$(date +%s)
if "${probe[@]}" --token-file=bad-token --wait=20 2>bad.log; then
  echo "FAIL: wrong token accepted"; exit 1
fi
grep -q "wrong token" bad.log || { cat bad.log; echo "FAIL: refusal reason not shown"; exit 1; }
[ $(($(date +%s) - start)) -lt 10 ] || { echo "FAIL: wrong token was retried"; exit 1; }
if "${probe[@]}" 2>none.log; then echo "FAIL: call without a token accepted"; exit 1; fi
echo "OK: probe ready with the token, refused without it ($(head -c 200 bad.log))"

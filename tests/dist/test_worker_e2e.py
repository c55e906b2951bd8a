#!/usr/bin/env python3
"""(5) `mpirun -np 2 effnet-worker` (no coordinator: every rank plans its own shard) with the tiny
preset on generated photos (effnet-synth + effnet-prepare) reaches >= 90 % test accuracy, and the
run summary says it trained with 2 ranks. Needs EFFNET_BIN_DIR, EFFNET_SOURCE_DIR, EFFNET_MPIEXEC.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from synthetic_store import make_synthetic_store  # noqa: E402

BIN = os.environ["EFFNET_BIN_DIR"]
SRC = os.environ["EFFNET_SOURCE_DIR"]
MPIEXEC = os.environ.get("EFFNET_MPIEXEC", "mpirun")
MIN_ACCURACY = 0.90


def main():
    tmp = tempfile.mkdtemp(prefix="effnet-dist-e2e-")
    try:
        data = make_synthetic_store(BIN, tmp, per_class=400, size=64, seed=1)
        out = os.path.join(tmp, "run")
        cmd = [MPIEXEC, "--oversubscribe", "-np", "2", "-x", "OMP_NUM_THREADS=1",
               os.path.join(BIN, "effnet-worker"), "--config",
               os.path.join(SRC, "worker", "train", "presets", "tiny.yaml"), "--data", data,
               "--out", out, "--collective-timeout", "60"]
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)
        took = time.time() - t0
        if proc.returncode != 0:
            print(proc.stdout[-5000:])
            print(f"FAIL: mpirun exited {proc.returncode}")
            return 1
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        print(proc.stdout[-1500:])
        print(f"2-rank effnet-worker: test accuracy {summary['test_accuracy']:.4f} "
              f"(world {summary['world_size']}, {took:.0f} s)")
        if summary["world_size"] != 2:
            print("FAIL: summary.json does not report 2 ranks")
            return 1
        if summary["test_accuracy"] < MIN_ACCURACY:
            print(f"FAIL: accuracy below {MIN_ACCURACY}")
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

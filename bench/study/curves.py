#!/usr/bin/env python3
"""How smooth is the validation loss? effnet-train's study preset against the study's own Keras on
the same store, over several seeds (weights and batch order), no early stopping; prints per-seed
curves and a table of smoothness measures, and writes JSON.

  bench/study/curves.py [--store runs/bench-study/plain224.h5] [--epochs 10] [--seeds 1 2 3]
                        [--arms ours ours-fp32 keras] [--jobs 2] [--out bench/results/curves.json]

Arms: ours (effnet-train --preset study-b0, the default runtime: bf16 + channels_last where the
CPU has bf16), ours-fp32 (runtime.bf16=off, channels_last=off), ours-torch-eps (Adam's epsilon
added as torch adds it, not as Keras does: Note [Keras epsilon] in worker/train/optim.h),
ours-reference-init (convolutions drawn as timm does, not as Keras does: Note [conv init] in
worker/model/architecture.h), keras (bench/study/peers.py keras:
EfficientNetV2B0 + GlobalAveragePooling + Dropout + Dense, Adam 1e-3, fp32). Runs are independent,
so --jobs of them run at once with 1 thread each: this measures curves, not speed.

Measures per run (validation loss v_1..v_N, epochs from 1):
  rises      epochs e >= 3 with v_e > v_(e-1) (epoch 2's drop from the untrained epoch 1 is free)
  worst_jump max over e >= 3 of v_e / v_(e-1)
  excess     sum over e >= 3 of |ln v_e - ln v_(e-1)| - |ln v_N - ln v_2|: 0 for a monotone curve
  stop, best the epoch at which EarlyStopping(val_loss, patience 2) stops, and the best epoch and
             val loss it keeps (the study's callbacks)
Environment: BUILD_DIR (build), TFPY (bench/study/.venv-tf/bin/python)."""
import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ours(store, epochs, seed, arm, work):
    out = os.path.join(work, f"{arm}-{seed}")
    cmd = [os.path.join(os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")), "bin",
                        "effnet-train"),
           "--preset", "study-b0", "--data", store, "--out", out,
           "--set", f"job.epochs={epochs}", "--set", f"job.seed={seed}",
           "--set", "job.early_stopping.patience=0", "--set", "runtime.threads=1",
           "--set", "output.progress=false", "--set", "output.tensorboard=false"]
    for setting in OURS[arm]:
        cmd += ["--set", setting]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [{"loss": r["train_loss"], "val_loss": r["val_loss"],
             "val_accuracy": r["val_accuracy"]} for r in rows if r.get("kind") == "epoch"]


def keras(store, epochs, seed, _work):
    py = os.environ.get("TFPY", os.path.join(ROOT, "bench", "study", ".venv-tf", "bin", "python"))
    out = subprocess.run([py, os.path.join(ROOT, "bench", "study", "peers.py"), "keras",
                          "--store", store, "--epochs", str(epochs), "--threads", "1",
                          "--seed", str(seed)], check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [{k: r[k] for k in ("loss", "val_loss", "val_accuracy")} for r in rows]


OURS = {"ours": [], "ours-fp32": ["runtime.bf16=off", "runtime.channels_last=off"],
        "ours-torch-eps": ["optimizer.eps_form=torch"],
        "ours-reference-init": ["model.conv_init=reference"]}
ARMS = {**{arm: (lambda s, e, seed, w, arm=arm: ours(s, e, seed, arm, w)) for arm in OURS},
        "keras": keras}


def measures(curve, patience=2):
    v = [c["val_loss"] for c in curve]
    tail = range(2, len(v))  # 0-based: epochs 3..N
    rises = sum(1 for e in tail if v[e] > v[e - 1])
    worst = max((v[e] / v[e - 1] for e in tail), default=1.0)
    excess = (sum(abs(math.log(v[e]) - math.log(v[e - 1])) for e in tail)
              - abs(math.log(v[-1]) - math.log(v[1]))) if len(v) > 2 else 0.0
    best, wait, stop = 0, 0, len(v)
    for e in range(1, len(v)):
        if v[e] < v[best]:
            best, wait = e, 0
        else:
            wait += 1
            if wait >= patience:
                stop = e + 1
                break
    return {"rises": rises, "worst_jump": round(worst, 3), "excess": round(excess, 3),
            "stop": stop, "best": best + 1, "best_val_loss": round(v[best], 4),
            "final_val_loss": round(v[-1], 4), "final_val_accuracy": round(
                curve[-1]["val_accuracy"], 4), "epoch1_loss": round(curve[0]["loss"], 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=os.path.join(ROOT, "runs", "bench-study", "plain224.h5"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "curves.json"))
    a = ap.parse_args()
    if not os.path.isfile(a.store):
        sys.exit(f"{a.store}: no such store (prepare the held-out Flipkart split with "
                 "effnet-prepare --size 224, or pass --store)")
    work = tempfile.mkdtemp(prefix="effnet-curves-")
    runs = {}
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        futures = {pool.submit(ARMS[arm], a.store, a.epochs, seed, work): (arm, seed)
                   for seed in a.seeds for arm in a.arms}
        for f in concurrent.futures.as_completed(futures):
            arm, seed = futures[f]
            curve = f.result()
            runs.setdefault(arm, {})[seed] = {"curve": curve, **measures(curve)}
            print(f"{arm:9s} seed {seed}: val loss "
                  + ", ".join(f"{c['val_loss']:.2f}" for c in curve), flush=True)
    keys = ["epoch1_loss", "rises", "worst_jump", "excess", "stop", "best_val_loss",
            "final_val_loss", "final_val_accuracy"]
    summary = {arm: {k: statistics.median(runs[arm][s][k] for s in runs[arm]) for k in keys}
               for arm in a.arms}
    print("\nmedian over seeds " + " ".join(str(s) for s in a.seeds))
    print("| arm | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for arm in a.arms:
        print(f"| {arm} | " + " | ".join(f"{summary[arm][k]:g}" for k in keys) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"store": a.store, "epochs": a.epochs, "seeds": a.seeds, "summary": summary,
                   "runs": {arm: {str(s): r for s, r in v.items()} for arm, v in runs.items()}},
                  f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

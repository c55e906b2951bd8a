#!/usr/bin/env python3
"""Table and JSON of bench/study/run.sh: per implementation, the first epoch and the steady-state
epochs (the second on) in seconds, min and median over rounds, train img/s, and the speed-up of
effnet-train (steady-state min over min); then our epoch profile against steps x the model step
(bench_model_step, same settings).
  compare.py LINES.jsonl OUT.json VARIANT STORE UPTIME"""
import json
import os
import statistics
import sys


def main():
    lines_path, out_path, variant, store, uptime = sys.argv[1:6]
    rows = [json.loads(l) for l in open(lines_path) if l.strip().startswith("{")]
    step = next((r for r in rows if r.get("kind") == "model_step"), None)
    epochs = [r for r in rows if "epoch_s" in r]
    impls = []
    for r in epochs:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    summary = {}
    for impl in impls:
        mine = [r for r in epochs if r["impl"] == impl]
        first = [r["epoch_s"] for r in mine if r["epoch"] == 0]
        steady = [r["epoch_s"] for r in mine if r["epoch"] > 0]
        steady_img = [r["train_img_per_s"] for r in mine if r["epoch"] > 0]
        summary[impl] = {
            "first_min_s": min(first) if first else None,
            "first_median_s": statistics.median(first) if first else None,
            "steady_min_s": min(steady) if steady else None,
            "steady_median_s": statistics.median(steady) if steady else None,
            "steady_train_img_per_s_max": max(steady_img) if steady_img else None,
            "epochs_measured": len(mine),
        }
    ours = summary.get("effnet-train", {}).get("steady_min_s")
    print(f"study-{variant} epochs on {os.path.basename(store)}, {uptime.strip()}")
    print(f"{'implementation':<16} {'1st min s':>9} {'1st med s':>9} {'steady min':>10} "
          f"{'steady med':>10} {'train img/s':>11} {'ours faster':>11}")
    for impl, s in summary.items():
        ratio = (s["steady_min_s"] / ours) if ours and s["steady_min_s"] else None
        s["ours_speedup_steady_min"] = round(ratio, 3) if ratio else None

        def f(v, w, d=1):
            return f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}"
        print(f"{impl:<16} {f(s['first_min_s'], 9)} {f(s['first_median_s'], 9)} "
              f"{f(s['steady_min_s'], 10)} {f(s['steady_median_s'], 10)} "
              f"{f(s['steady_train_img_per_s_max'], 11)} {f(ratio, 11, 2)}")
    out = {"variant": variant, "store": store, "uptime": uptime.strip(), "summary": summary,
           "epochs": epochs, "model_step": step}
    ours_rows = [r for r in epochs if r["impl"] == "effnet-train" and r["epoch"] > 0]
    if step and ours_rows:
        best = min(ours_rows, key=lambda r: r["epoch_s"])
        steps_per_epoch = best["steps"] // (best["epoch"] + 1)
        model_s = steps_per_epoch * step["min_ms"] / 1000
        train_s = best["train_s"]
        p = best["profile_s"]
        print(f"our steady epoch: train {train_s:.1f} s for {steps_per_epoch} steps; steps x model "
              f"step (bench_model_step min {step['min_ms']:.1f} ms) = {model_s:.1f} s: train part "
              f"{100 * (train_s / model_s - 1):+.1f} % over it")
        print("  profile (s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                           sorted(p.items(), key=lambda kv: -kv[1]) if v >= 0.01))
        out["epoch_vs_model_step"] = {"steps": steps_per_epoch, "model_step_min_ms": step["min_ms"],
                                      "steps_x_step_s": model_s, "train_s": train_s,
                                      "over": train_s / model_s - 1, "profile_s": p}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

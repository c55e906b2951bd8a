#!/usr/bin/env python3
"""Combine JSON lines of bench_model_step (impl effnet) and timm_step.py (impl timm) into a table
and a results file. Several lines per (impl, case) = repeated, alternating rounds.

Note [noisy shared CPUs]: on the 2-core development machines other builds steal whole cores, so
one round can be several times slower than the next. The ratio uses the fastest single step of
each side over all rounds (min_ms: the least disturbed estimate); best medians are shown too."""
import json
import os
import sys


def main():
    out_path, title = sys.argv[1], sys.argv[2]
    rows = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
    cases = {}
    for r in rows:
        key = (r["variant"], r["image"], r["batch"], r["device"], r["bf16"], r["channels_last"])
        impl = r["impl"] + ("+graph" if r.get("cuda_graph") else "")
        best = cases.setdefault(key, {}).get(impl)
        if best is None:
            cases[key][impl] = dict(r, rounds=1)
        else:
            best["rounds"] += 1
            best["median_ms"] = min(best["median_ms"], r["median_ms"])
            best["min_ms"] = min(best["min_ms"], r["min_ms"])
    results = []
    print(title)
    print(f"{'case':<30} {'ours':<13} {'ours min':>9} {'timm min':>9} {'ours med':>9} "
          f"{'timm med':>9} {'ours img/s':>10} {'timm img/s':>10} {'timm/ours':>9}")
    for key, d in cases.items():
        ours = [i for i in ("effnet", "effnet+graph") if i in d]
        if not ours or "timm" not in d:
            sys.exit(f"missing a twin for {key}: {list(d)}")
        t = d["timm"]
        for impl in ours:
            o = d[impl]
            ratio = t["min_ms"] / o["min_ms"]
            name = (f"{key[0]}@{key[1]} b{key[2]} {key[3]}" + (" bf16" if key[4] else "") +
                    (" CL" if key[5] else "") + f" thr{o['threads']}")
            label = "graph" if impl.endswith("+graph") else "eager"
            print(f"{name:<30} {label:<13} {o['min_ms']:>9.1f} {t['min_ms']:>9.1f} "
                  f"{o['median_ms']:>9.1f} {t['median_ms']:>9.1f} "
                  f"{o['batch'] * 1000 / o['min_ms']:>10.1f} "
                  f"{t['batch'] * 1000 / t['min_ms']:>10.1f} {ratio:>9.3f}")
            results.append({"case": name, "ours_step": label, "ours": o, "timm": t,
                            "speedup_vs_timm": round(ratio, 4)})
    print("ms per step; timm/ours = timm min / ours min (> 1: ours faster); "
          f"load average {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"title": title, "loadavg_1m": round(os.getloadavg()[0], 2),
                   "results": results}, f, indent=2)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main()

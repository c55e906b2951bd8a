#!/usr/bin/env python3
"""Python reads our checkpoint directories as worker/formats/README.md says it can: the SHA-256 of
every file matches meta.json (and meta.json's own meta_sha256 its content), safetensors loads
model.safetensors and ema.safetensors, timm's tf_efficientnetv2_<variant> (num_classes from
meta.json, reduced width/depth as channel/depth multipliers) accepts both with strict=True, and its
eval logits equal the C++ ones (write_checkpoint.cpp) within 1e-4 relative."""
import argparse
import hashlib
import json
import os
import sys

import timm
import torch
from safetensors.torch import load_file


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check(case_dir):
    ck = os.path.join(case_dir, "checkpoints", "epoch-0000")
    with open(os.path.join(ck, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    want_meta = meta.pop("meta_sha256")
    compact = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    got_meta = hashlib.sha256(compact.encode("utf-8")).hexdigest()
    assert got_meta == want_meta, f"{ck}/meta.json: meta_sha256 {want_meta}, content {got_meta}"
    assert meta["format_version"] == 2, meta["format_version"]
    files = sorted(meta["sha256"])
    assert files == ["ema.safetensors", "model.safetensors", "train_state.pt"], files
    for name, want in meta["sha256"].items():
        got = sha256(os.path.join(ck, name))
        assert got == want, f"{ck}/{name}: meta.json {want}, file {got}"
    m = meta["model"]
    kwargs = {}
    if m["extra_width"] != 1.0 or m["extra_depth"] != 1.0:
        kwargs = dict(channel_multiplier=m["extra_width"], depth_multiplier=m["extra_depth"])
    model = timm.create_model(f"tf_efficientnetv2_{m['variant']}", pretrained=False,
                              num_classes=m["num_classes"], **kwargs)
    model.eval()
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))
    for weights, key in (("model.safetensors", "logits"), ("ema.safetensors", "ema_logits")):
        sd = load_file(os.path.join(ck, weights))
        model.load_state_dict(sd, strict=True)
        nbt = sd["bn1.num_batches_tracked"]
        assert nbt.dtype == torch.int64 and nbt.dim() == 0, (nbt.dtype, nbt.shape)
        with torch.no_grad():
            logits = model(expected["x"])
        ref = expected[key]
        err = ((logits - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        assert err <= 1e-4, f"{case_dir} {weights}: relative error {err:.2e}"
        print(f"{os.path.basename(case_dir)} {weights}: {len(sd)} tensors, timm strict load ok, "
              f"logits rel err {err:.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="write_checkpoint's OUT_DIR")
    a = ap.parse_args()
    torch.set_num_threads(1)
    failures = 0
    for case in ("b0", "b0_reduced"):
        try:
            check(os.path.join(a.dir, case))
        except AssertionError as e:
            print(f"FAIL {case}: {e}")
            failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Python reads back what the C++ side exported: torch.load (weights_only) and
safetensors.torch.load_file must give exactly the timm state_dict the C++ side imported, and a timm
tf_efficientnetv2_b0 must accept it with strict=True."""
import argparse
import sys

import timm
import torch
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True, help="timm state_dict written by torch.save")
    ap.add_argument("--pt", required=True)
    ap.add_argument("--safetensors", required=True)
    a = ap.parse_args()
    ref = torch.load(a.ref, weights_only=True)
    failures = []
    for name, sd in (("torch.load", torch.load(a.pt, weights_only=True)),
                     ("safetensors", load_file(a.safetensors))):
        if list(sd.keys()) != list(ref.keys()) and sorted(sd.keys()) != sorted(ref.keys()):
            failures.append(f"{name}: keys differ: {sorted(set(sd) ^ set(ref))[:5]}")
            continue
        for k, t in ref.items():
            if sd[k].dtype != t.dtype or sd[k].shape != t.shape or not torch.equal(sd[k], t):
                failures.append(f"{name}: {k} differs ({sd[k].dtype} {tuple(sd[k].shape)} vs "
                                f"{t.dtype} {tuple(t.shape)})")
        model = timm.create_model("tf_efficientnetv2_b0", pretrained=False)
        model.load_state_dict(sd, strict=True)
        print(f"{name}: {len(sd)} tensors match the timm state_dict; strict load ok")
    if failures:
        print("\n".join(failures[:20]))
        sys.exit(1)


if __name__ == "__main__":
    main()

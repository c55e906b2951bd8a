#!/usr/bin/env python3
"""Reference outputs of timm tf_efficientnetv2_* for the C++ parity test (tests/model).

For each variant: build the timm model with a fixed seed (drop_rate=0, drop_path_rate=0), randomise
BN affine parameters and running statistics (so a wrong eps/momentum/stat mapping shows), save the
state_dict with torch.save(sd, f) (an OrderedDict, as users do), and save into <v>_ref.safetensors:
inputs at an even and an odd size (batch 2), logits in eval mode, logits in train mode (batch
statistics) and every BN's running_mean/running_var after that one train-mode forward.
b0 is also written as safetensors to test that import path.
"""
import argparse
import os

import torch
import timm
from safetensors.torch import save_file


def randomise_bn(model, gen):
    """Random BN affine, then running stats near the real batch statistics of random inputs
    (one momentum-1 pass) with noise, so eval logits stay well scaled in every variant."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            m.momentum = 1.0
        model.train()
        model(torch.randn(4, 3, 64, 64, generator=gen))
        for m in bns:
            c = m.num_features
            m.momentum = 0.1
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(c, generator=gen) * 0.1 * std)
            m.running_var.mul_(torch.rand(c, generator=gen) * 0.5 + 0.8)
            m.num_batches_tracked.fill_(7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="b0,b1,b2,b3,s")
    ap.add_argument("--even", type=int, default=64)
    ap.add_argument("--odd", type=int, default=65)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for v in args.variants.split(","):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        model = timm.create_model(f"tf_efficientnetv2_{v}", pretrained=False, drop_rate=0.0,
                                  drop_path_rate=0.0)
        randomise_bn(model, gen)
        sd = model.state_dict()
        torch.save(sd, os.path.join(args.out, f"{v}.pt"))
        if v == "b0":
            save_file({k: t.contiguous() for k, t in sd.items()},
                      os.path.join(args.out, f"{v}.safetensors"))
        pristine = {k: t.clone() for k, t in sd.items()}
        ref = {}
        for tag, size in (("even", args.even), ("odd", args.odd)):
            x = torch.randn(2, 3, size, size, generator=gen)
            ref[f"x_{tag}"] = x
            model.load_state_dict(pristine)
            model.eval()
            with torch.no_grad():
                ref[f"eval_{tag}"] = model(x)
                model.train()
                ref[f"train_{tag}"] = model(x)
            for name, t in model.state_dict().items():
                if name.endswith("running_mean") or name.endswith("running_var"):
                    ref[f"stats_{tag}.{name}"] = t.clone()
        save_file(ref, os.path.join(args.out, f"{v}_ref.safetensors"))
        print(f"{v}: {sum(p.numel() for p in model.parameters())} params, "
              f"|eval_even| max {ref['eval_even'].abs().max():.3g}, "
              f"|train_even| max {ref['train_even'].abs().max():.3g}")


if __name__ == "__main__":
    main()

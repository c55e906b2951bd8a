#!/usr/bin/env python3
"""Why did one epoch's validation loss jump? For each checkpoint: the validation loss and accuracy,
the images with the largest losses and their largest |logit|, the BatchNorm layers whose input on
the validation split differs most from their running statistics (worst channel: variance ratio and
mean shift in running standard deviations), and the validation loss again with the running
statistics recomputed over N train images with the checkpoint's weights (a cumulative average, as
"precise BN" does). Runs the checkpoint in timm (our keys are timm's), in fp32.

  bench/study/bn_stats.py --store runs/bench-study/plain224.h5 RUN/checkpoints/epoch-0003 ...
      [--variant b0] [--recompute 669] [--normalize imagenet]   (the project venv: torch + timm)"""
import argparse

import h5py
import numpy as np
import torch


def load(store, split):
    with h5py.File(store, "r") as h:
        idx = np.where(h["splits"][:] == split)[0]
        x = torch.from_numpy(h["images"][idx.tolist()]).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(h["labels"][:][idx].astype(np.int64))
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--store", required=True)
    ap.add_argument("--variant", default="b0")
    ap.add_argument("--recompute", type=int, default=669, help="train images (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import timm
    from safetensors.torch import load_file
    torch.set_num_threads(a.threads)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    xv, yv = load(a.store, 1)
    xt, _ = load(a.store, 0)
    xv, xt = (xv - mean) / std, (xt - mean) / std
    for ck in a.checkpoints:
        weights = load_file(ck + "/model.safetensors")
        model = timm.create_model(f"tf_efficientnetv2_{a.variant}",
                                  num_classes=weights["classifier.weight"].shape[0])
        model.load_state_dict(weights)
        bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        sums = {}

        def hook(mod, inp, _out, name):
            x = inp[0].detach().double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum((0, 2, 3))
            s[1] = s[1] + (x * x).sum((0, 2, 3))
            s[2] += x.shape[0] * x.shape[2] * x.shape[3]

        def validate():
            model.eval()
            with torch.inference_mode():
                lg = torch.cat([model(xv[i:i + 32]) for i in range(0, len(xv), 32)])
            return lg, torch.nn.functional.cross_entropy(lg, yv, reduction="none")

        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
                 for n, m in bns.items()]
        logits, losses = validate()
        for h in hooks:
            h.remove()
        top = losses.topk(min(6, len(losses)))
        acc = (logits.argmax(1) == yv).float().mean().item()
        print(f"{ck}: val loss {losses.mean():.3f}, accuracy {acc:.3f}; largest losses "
              f"{[round(v, 1) for v in top.values.tolist()]} (max |logit| "
              f"{[round(v, 1) for v in logits[top.indices].abs().max(1).values.tolist()]})")
        rows = []
        for n, m in bns.items():
            s0, s1, cnt = sums[n]
            mu, var = s0 / cnt, s1 / cnt - (s0 / cnt) ** 2
            rv = m.running_var.double() + m.eps
            rows.append(((var / rv).max().item(),
                         ((mu - m.running_mean.double()).abs() / rv.sqrt()).max().item(), n))
        for ratio, shift, n in sorted(rows, reverse=True)[:5]:
            print(f"  {n:24s} validation variance / running variance up to {ratio:9.1f}, "
                  f"mean shift up to {shift:6.2f} sd")
        if a.recompute > 0:
            for m in bns.values():
                m.reset_running_stats()
                m.momentum = None  # cumulative average
                m.train()
            order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                for i in range(0, min(a.recompute, len(xt)), 16):
                    model(xt[order[i:i + 16]])
            _, again = validate()
            print(f"  with BN statistics recomputed over {min(a.recompute, len(xt))} train "
                  f"images: val loss {again.mean():.3f}")


if __name__ == "__main__":
    main()

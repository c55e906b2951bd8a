#!/usr/bin/env python3
"""timm eager twin of bench_model_step: same variant, size, batch, threads, step definition
(zero grads, forward, cross-entropy, backward [, SGD momentum 0.9]), dropout = the variant's
reference rate and drop_path 0.2 like our defaults. Prints one JSON line."""
import argparse
import json
import time

import timm
import torch

DROPOUT = {"b0": 0.2, "b1": 0.2, "b2": 0.3, "b3": 0.3, "s": 0.2, "m": 0.3, "l": 0.4}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="b0")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--image", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--optimizer", action="store_true")
    ap.add_argument("--cudnn-benchmark", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = timm.create_model(f"tf_efficientnetv2_{a.variant}", num_classes=a.classes,
                              drop_rate=DROPOUT[a.variant], drop_path_rate=0.2).to(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 3, a.image, a.image, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(a.classes, (a.batch,), device=dev)
    cuda = dev.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if a.optimizer:
            opt.step()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    ms = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1000.0)
    total = sum(ms)
    ms.sort()
    print(json.dumps({"impl": "timm", "variant": a.variant, "image": a.image, "batch": a.batch,
                      "threads": torch.get_num_threads(), "device": a.device, "bf16": a.bf16,
                      "channels_last": a.channels_last, "optimizer": a.optimizer,
                      "median_ms": round(ms[len(ms) // 2], 3), "min_ms": round(ms[0], 3),
                      "img_per_s": round(a.batch * a.iters / (total / 1000.0), 2)}))


if __name__ == "__main__":
    main()

"""Reference for test_optim_ema.cpp: timm's RMSpropTF and a ModelEmaV2-style EMA with the TF
warmup decay min(decay, (1 + t) / (10 + t)), on seeded inputs. Writes raw float32/float64 files
into OUT_DIR; the C++ test reads the same inputs and compares its results.

usage: python rmsprop_ema_reference.py OUT_DIR
"""
import os
import sys

import numpy as np
import torch
from timm.optim import RMSpropTF

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rs = np.random.RandomState(0)
T = 12
w0 = rs.randn(4, 3).astype(np.float32)
b0 = rs.randn(5).astype(np.float32)
buf0 = rs.rand(5).astype(np.float32)
gw = rs.randn(T, 4, 3).astype(np.float32)
gb = rs.randn(T, 5).astype(np.float32)
bufs = rs.rand(T, 5).astype(np.float32)   # the BN-like buffer's value after each step
lrs = np.array([0.01 * 0.9 ** t for t in range(T)], dtype=np.float64)
decay = 0.999

w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
opt = RMSpropTF([{"params": [w], "weight_decay": 1e-2}, {"params": [b], "weight_decay": 0.0}],
                lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9, lr_in_momentum=True)
ema = [w.detach().clone(), b.detach().clone(), torch.from_numpy(buf0.copy())]
for t in range(T):
    for g in opt.param_groups:
        g["lr"] = float(lrs[t])
    w.grad = torch.from_numpy(gw[t].copy())
    b.grad = torch.from_numpy(gb[t].copy())
    opt.step()
    state = [w.detach(), b.detach(), torch.from_numpy(bufs[t].copy())]
    d = min(decay, (1.0 + t) / (10.0 + t))
    for e, m in zip(ema, state):
        e.copy_(e * d + (1.0 - d) * m)

for name, arr in [("w0", w0), ("b0", b0), ("buf0", buf0), ("gw", gw), ("gb", gb), ("bufs", bufs),
                  ("out_w", w.detach().numpy()), ("out_b", b.detach().numpy()),
                  ("ema_w", ema[0].numpy()), ("ema_b", ema[1].numpy()),
                  ("ema_buf", ema[2].numpy())]:
    np.ascontiguousarray(arr, dtype=np.float32).tofile(os.path.join(out, name + ".bin"))
lrs.tofile(os.path.join(out, "lrs.bin"))
print("ok", T)

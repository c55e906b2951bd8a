#!/usr/bin/env python3
"""What effnet-export writes loads as worker/formats/README.md says: timm.create_model with the
sidecar's name and kwargs accepts the weights with strict=True, and the model runs on an image of
the sidecar's size. Usage: check_export.py FILE [FILE...] (each with FILE.json beside it)."""
import json
import sys

import timm
import torch
from safetensors.torch import load_file


def check(path):
    with open(path + ".json", encoding="utf-8") as f:
        side = json.load(f)
    model = timm.create_model(side["timm_model"], pretrained=False, **side["timm_kwargs"])
    if path.endswith(".safetensors"):
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    model.eval()
    assert len(side["class_names"]) == side["num_classes"], side
    s = side["image_size"]
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, s, s))
    assert tuple(logits.shape) == (1, side["num_classes"]), logits.shape
    print(f"{path}: {side['timm_model']} {side['timm_kwargs']}: {len(sd)} tensors, strict load ok")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        check(p)

#!/usr/bin/env python3
"""Carries a prepared store to the GPU machine, which has no OpenCV C++ (so no effnet-prepare)
and takes at most 64 MiB per call: the study's store at 260 px is 750 MB of pixels.

  pack_store.py pack STORE DIR     (here)  -> DIR/skeleton.h5, DIR/originals/*.jpg, DIR/derived.json
  pack_store.py unpack DIR STORE   (there) -> STORE, the same datasets and attributes

Every dataset and attribute except the pixels is copied as it is (skeleton.h5), so nothing of the
layout (docs/hdf5-layout.md) is restated here beyond the name of the pixel dataset. Originals
(augmentation 0) travel as JPEG (quality 95: a few grey levels off, stated in the bench output);
an offline-augmented copy travels as the numpy transform of its original's pixels that reproduced
it exactly at pack time (checked), or as its own JPEG when none did. Needs h5py, numpy, Pillow."""
import io
import json
import os
import sys

import h5py
import numpy as np
from PIL import Image

PIXELS = "images"  # storage/layout.h
TRANSFORMS = {
    "fliplr": lambda z: z[:, ::-1],
    "flipud": lambda z: z[::-1],
    "rot90": lambda z: np.rot90(z, 1),
    "rot270": lambda z: np.rot90(z, 3),
}
QUALITY = 95


def pack(store, out):
    os.makedirs(os.path.join(out, "originals"), exist_ok=True)
    with h5py.File(store, "r") as h, h5py.File(os.path.join(out, "skeleton.h5"), "w") as sk:
        for name, value in h.attrs.items():
            sk.attrs[name] = value
        for name in h.keys():
            if name != PIXELS:
                h.copy(name, sk)
        px = h[PIXELS]
        aug = h["augmentation"][:]
        origin = h["origin"][:]
        first = {}  # origin id -> row of its original
        for i in np.where(aug == 0)[0]:
            first.setdefault(int(origin[i]), int(i))
        derived, jpegs = {}, 0
        for i in range(px.shape[0]):
            img = px[i]
            j = first.get(int(origin[i]))
            if aug[i] != 0 and j is not None:
                src = px[j]
                op = next((k for k, f in TRANSFORMS.items() if np.array_equal(f(src), img)), None)
                if op is not None:
                    derived[str(i)] = [j, op]
                    continue
            Image.fromarray(img).save(os.path.join(out, "originals", f"{i}.jpg"), "JPEG",
                                      quality=QUALITY)
            jpegs += 1
        meta = {"shape": list(px.shape), "chunks": list(px.chunks) if px.chunks else None,
                "quality": QUALITY, "derived": derived}
        with open(os.path.join(out, "derived.json"), "w") as f:
            json.dump(meta, f)
    print(f"packed {store}: {jpegs} JPEGs, {len(derived)} derived by a transform")


def unpack(src, store):
    with open(os.path.join(src, "derived.json")) as f:
        meta = json.load(f)
    tmp = store + ".tmp"
    with h5py.File(os.path.join(src, "skeleton.h5"), "r") as sk, h5py.File(tmp, "w") as h:
        for name in sk.keys():
            sk.copy(name, h)
        shape = tuple(meta["shape"])
        px = h.create_dataset(PIXELS, shape=shape, dtype="uint8",
                              chunks=tuple(meta["chunks"]) if meta["chunks"] else None)
        decoded = {}
        for i in range(shape[0]):
            d = meta["derived"].get(str(i))
            if d is None:
                img = np.asarray(Image.open(os.path.join(src, "originals", f"{i}.jpg")).convert("RGB"))
                decoded[i] = img
            else:
                j, op = d
                if j not in decoded:
                    decoded[j] = np.asarray(
                        Image.open(os.path.join(src, "originals", f"{j}.jpg")).convert("RGB"))
                img = TRANSFORMS[op](decoded[j])
            px[i] = img
        for name, value in sk.attrs.items():  # last: `complete` marks a finished store
            h.attrs[name] = value
    os.replace(tmp, store)
    print(f"unpacked {store}: {shape[0]} images of {shape[1]} px (JPEG quality {meta['quality']})")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])

#!/usr/bin/env python3
"""Keras fixtures for test_keras (worker/formats/keras.h): keras.applications EfficientNetV2B0/B1/B2
with random weights (weights=None, so nothing is downloaded) and a 7-class head, saved in every
format Keras 3 writes -- `.weights.h5`, `.keras` and the legacy `.h5` of model.save -- plus the
probabilities Keras computes for a few random images. Keras 3 runs on the torch backend here (no
TensorFlow needed).

Per case <name> in --out: <name>.weights.h5, <name>.keras, <name>.h5 and <name>.expected.safetensors
(x: float32 [N, S, S, 3] pixels 0..255, probs: float32 [N, 7]). Cases: b0, b1, b2 (include_top,
classes=7) and b0_study (the study's model: Sequential of EfficientNetV2B0(include_top=False),
GlobalAveragePooling2D, Dropout, Dense(7, softmax); it also writes b0_study_notop.weights.h5, the
backbone alone). BN statistics are calibrated on random batches and then perturbed, so a wrong
moving_mean/moving_variance mapping changes the outputs."""
import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import torch  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

CLASSES = 7
VARIANTS = {"b0": keras.applications.EfficientNetV2B0, "b1": keras.applications.EfficientNetV2B1,
            "b2": keras.applications.EfficientNetV2B2}


def bn_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from bn_layers(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            yield layer


def perturb(model, rng, size):
    calib = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
    for _ in range(3):
        model(calib, training=True)
    for layer in bn_layers(model):
        gamma, beta, mean, var = [np.asarray(w) for w in layer.get_weights()]
        c = gamma.shape
        layer.set_weights([
            gamma * rng.uniform(0.8, 1.2, c).astype(np.float32),
            beta + rng.normal(0, 0.05, c).astype(np.float32),
            mean + rng.normal(0, 0.05, c).astype(np.float32) * np.sqrt(var),
            var * rng.uniform(0.7, 1.4, c).astype(np.float32),
        ])


def save_case(model, out, name, rng, size, images):
    perturb(model, rng, size)
    x = rng.uniform(0, 255, (images, size, size, 3)).astype(np.float32)
    probs = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype=np.float32)
    base = os.path.join(out, name)
    model.save_weights(base + ".weights.h5")
    model.save(base + ".keras")
    model.save(base + ".h5")  # legacy HDF5 layout (Keras 3 still writes it, without TensorFlow)
    save_file({"x": x, "probs": probs}, base + ".expected.safetensors")
    print(f"{name}: probs max {probs.max():.3f} min {probs.min():.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=4)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)  # shared CI cores: oversubscribed threads were 3x slower
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (a.size, a.size, 3)
    t0 = time.time()
    for v, ctor in VARIANTS.items():
        model = ctor(weights=None, classes=CLASSES, input_shape=shape)
        save_case(model, a.out, v, rng, a.size, a.images)
    base = keras.applications.EfficientNetV2B0(weights=None, include_top=False, input_shape=shape)
    study = keras.Sequential([keras.Input(shape), base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dropout(0.2),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    save_case(study, a.out, "b0_study", rng, a.size, a.images)
    base.save_weights(os.path.join(a.out, "b0_study_notop.weights.h5"))
    print(f"keras {keras.__version__} ({keras.backend.backend()}): {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

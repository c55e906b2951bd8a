#!/usr/bin/env python3
"""Keras fixtures for test_keras (worker/formats/keras.h): keras.applications EfficientNetV2B0/B1/B2
with random weights (weights=None, so nothing is downloaded) and a 7-class head, saved in every
format Keras 3 writes, plus the probabilities Keras computes for a few random images. Keras 3 runs
on the torch backend here (no TensorFlow needed).

Cases: b0, b1, b2 (include_top, classes=7) and b0_study (the study's model: Sequential of
EfficientNetV2B0(include_top=False), GlobalAveragePooling2D, Dropout, Dense(7, softmax); it also
writes b0_study_notop.weights.h5, the backbone alone). BN statistics are calibrated on random
batches and then perturbed, so a wrong moving_mean/moving_variance mapping changes the outputs.

Per case <name> in --out:
- <name>.weights.h5 (save_weights), <name>.keras and <name>.h5 (Keras 3's legacy model.save);
- <name>.tf2.h5 and <name>.tf2_weights.h5: the layouts of tf.keras 2.x model.save("x.h5") and
  save_weights("x.h5") (TF 2.x keras/saving/legacy/hdf5_format.py: save_model_to_hdf5,
  save_weights_to_hdf5_group), which Keras 3 no longer writes and which would need TensorFlow:
  written here with h5py from the same weights. They differ from Keras 3's legacy .h5 in the
  weight names, "<layer>/<var>:0" (a nested model's group lists its inner layers' weights the same
  way) and DepthwiseConv2D's "depthwise_kernel", and model.save adds optimizer_weights;
- <name>.expected.safetensors: x float32 [N, S, S, 3] (pixels 0..255), probs float32 [N, 7].

Shapes only: shapes_<v>.weights.h5 (Keras 3 layout) and shapes_<v>.tf2.h5 for b3, s, m, l: every
weight of keras.applications' model with its name and shape but no data (HDF5 allocates
contiguous datasets lazily: small files that read as zeros), so that the importer's layer table
is checked against what Keras builds for the variants too large to run here."""
import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
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


KERAS3_CLASS = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
                "BatchNormalization": "batch_normalization", "Dense": "dense"}


def own_vars(layer):
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def tf2_weights(layer):
    """(name, variable) of a layer as tf.keras 2.x names them in an HDF5 file."""
    if isinstance(layer, keras.Model):
        return [w for sub in layer.layers for w in tf2_weights(sub)]
    out = []
    for v in own_vars(layer):
        var = v.name
        if isinstance(layer, keras.layers.DepthwiseConv2D) and var == "kernel":
            var = "depthwise_kernel"
        out.append((f"{layer.name}/{var}:0", v))
    return out


def write_tf2_h5(model, path, data=True, weights_only=False):
    """model.save("x.h5") of tf.keras 2.x; weights_only: its save_weights("x.h5") (the layer
    groups at the root, no config, no optimizer)."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        if not weights_only:
            f.attrs["model_config"] = model.to_json().encode("utf8")
        g = f if weights_only else f.create_group("model_weights")
        g.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        g.attrs["keras_version"] = b"2.15.0"
        g.attrs["backend"] = b"tensorflow"
        for layer in model.layers:
            lg = g.create_group(layer.name)
            weights = tf2_weights(layer)
            lg.attrs["weight_names"] = [n.encode("utf8") for n, _ in weights]
            for n, v in weights:
                if data:
                    lg.create_dataset(n, data=keras.ops.convert_to_numpy(v))
                else:
                    lg.create_dataset(n, shape=tuple(v.shape), dtype="f4")
        if weights_only:
            return
        # Adam slots as tf.keras writes them: must not be taken for layers.
        o = f.create_group("optimizer_weights")
        o.create_dataset("Adam/stem_conv/kernel/m:0", data=np.zeros((3, 3, 3, 1), np.float32))


def write_keras3_shapes(model, path):
    """Keras 3 saving_lib layout (layers/<class>[_<n>]/vars/<i>), datasets without data."""
    with h5py.File(path, "w") as f:
        used = {}
        for layer in model.layers:
            cls = KERAS3_CLASS.get(type(layer).__name__)
            if cls is None:
                continue
            n = used.get(cls, 0)
            used[cls] = n + 1
            g = f.create_group(f"layers/{cls}" + (f"_{n}" if n else "") + "/vars")
            for i, v in enumerate(own_vars(layer)):
                g.create_dataset(str(i), shape=tuple(v.shape), dtype="f4")


def save_case(model, out, name, rng, size, images):
    perturb(model, rng, size)
    x = rng.uniform(0, 255, (images, size, size, 3)).astype(np.float32)
    probs = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype=np.float32)
    base = os.path.join(out, name)
    model.save_weights(base + ".weights.h5")
    model.save(base + ".keras")
    model.save(base + ".h5")  # legacy HDF5 layout (Keras 3 still writes it, without TensorFlow)
    write_tf2_h5(model, base + ".tf2.h5")
    write_tf2_h5(model, base + ".tf2_weights.h5", weights_only=True)
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
    for v, ctor in {"b3": keras.applications.EfficientNetV2B3, "s": keras.applications.EfficientNetV2S,
                    "m": keras.applications.EfficientNetV2M,
                    "l": keras.applications.EfficientNetV2L}.items():
        model = ctor(weights=None, classes=CLASSES, input_shape=(32, 32, 3))
        write_keras3_shapes(model, os.path.join(a.out, f"shapes_{v}.weights.h5"))
        write_tf2_h5(model, os.path.join(a.out, f"shapes_{v}.tf2.h5"), data=False)
        del model
    print(f"keras {keras.__version__} ({keras.backend.backend()}): {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The peers of bench/study/run.sh: the same study epochs (train split, then validation) on the
same HDF5 store, written the way their users write them. Prints one JSON line per epoch.

  peers.py timm  --store S --variant b0 --epochs 2 --threads 2 [--bf16-cl]   (torch + timm venv)
  peers.py keras --store S --variant b0 --epochs 2 --threads 2                 (TensorFlow venv)
  (both take --seed N: weights and batch order; each line carries the epoch's train and
  validation loss and accuracy)

timm: tf_efficientnetv2_<v> (dropout as the study's head, drop_path 0.2), Adam(1e-3, eps 1e-7),
batch 16 shuffled, cross-entropy; validation in eval mode without gradients at batch 16.
keras: the study's model: keras.applications.EfficientNetV2B<k>(include_top=False, weights=None),
GlobalAveragePooling2D, Dropout(0.2), Dense(classes, softmax), Adam(1e-3), batch 16, fit with
validation_data; the epoch time is Keras's own (a callback), the first epoch includes tracing."""
import argparse
import json
import time

import h5py
import numpy as np

KERAS = {"b0": "EfficientNetV2B0", "b1": "EfficientNetV2B1", "b2": "EfficientNetV2B2",
         "b3": "EfficientNetV2B3"}


def load(store):
    with h5py.File(store, "r") as h:
        splits = h["splits"][:]
        labels = h["labels"][:]
        images = h["images"]
        tr, va = np.where(splits == 0)[0], np.where(splits == 1)[0]
        x_tr, x_va = images[tr.tolist()], images[va.tolist()]
        classes = len(h["class_names"])
    return x_tr, labels[tr].astype(np.int64), x_va, labels[va].astype(np.int64), classes


def emit(impl, epoch, train_s, val_s, n_train, threads, **metrics):
    """metrics: loss, accuracy, val_loss, val_accuracy of the epoch (bench/study/curves.py)."""
    print(json.dumps({"impl": impl, "epoch": epoch, "epoch_s": round(train_s + val_s, 3),
                      "train_s": round(train_s, 3), "val_s": round(val_s, 3),
                      "train_img_per_s": round(n_train / train_s, 2), "threads": threads,
                      **{k: round(float(v), 5) for k, v in metrics.items()}}),
          flush=True)


def run_timm(a):
    import timm
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x_tr, y_tr, x_va, y_va, classes = load(a.store)
    model = timm.create_model(f"tf_efficientnetv2_{a.variant}", num_classes=classes,
                              drop_rate=0.2, drop_path_rate=0.2)
    fmt = torch.channels_last if a.bf16_cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1) * 255

    def batch(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        return ((t - mean) / std).contiguous(memory_format=fmt)

    impl = "timm bf16+CL" if a.bf16_cl else "timm fp32"
    rng = np.random.default_rng(a.seed)
    for epoch in range(a.epochs):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(x_tr))
        train_loss = train_hits = 0.0
        for i in range(0, len(order), a.batch):
            idx = np.sort(order[i:i + a.batch])
            x, y = batch(x_tr[idx]), torch.from_numpy(y_tr[idx])
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16_cl):
                out = model(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            loss.backward()
            opt.step()
            train_loss += loss.item() * len(idx)
            train_hits += (out.argmax(1) == y).sum().item()
        t1 = time.perf_counter()
        model.eval()
        val_loss = val_hits = 0.0
        with torch.no_grad():
            for i in range(0, len(x_va), a.batch):
                out = model(batch(x_va[i:i + a.batch])).float()
                y = torch.from_numpy(y_va[i:i + a.batch])
                val_loss += torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
                val_hits += (out.argmax(1) == y).sum().item()
        t2 = time.perf_counter()
        emit(impl, epoch, t1 - t0, t2 - t1, len(x_tr), a.threads,
             loss=train_loss / len(x_tr), accuracy=train_hits / len(x_tr),
             val_loss=val_loss / len(x_va), val_accuracy=val_hits / len(x_va))


def run_keras(a):
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    import keras
    keras.utils.set_random_seed(a.seed)
    x_tr, y_tr, x_va, y_va, classes = load(a.store)
    size = x_tr.shape[1]
    base = getattr(keras.applications, KERAS[a.variant])(include_top=False, weights=None,
                                                         input_shape=(size, size, 3))
    model = keras.Sequential([base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dropout(0.2),
                              keras.layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.t1 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t2 = time.perf_counter()
            emit("keras tf", epoch, self.t1 - self.t0, t2 - self.t1, len(x_tr), a.threads,
                 **{k: logs[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                    if k in (logs or {})})

    model.fit(x_tr.astype(np.float32), y_tr, batch_size=a.batch, epochs=a.epochs,
              validation_data=(x_va.astype(np.float32), y_va), callbacks=[Timer()], verbose=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peer", choices=["timm", "keras"])
    ap.add_argument("--store", required=True)
    ap.add_argument("--variant", default="b0")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--bf16-cl", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    (run_timm if a.peer == "timm" else run_keras)(a)


if __name__ == "__main__":
    main()

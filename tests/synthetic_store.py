"""Shared by the Python end-to-end tests: a generated data set prepared the way a user does it
(effnet-synth -> effnet-prepare), so every e2e test trains on the same kind of store."""
import os
import subprocess


def make_synthetic_store(bin_dir, work_dir, per_class, size, seed):
    """Writes work_dir/synth (photos + CSV) and returns the path of work_dir/data.h5."""
    synth = os.path.join(work_dir, "synth")
    subprocess.run([os.path.join(bin_dir, "effnet-synth"), "--out", synth, "--per-class",
                    str(per_class), "--size", str(size), "--seed", str(seed)],
                   check=True, capture_output=True)
    data = os.path.join(work_dir, "data.h5")
    subprocess.run([os.path.join(bin_dir, "effnet-prepare"), "--csv",
                    os.path.join(synth, "synth.csv"), "--images", os.path.join(synth, "images"),
                    "--out", data, "--size", str(size)], check=True, capture_output=True)
    return data

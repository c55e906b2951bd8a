#!/usr/bin/env python3
"""effnet-study end to end on generated photos, with a reduced model so it runs in a minute:

- the photos are prepared once as the study was (test 15 % of each class first, validation 20 %
  of the rest, train and validation x4 by offline flips and rotation, never test);
- B0 and B1 train with the study presets (one of them on 2 ranks through effnet-run), each row of
  the table saying from which weights it started ("from scratch");
- a second study starts B0 from the first study's weights file: the import path end to end, its
  row says "from model.safetensors";
- a rerun trains nothing and keeps the results; bad arguments are refused with exit status 2.

Needs EFFNET_BIN_DIR (effnet-study, effnet-synth, effnet-prepare, effnet-train, effnet-run,
effnet-results, effnet-worker, effnet-coordinator).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ.get("EFFNET_BIN_DIR", "")
# A reduced model at 32 px: the study presets' recipe, seconds per epoch.
REDUCED = ["--set", "model.extra_width=0.25", "--set", "model.extra_depth=0.25",
           "--set", "job.progressive.min_image_size=32", "--set", "job.progressive.max_image_size=32",
           "--set", "data.eval_image_size=32", "--set", "job.epochs=2", "--set", "runtime.threads=1",
           "--set", "output.tensorboard=false"]


def read(*path):
    with open(os.path.join(*path)) as f:
        return f.read()


def study(*args, timeout=600):
    return subprocess.run([os.path.join(BIN, "effnet-study"), *args], capture_output=True,
                          text=True, timeout=timeout)


class EffnetStudyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="effnet_study_")
        syn = os.path.join(cls.tmp, "syn")
        subprocess.run([os.path.join(BIN, "effnet-synth"), "--out", syn, "--per-class", "20",
                        "--size", "48", "--seed", "5"], check=True, capture_output=True)
        cls.csv = os.path.join(syn, "synth.csv")
        cls.images = os.path.join(syn, "images")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_study_splits_trains_labels_and_imports(self):
        out = os.path.join(self.tmp, "study")
        r = study("--csv", self.csv, "--images", self.images, "--out", out, "--variants", "b0",
                  "--", *REDUCED)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The study's split: 20 photos per class -> 3 test (15 %), then 3 val (20 % of 17), 14
        # train; train and val x4 offline.
        info = subprocess.run([os.path.join(BIN, "effnet-inspect"), "--json",
                               os.path.join(out, "data.h5")], capture_output=True, text=True)
        self.assertEqual(info.returncode, 0, info.stderr)
        counts = json.loads(info.stdout)["splits"]
        self.assertEqual(counts["test"], 7 * 3, counts)
        self.assertEqual(counts["val"], 7 * 3 * 4, counts)
        self.assertEqual(counts["train"], 7 * 14 * 4, counts)
        summary = json.loads(read(out, "b0", "summary.json"))
        self.assertEqual(summary["start"], "from scratch")
        self.assertEqual(summary["batch_size"], 16)
        table = read(out, "results.md")
        self.assertIn("EfficientNetV2-B0 (reduced) (effnet-dist, 1 rank cpu, from scratch)", table)
        self.assertIn("from scratch", r.stdout)  # the table is printed too
        timing = json.loads(read(out, "study_timing.json"))
        self.assertGreater(timing["variants"]["b0"]["wall_s"], 0)

        # A rerun trains nothing and leaves the run untouched.
        before = os.path.getmtime(os.path.join(out, "b0", "summary.json"))
        r = study("--csv", self.csv, "--images", self.images, "--out", out, "--variants", "b0",
                  "--", *REDUCED)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("not trained again", r.stderr)
        self.assertEqual(os.path.getmtime(os.path.join(out, "b0", "summary.json")), before)

        # The import path: B0 on 2 ranks (global batch 16 -> 8 per rank) from the first study's
        # weights, on the same store.
        weights = os.path.join(out, "b0", "checkpoints", "best", "model.safetensors")
        self.assertTrue(os.path.isfile(weights))
        out2 = os.path.join(self.tmp, "study2")
        r = study("--data", os.path.join(out, "data.h5"), "--out", out2, "--variants", "b0",
                  "--pretrained", "b0=" + weights, "--np", "2", "--", *REDUCED)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        summary = json.loads(read(out2, "b0", "summary.json"))
        self.assertEqual(summary["start"], "from model.safetensors")
        self.assertEqual(summary["world_size"], 2)
        self.assertEqual(summary["batch_size"], 16)
        self.assertIn("2 ranks cpu, from model.safetensors",
                      read(out2, "results.md"))

    def test_bad_arguments(self):
        for args, want in [
            (["--out", "x"], "give --csv and --images"),
            (["--data", "d.h5", "--out", "x", "--variants", "b7"], "--variants"),
            (["--data", "d.h5", "--out", "x", "--pretrained", "b0"], "VARIANT=FILE"),
            (["--data", "d.h5", "--out", "x", "--pretrained", "b0=/no/such.h5"], "no such file"),
        ]:
            r = study(*args, timeout=60)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(want, r.stderr, args)


if __name__ == "__main__":
    if not BIN:
        sys.exit("EFFNET_BIN_DIR is not set")
    unittest.main()

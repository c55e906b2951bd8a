#!/usr/bin/env python3
"""Elastic world size under effnet-run (Note [elastic world size] in coordinator/job.h).

Three ranks on this machine, listed as `localhost slots=3` in a hostfile; the scripted worker
(tests/launch/scripted_worker.cpp) traces each rank's shard per epoch. A rank "lost for good" is
one killed while its slot is taken out of the hostfile; it "comes back" when the slot is put back.
  - lost for good: the job finishes on 2 ranks;
  - lost, then back: the job continues on 2, then grows back to 3 at an epoch boundary;
  - a global batch that 2 or 3 does not divide is refused before anything starts.
Every decided epoch is checked: its ranks' sample counts add up to the train split, and the
shards its generation traced partition the split (every sample exactly once).

Needs EFFNET_BIN_DIR (effnet-run, effnet-coordinator, effnet-synth, effnet-prepare) and
EFFNET_SCRIPTED_WORKER.
"""

import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from test_effnet_run import (BIN, WORKER, ScriptedRunTestBase, generation,  # noqa: E402
                             phase)

EPOCHS = 8


class ElasticTest(ScriptedRunTestBase):
    # A global batch of 6 splits over 2 and over 3 ranks.
    JOB_YAML = (f"job:\n  epochs: {EPOCHS}\n  seed: 5\n  early_stopping: {{patience: 0}}\n"
                "data:\n  batch_size: 6\n")
    TMP_PREFIX = "effnet-elastic-test-"

    def set_slots(self, out, n):
        with open(os.path.join(out, "hostfile"), "w") as f:
            f.write(f"localhost slots={n}\n")

    def launch(self, out, config=None, epoch_seconds=0.5):
        os.makedirs(out, exist_ok=True)
        self.set_slots(out, 3)
        cmd = [sys.executable, os.path.join(BIN, "effnet-run"), "--np", "3", "--min-np", "2",
               "--rejoin-timeout", "1.5", "--hostfile", os.path.join(out, "hostfile"),
               "--oversubscribe", "--worker-bin", WORKER, "--config", config or self.config,
               "--data", self.data, "--out", out, "--heartbeat-timeout", "3",
               "--max-restarts", "2", "--", "--epoch-seconds", str(epoch_seconds)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def finish(self, proc, timeout=150):
        return super().finish(proc, timeout)

    def kill_rank2_for_good(self, out):
        """Mid-run with 3 ranks, after the checkpoint of epoch 1: slot 3 leaves the hostfile and
        rank 2 is killed."""
        s = self.wait_for(out, lambda s: s["job"]["last_checkpoint"]["epoch"] >= 1
                          and phase(s) == "PHASE_RUNNING" and len(s["workers"]) == 3,
                          timeout=90)
        victim = next(w for w in s["workers"] if w["rank"] == 2)
        self.set_slots(out, 2)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        return victim

    def traces(self, out):
        """{(generation, epoch): [indices of each rank's shard]} from the scripted worker."""
        shards = {}
        for name in os.listdir(out):
            if not name.startswith("trace-rank"):
                continue
            with open(os.path.join(out, name)) as f:
                for line in f:
                    w = line.split()
                    # generation G epoch E pid P samples N world W indices a,b,...
                    key = (int(w[1]), int(w[3]))
                    indices = [int(x) for x in w[11].split(",")] if len(w) > 11 else []
                    self.assertEqual(len(indices), int(w[7]), line)
                    shards.setdefault(key, []).append(indices)
        return shards

    def assert_every_sample_once_per_epoch(self, out, s):
        """Each epoch decided once; its ranks trained disjoint shards that cover the split."""
        self.assertEqual(phase(s), "PHASE_FINISHED")
        self.assertEqual([r["epoch"] for r in s["history"]], list(range(EPOCHS)))
        n = int(s["job"]["num_train_samples"])
        shards = self.traces(out)
        split = None
        for r in s["history"]:
            world = r["world_size"]
            self.assertEqual(sorted(k["rank"] for k in r["ranks"]), list(range(world)), r)
            self.assertEqual(sum(int(k["train_samples"]) for k in r["ranks"]), n, r)
            traced = shards[(int(r["generation"]), r["epoch"])]
            self.assertEqual(len(traced), world, r)
            seen = sorted(i for shard in traced for i in shard)
            self.assertEqual(len(seen), n, r)
            self.assertEqual(len(set(seen)), n, f"a sample twice in epoch {r['epoch']}")
            if split is None:
                split = seen
            self.assertEqual(seen, split, f"epoch {r['epoch']} saw another set of samples")

    def test_a_rank_lost_for_good_finishes_on_two(self):
        out = os.path.join(self.tmp, "lost")
        proc = self.launch(out)
        victim = self.kill_rank2_for_good(out)
        rc, text = self.finish(proc)
        self.assertEqual(rc, 0, text)
        s = self.state(out)
        self.assert_every_sample_once_per_epoch(out, s)
        sizes = [r["world_size"] for r in s["history"]]
        k = sizes.index(2)
        self.assertGreaterEqual(k, 2, sizes)
        self.assertEqual(sizes, [3] * k + [2] * (EPOCHS - k), sizes)
        self.assertEqual(s["job"]["launch_world_size"], 2)
        self.assertEqual(s["job"]["min_world_size"], 2)
        self.assertEqual(len(s["failures"]), 1, s["failures"])
        self.assertIn(f"pid {victim['pid']}", s["failures"][0])
        self.assertEqual(len(s["world_size_changes"]), 1, s["world_size_changes"])
        # Messages count epochs from 1 (Note [epoch numbering]): 0-based epoch k is epoch k + 1.
        self.assertIn(f"from epoch {k + 1}: 2 of 3 ranks (was 3; after: rank 2",
                      s["world_size_changes"][0])
        self.assertIn("waiting up to 2 s (--rejoin-timeout)", text)
        self.assertIn("continuing with 2 of 3 ranks", text)
        self.assertIn("with 3 -> 2 ranks", text)
        self.assertIn("world size changes:", text)

    def test_a_rank_that_comes_back_rejoins_at_an_epoch_boundary(self):
        out = os.path.join(self.tmp, "rejoin")
        # Longer epochs: the slot comes back while epochs remain to grow into.
        proc = self.launch(out, epoch_seconds=1.0)
        self.kill_rank2_for_good(out)
        # One epoch decided on 2 ranks, then the slot is back.
        self.wait_for(out, lambda s: any(r["world_size"] == 2 for r in s["history"])
                      and phase(s) == "PHASE_RUNNING", timeout=90)
        self.set_slots(out, 3)
        rc, text = self.finish(proc)
        self.assertEqual(rc, 0, text)
        s = self.state(out)
        self.assert_every_sample_once_per_epoch(out, s)
        sizes = [r["world_size"] for r in s["history"]]
        runs = [w for i, w in enumerate(sizes) if i == 0 or sizes[i - 1] != w]
        self.assertEqual(runs, [3, 2, 3], sizes)
        self.assertEqual(s["job"]["launch_world_size"], 3)
        self.assertEqual(len(s["world_size_changes"]), 2, s["world_size_changes"])
        self.assertIn("3 of 3 ranks (was 2; 1 slot(s) back in", s["world_size_changes"][1])
        self.assertEqual(len(s["failures"]), 1, "a resize is no failure: " + str(s["failures"]))
        self.assertGreaterEqual(generation(s), 2)
        self.assertIn("relaunching with 3 ranks", text)
        self.assertIn("with 3 -> 2 -> 3 ranks", text)
        self.assertIn("(1 worker restarts", text)

    def test_a_batch_some_allowed_size_does_not_divide_is_refused_up_front(self):
        out = os.path.join(self.tmp, "batch")
        config = os.path.join(self.tmp, "batch16.yaml")
        with open(config, "w") as f:
            f.write(f"job:\n  epochs: {EPOCHS}\n  seed: 5\ndata:\n  batch_size: 16\n")
        rc, text = self.finish(self.launch(out, config=config), timeout=60)
        self.assertEqual(rc, 1, text)
        self.assertIn("16 is not divisible by the world size 3", text)
        self.assertIn("--min-world-size 2 to 3, so data.batch_size must be divisible by each: a "
                      "multiple of 6, e.g. 12 or 18)", text)
        self.assertFalse(os.path.exists(os.path.join(out, "trace-rank0.log")), text)


if __name__ == "__main__":
    unittest.main(verbosity=2)

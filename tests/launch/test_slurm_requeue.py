#!/usr/bin/env python3
"""launch/slurm/effnet.sbatch without Slurm: its body runs under bash with faked SLURM_* variables,
a fake `scontrol` (hostnames, requeue) and a fake `hostname`, and runs effnet-run with the real
coordinator and effnet-worker on a generated store.

Attempt 0 gets SIGUSR1 (what `#SBATCH --signal=B:USR1@600` sends before the time limit) once epoch
0's checkpoint is committed: effnet-run stops at the next committed checkpoint and exits 75, and the
script requeues the job (`scontrol requeue ID`) and exits 0. The run is not finished. Attempt 1 (the
requeued job: same SLURM_JOB_ID, SLURM_RESTART_COUNT=1) resumes the same run folder from that
checkpoint and finishes: every epoch decided exactly once, the ones after the stop by a newer
launch generation.

Needs EFFNET_BIN_DIR (effnet-run, effnet-coordinator, effnet-worker, effnet-synth, effnet-prepare).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from synthetic_store import make_synthetic_store  # noqa: E402

BIN = os.environ.get("EFFNET_BIN_DIR", "")
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SBATCH = os.path.join(SOURCE, "launch", "slurm", "effnet.sbatch")
# Epochs must outlast effnet-run's poll and mpirun's teardown (about 1 s, during which epochs still
# commit), or the whole run ends before the stop on a fast machine: 96 px images, not 32.
EPOCHS = 10
SIZE = 96
JOB_ID = "4242"

CONFIG = f"""job:
  epochs: {EPOCHS}
  seed: 7
  progressive: {{num_stages: 1, min_image_size: {SIZE}, max_image_size: {SIZE}}}
  early_stopping: {{patience: 0}}
model: {{variant: b0, extra_width: 0.25, extra_depth: 0.25}}
data: {{batch_size: 8, eval_image_size: {SIZE}}}
runtime: {{threads: 1}}
"""

FAKE_SCONTROL = """#!/bin/sh
# scontrol show hostnames LIST | scontrol requeue ID (recorded)
case "$1" in
  show) echo localhost ;;
  requeue) echo "requeue $2" >>"$FAKE_SLURM_LOG" ;;
  *) echo "fake scontrol: $*" >&2; exit 1 ;;
esac
"""


def job_state(state_dir):
    out = subprocess.run([os.path.join(BIN, "effnet-coordinator"), "state", "--state-dir",
                          state_dir, "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def read(path):
    with open(path) as f:
        return f.read()


def committed(state):
    ckpt = (state or {}).get("job", {}).get("last_checkpoint") or {}
    return int(ckpt.get("epoch", -1))


class SlurmRequeue(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="effnet-slurm-")
        self.data = make_synthetic_store(BIN, self.dir, per_class=40, size=SIZE, seed=3)
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        fake = os.path.join(self.dir, "fakebin")
        os.makedirs(fake)
        for name, text in (("scontrol", FAKE_SCONTROL), ("hostname", "#!/bin/sh\necho 127.0.0.1\n")):
            with open(os.path.join(fake, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(fake, name), 0o755)
        self.slurm_log = os.path.join(self.dir, "slurm.log")
        self.env = dict(os.environ, PATH=fake + os.pathsep + os.environ["PATH"],
                        EFFNET_BIN=os.path.abspath(BIN), FAKE_SLURM_LOG=self.slurm_log,
                        SLURM_JOB_ID=JOB_ID, SLURM_JOB_NAME="effnet", SLURM_JOB_NODELIST="node1",
                        SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1")
        self.run_dir = os.path.join(self.dir, "runs", f"slurm-{JOB_ID}")
        self.state_dir = os.path.join(self.run_dir, "coordinator")

    def tearDown(self):
        if os.environ.get("EFFNET_KEEP_TEST_DIR"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def attempt(self, restart_count, log_name):
        env = dict(self.env, SLURM_RESTART_COUNT=str(restart_count))
        path = os.path.join(self.dir, log_name)
        with open(path, "w") as log:
            return subprocess.Popen(["bash", SBATCH, self.config, self.data], cwd=self.dir,
                                    env=env, stdout=log, stderr=subprocess.STDOUT), path

    def test_usr1_stops_at_a_checkpoint_and_the_requeued_job_resumes_the_same_run(self):
        proc, log0 = self.attempt(0, "attempt0.log")
        deadline = time.time() + 240
        while committed(job_state(self.state_dir)) < 0:
            self.assertIsNone(proc.poll(), "attempt 0 ended early:\n" + read(log0))
            self.assertLess(time.time(), deadline, "no checkpoint committed in 240 s:\n"
                            + read(log0))
            time.sleep(0.2)
        at_signal = committed(job_state(self.state_dir))
        proc.send_signal(signal.SIGUSR1)  # --signal=B:USR1: the batch shell only
        rc = proc.wait(timeout=240)
        text0 = read(log0)
        print(f"attempt 0: SIGUSR1 with epoch {at_signal} committed; exit {rc}")
        self.assertEqual(rc, 0, text0)
        self.assertIn("SIGUSR1: stopping at the next committed checkpoint", text0)
        self.assertIn("stopped at a checkpoint: the last committed one is epoch", text0)
        self.assertEqual(read(self.slurm_log), f"requeue {JOB_ID}\n")
        s0 = job_state(self.state_dir)
        stopped_at = committed(s0)
        m = re.search(r"stopping at the next committed checkpoint \(last committed: epoch (-?\d+)",
                      text0)
        # The launch is stopped once a newer commit is recorded; epochs that end while mpirun
        # tears the ranks down commit too (a tiny run's epochs take a fraction of a second).
        # Messages count epochs from 1, the state from 0 (Note [epoch numbering]).
        self.assertGreater(stopped_at, int(m.group(1)) - 1, "stopped without a newer commit")
        self.assertIn(f"the last committed one is epoch {stopped_at + 1};", text0)
        self.assertGreater(stopped_at, at_signal, text0)
        self.assertLess(stopped_at, EPOCHS - 1, "the run finished before the stop; too fast?")
        self.assertNotEqual(s0["job"]["phase"], "PHASE_FINISHED")
        self.assertFalse(os.path.exists(os.path.join(self.run_dir, "summary.json")))

        proc, log1 = self.attempt(1, "attempt1.log")
        rc = proc.wait(timeout=400)
        text1 = read(log1)
        print(f"attempt 1: exit {rc}")
        self.assertEqual(rc, 0, text1)
        self.assertIn(f"attempt 1, run folder runs/slurm-{JOB_ID}", text1)
        self.assertIn("resuming the job", text1)
        self.assertTrue(os.path.exists(os.path.join(self.run_dir, "summary.json")), text1)
        s1 = job_state(self.state_dir)
        self.assertEqual(s1["job"]["phase"], "PHASE_FINISHED")
        epochs = [(int(r["epoch"]), int(r["generation"])) for r in s1["history"]]
        self.assertEqual(sorted(e for e, _ in epochs), list(range(EPOCHS)), epochs)
        first_gen = min(g for _, g in epochs)
        for e, g in epochs:
            self.assertEqual(g > first_gen, e > stopped_at, f"epoch {e} generation {g}: {epochs}")
        print(f"stopped after epoch {stopped_at}; resumed; history {epochs}")


if __name__ == "__main__":
    if not BIN:
        sys.exit("EFFNET_BIN_DIR is not set")
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""End-to-end tests of effnet-run + effnet-coordinator + mpirun with the scripted worker.

The scripted worker (tests/launch/scripted_worker.cpp) uses the real coordinator client but
sleeps instead of training, so these tests check the control plane in seconds: a whole run, a
kill -9 of one worker mid-epoch (named, relaunched, resumed, no epoch counted twice), a
coordinator killed mid-run (restarted, resumed), and Ctrl-C (everything stops).

The tests read the job's state the way effnet-run does, through `effnet-coordinator state`.

Needs EFFNET_BIN_DIR (effnet-run, effnet-coordinator, effnet-synth, effnet-prepare) and
EFFNET_SCRIPTED_WORKER.
"""

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
from job_state import JobStateMixin, job_state, state_tool  # noqa: E402
from synthetic_store import make_synthetic_store  # noqa: E402

BIN = os.environ.get("EFFNET_BIN_DIR", "")
WORKER = os.environ.get("EFFNET_SCRIPTED_WORKER", "")
EPOCHS = 6
FORMAT1_STATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "coordinator",
                             "testdata", "state-format1.json")


def phase(s):
    return s["job"]["phase"]


def generation(s):
    return int(s["job"]["generation"])  # int64: a string in protobuf's JSON mapping


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


class ScriptedRunTestBase(JobStateMixin, unittest.TestCase):
    """A small store and the class's job config (JOB_YAML) in a temporary folder shared by its
    tests, and waiting for effnet-run to end. Holds no tests itself."""
    JOB_YAML = ""
    TMP_PREFIX = "effnet-run-test-"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=cls.TMP_PREFIX)
        cls.data = make_synthetic_store(BIN, cls.tmp, per_class=6, size=32, seed=3)
        cls.config = os.path.join(cls.tmp, "job.yaml")
        with open(cls.config, "w") as f:
            f.write(cls.JOB_YAML)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def finish(self, proc, timeout=120):
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
            self.fail("effnet-run did not finish:\n" + text)
        return proc.returncode, text


class EffnetRunTest(ScriptedRunTestBase):
    JOB_YAML = f"job:\n  epochs: {EPOCHS}\n  seed: 5\n  early_stopping: {{patience: 0}}\n"

    def launch(self, out, epoch_seconds, extra=()):
        cmd = [sys.executable, os.path.join(BIN, "effnet-run"), "--np", "2", "--oversubscribe",
               "--worker-bin", WORKER, "--config", self.config, "--data", self.data,
               "--out", out, "--heartbeat-timeout", "3", "--max-restarts", "2", *extra,
               "--", "--epoch-seconds", str(epoch_seconds)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def assert_each_epoch_once(self, state):
        self.assertEqual(phase(state), "PHASE_FINISHED")
        self.assertEqual([r["epoch"] for r in state["history"]], list(range(EPOCHS)))
        self.assertEqual(state["job"]["last_checkpoint"]["epoch"], EPOCHS - 1)

    def test_run_prints_results_table(self):
        out = os.path.join(self.tmp, "plain")
        rc, text = self.finish(self.launch(out, 0.2))
        self.assertEqual(rc, 0, text)
        self.assert_each_epoch_once(self.state(out))
        self.assertIn("job finished", text)
        self.assertIn("| epoch |", text)
        s = self.state(out)
        self.assertEqual(generation(s), 0)
        # The live view printed the coordinator's status line of every epoch.
        for r in s["history"]:
            self.assertIn(r["status_line"], text)
        # One host: the coordinator listened on loopback only (Note [coordinator exposure]) and
        # every committed checkpoint lies in the run's checkpoint folder.
        with open(os.path.join(out, "coordinator.log")) as f:
            self.assertIn("coordinator listening on 127.0.0.1:", f.read())
        self.assertTrue(s["job"]["last_checkpoint"]["path"].startswith(
            os.path.join(out, "checkpoints") + "/"), s["job"]["last_checkpoint"])

    def test_state_tool_prints_the_job_state(self):
        out = os.path.join(self.tmp, "state-tool")
        rc, text = self.finish(self.launch(out, 0.05))
        self.assertEqual(rc, 0, text)
        state_dir = os.path.join(out, "coordinator")
        s = job_state("--state-dir", state_dir)
        self.assertEqual(phase(s), "PHASE_FINISHED")
        self.assertEqual(int(s["job"]["world_size"]), 2)
        self.assertEqual(s["job"]["epochs"], EPOCHS)
        self.assertEqual(int(s["job"]["seed"]), 5)
        self.assertEqual(s["best_epoch"], EPOCHS - 1)
        self.assertEqual(s["failures"], [])
        self.assertTrue(s["status_line"].startswith("finished: epoch 6/6"), s["status_line"])
        self.assertEqual(len(s["history"]), EPOCHS)
        last = s["history"][-1]
        self.assertTrue(last["decision"]["stop"])
        self.assertEqual(last["early_stopping_after"]["best_epoch"], EPOCHS - 1)
        self.assertEqual(sorted(r["rank"] for r in last["ranks"]), [0, 1])
        self.assertEqual(sorted(w["state"] for w in s["workers"]), ["left", "left"])
        # Without --json: the status line, then the results table.
        rc, table, err = state_tool("--state-dir", state_dir)
        self.assertEqual(rc, 0, err)
        lines = table.splitlines()
        self.assertEqual(lines[0], s["status_line"])
        self.assertIn("| epoch | stage |", table)
        self.assertEqual(len([l for l in lines if l.startswith("|")]), 2 + EPOCHS)
        self.assertIn(f"best epoch {EPOCHS} ", table)
        self.assertIn("phase finished", table)
        # The table effnet-run printed at the end is this one.
        self.assertIn(table.strip(), text)
        # No state file yet: exit code 3; neither or both sources: a usage error.
        rc, _, err = state_tool("--state-dir", os.path.join(out, "nowhere"))
        self.assertEqual(rc, 3, err)
        self.assertIn("no state file", err)
        self.assertEqual(state_tool()[0], 2)

    def test_old_format_state_is_refused_with_what_to_do(self):
        out = os.path.join(self.tmp, "old-format")
        os.makedirs(os.path.join(out, "coordinator"))
        shutil.copy(FORMAT1_STATE, os.path.join(out, "coordinator", "state.json"))
        rc, _, err = state_tool("--state-dir", os.path.join(out, "coordinator"))
        self.assertEqual(rc, 1)
        self.assertIn("state format 1", err)
        self.assertIn("reads format 2 only", err)
        self.assertIn("move the state dir away", err)
        # effnet-run stops before starting anything, with the same reason.
        rc, text = self.finish(self.launch(out, 0.05), timeout=60)
        self.assertEqual(rc, 1, text)
        self.assertIn("state format 1", text)
        self.assertNotIn("mpirun", text)

    def test_killed_worker_is_named_and_the_run_resumes(self):
        out = os.path.join(self.tmp, "kill-worker")
        proc = self.launch(out, 0.6)
        # Mid-epoch 2: epochs 0 and 1 decided, both ranks alive.
        s = self.wait_for(out, lambda s: len(s["history"]) >= 2 and phase(s) == "PHASE_RUNNING"
                          and len(s["workers"]) == 2)
        victim = next(w for w in s["workers"] if w["rank"] == 1)
        time.sleep(0.2)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        rc, text = self.finish(proc)
        self.assertEqual(rc, 0, text)
        s = self.state(out)
        self.assert_each_epoch_once(s)
        self.assertEqual(generation(s), 1, text)
        self.assertEqual(len(s["failures"]), 1, s["failures"])
        self.assertIn(f"rank 1 (host", s["failures"][0])
        self.assertIn(f"pid {victim['pid']}", s["failures"][0])
        self.assertIn("lost its connection", s["failures"][0])
        self.assertIn("restart 1/2", text)
        self.assertIn("generation 0 failed", text)
        # The new generation started right after the last committed checkpoint.
        with open(os.path.join(out, "trace-rank0.log")) as f:
            trace = f.read().splitlines()
        gen1 = [int(l.split()[3]) for l in trace if l.startswith("generation 1 ")]
        gen0 = [int(l.split()[3]) for l in trace if l.startswith("generation 0 ")]
        self.assertTrue(gen1, trace)
        self.assertEqual(gen1, list(range(gen1[0], EPOCHS)))
        self.assertLessEqual(gen1[0], max(gen0) + 1)
        resumed = [r for r in s["history"] if int(r["generation"]) == 1]
        self.assertEqual(resumed[0]["epoch"], gen1[0])

    def test_a_workers_error_reaches_the_coordinator_and_the_output(self):
        # Note [failure causes]: rank 0 cannot write epoch 2's checkpoint (a non-empty directory
        # stands where the file goes; root ignores a read-only folder). Its error, not "left
        # before the job finished", is the job's failure reason and is printed by effnet-run.
        out = os.path.join(self.tmp, "cannot-write")
        os.makedirs(os.path.join(out, "checkpoints", "epoch-2.txt", "in-the-way"))
        rc, text = self.finish(self.launch(out, 0.05, extra=("--max-restarts", "0")))
        self.assertEqual(rc, 1, text)
        s = self.state(out)
        self.assertEqual(phase(s), "PHASE_FAILED")
        w0 = next(w for w in s["workers"] if w["rank"] == 0)
        self.assertTrue(w0["failure"].startswith("cannot write checkpoint: "), w0)
        self.assertIn(os.path.join(out, "checkpoints", "epoch-2.txt"), w0["failure"])
        who = f"rank 0 (host {w0['host']}, pid {w0['pid']}) failed at epoch"
        self.assertTrue(s["failure_reason"].startswith(who), s["failure_reason"])
        self.assertTrue(s["failure_reason"].endswith(": " + w0["failure"]), s["failure_reason"])
        self.assertEqual(s["failures"], [s["failure_reason"]])
        # Rank 1 only learnt that the job failed: it reports no cause of its own.
        self.assertEqual([w["failure"] for w in s["workers"] if w["rank"] == 1], [""])
        self.assertIn(f"rank 0 on {w0['host']} failed: {w0['failure']}", text)
        self.assertRegex(text, r"generation 0 failed \(mpirun exit code \d+\): "
                         + re.escape(s["failure_reason"]))

    def test_killed_coordinator_is_restarted_and_resumes(self):
        out = os.path.join(self.tmp, "kill-coordinator")
        proc = self.launch(out, 0.6)
        self.wait_for(out, lambda s: len(s["history"]) >= 2 and phase(s) == "PHASE_RUNNING")
        with open(os.path.join(out, "coordinator.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        rc, text = self.finish(proc)
        self.assertEqual(rc, 0, text)
        s = self.state(out)
        self.assert_each_epoch_once(s)
        self.assertEqual(generation(s), 0,
                         "the workers should carry on without a relaunch:\n" + text)
        self.assertEqual(s["failures"], [])
        self.assertIn("restarting the coordinator", text)
        self.assertIn("1 coordinator restarts", text)

    def test_joins_a_running_coordinator(self):
        out = os.path.join(self.tmp, "join")
        os.makedirs(out)
        token_file = os.path.join(out, "my-token")
        with open(token_file, "w") as f:
            f.write("join-token\n")
        port_file = os.path.join(out, "port")
        coord = subprocess.Popen(
            [os.path.join(BIN, "effnet-coordinator"), "--data", self.data, "--config",
             self.config, "--world-size", "2", "--port", "0", "--port-file", port_file,
             "--state-dir", os.path.join(out, "state"), "--token-file", token_file,
             "--heartbeat-timeout", "3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        try:
            deadline = time.time() + 30
            while not os.path.exists(port_file) and time.time() < deadline:
                time.sleep(0.05)
            with open(port_file) as f:
                port = int(f.read())
            # The state tool asks the live coordinator; a wrong token is refused with the reason.
            address = f"127.0.0.1:{port}"
            s = job_state("--address", address, "--token-file", token_file)
            self.assertEqual(phase(s), "PHASE_WAITING_FOR_WORKERS")
            self.assertEqual(s["history"], [])
            rc, _, err = state_tool("--address", address, "--token", "not-it")
            self.assertEqual(rc, 1)
            self.assertIn("wrong token", err)
            proc = subprocess.Popen(
                [sys.executable, os.path.join(BIN, "effnet-run"), "--np", "2", "--oversubscribe",
                 "--worker-bin", WORKER, "--config", self.config, "--data", self.data,
                 "--out", os.path.join(out, "run"), "--coordinator", f"127.0.0.1:{port}",
                 "--token-file", token_file, "--", "--epoch-seconds", "0.1"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            rc, text = self.finish(proc)
            self.assertEqual(rc, 0, text)
            # The coordinator exits by itself once the job finished and the workers left.
            ctext, _ = coord.communicate(timeout=30)
            self.assertEqual(coord.returncode, 0, ctext)
            self.assertIn("finished", ctext)
            # effnet-run showed status lines of the joined coordinator, asked live.
            self.assertRegex(text, r"\] epoch \d/6 \| stage")
            self.assert_each_epoch_once(job_state("--state-dir", os.path.join(out, "state")))
        finally:
            if coord.poll() is None:
                coord.kill()
                coord.wait()

    def test_ctrl_c_stops_everything(self):
        out = os.path.join(self.tmp, "interrupt")
        proc = self.launch(out, 1.0)
        s = self.wait_for(out, lambda s: phase(s) == "PHASE_RUNNING" and len(s["workers"]) == 2
                          and all(w["state"] == "alive" for w in s["workers"]))
        pids = [int(w["pid"]) for w in s["workers"]]
        with open(os.path.join(out, "coordinator.pid")) as f:
            pids.append(int(f.read()))
        os.kill(proc.pid, signal.SIGINT)
        rc, text = self.finish(proc, timeout=60)
        self.assertEqual(rc, 130, text)
        deadline = time.time() + 10
        while any(alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual([p for p in pids if alive(p)], [], text)


if __name__ == "__main__":
    unittest.main(verbosity=2)

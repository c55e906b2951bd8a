"""Shared by the Python end-to-end tests: the job's state read the way effnet-run reads it, through
`effnet-coordinator state` (EFFNET_BIN_DIR). `--json` prints the JobState message of
proto/coordinator.proto in protobuf's JSON mapping (64-bit integers are strings there)."""
import json
import os
import subprocess
import time

BIN = os.environ.get("EFFNET_BIN_DIR", "")


def state_tool(*args):
    """`effnet-coordinator state ARGS`: (exit code, stdout, stderr)."""
    out = subprocess.run([os.path.join(BIN, "effnet-coordinator"), "state", *args],
                         capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout, out.stderr


def job_state(*args):
    """The JobState as `effnet-coordinator state ARGS --json` prints it; None when there is none
    yet or it cannot be read (a coordinator restarting)."""
    rc, text, _ = state_tool(*args, "--json")
    return json.loads(text) if rc == 0 else None


class JobStateMixin:
    """For unittest.TestCase classes whose runs are effnet-run's: the state of the run in `out`
    (its coordinator's state dir, OUT/coordinator), and waiting for a condition on it."""

    def state(self, out):
        return job_state("--state-dir", os.path.join(out, "coordinator"))

    def wait_for(self, out, pred, proc=None, timeout=60, poll=0.05):
        """The first state of the run in `out` for which pred(state) holds. Fails the test when
        `timeout` seconds pass, or when `proc` (effnet-run) ends first (with its output's end)."""
        deadline = time.time() + timeout
        while time.time() < deadline and (proc is None or proc.poll() is None):
            s = self.state(out)
            if s is not None and pred(s):
                return s
            time.sleep(poll)
        ended = proc is not None and proc.poll() is not None
        self.fail(f"condition not reached ({'effnet-run ended' if ended else f'{timeout} s'}); "
                  f"state: {self.state(out)}"
                  + ("\n" + proc.communicate()[0][-5000:] if ended and proc.stdout else ""))

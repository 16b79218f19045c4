"""The systemd sandbox (../shared/systemd-sandbox) from a test's side: commands run in it, and
waiting on what it does."""

import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANDBOX = os.path.normpath(os.path.join(ROOT, "..", "shared", "systemd-sandbox", "sandbox.sh"))


class Sandbox:
    """One named sandbox; the name carries this process's pid, so parallel runs never meet."""

    def __init__(self, name):
        self.env = dict(os.environ, SANDBOX_NAME=f"{name}-{os.getpid()}")

    def sh(self, *args, check=True, timeout=60, input=None):
        r = subprocess.run([SANDBOX, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{args} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def run(self, *cmd, **kw):
        return self.sh("exec", *cmd, **kw)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)

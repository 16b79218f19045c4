"""A hostile exec handler (issue 10), for tests/e2e/test_isolation.py and
tests/systemd/test_service.py: it tries to stop, pause and kill qworker (its parent, or its
grandparent behind qworker-run), to read files qworker holds, and to reach Redis, then prints what
happened as one JSON line, which qworker logs as the task's output. The tests pass its text with
`python3 -c`, so that it needs no path the task's user could not read.

    python3 -c "$(cat hostile_handler.py)" PORT [signals] [NAME=PATH]...
"""
import json
import os
import signal
import socket
import sys

port = int(sys.argv[1])


def qworker_pid():
    """qworker, which the handler's parent is, or its grandparent when qworker-run stays as the
    handler's supervisor (with task_user): what a hostile handler would find from /proc, or,
    where /proc hides it (ProtectProc=), from a file the test wrote (target-file=PATH: a pid is
    easy to guess)."""
    for arg in sys.argv[2:]:
        if arg.startswith("target-file="):
            with open(arg.split("=", 1)[1]) as f:
                return int(f.read())
    pid = os.getppid()
    try:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "qworker-run":
                with open(f"/proc/{pid}/stat") as g:
                    return int(g.read().rsplit(") ", 1)[1].split()[1])
    except OSError:
        pass
    return pid


parent = qworker_pid()
with open("/proc/self/status") as status:
    fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
found = {"parent": parent, "uid": list(os.getresuid()), "gid": list(os.getresgid()),
         "groups": os.getgroups(), "nnp": fields["NoNewPrivs"],
         "caps": {k: int(fields[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")}}


def attempt(name, what):
    try:
        what()
        found[name] = "done"
    except OSError as e:
        found[name] = e.__class__.__name__


def read(path):
    with open(path, "rb") as f:
        f.read()


def reach_redis():
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        found["redis_said"] = s.recv(100).decode()


for arg in sys.argv[2:]:
    if arg == "signals":
        for sig in ("SIGTERM", "SIGTSTP", "SIGSTOP", "SIGKILL"):
            attempt(sig, lambda: os.kill(parent, getattr(signal, sig)))
            if sig == "SIGSTOP" and found[sig] == "done":
                os.kill(parent, signal.SIGCONT)  # so that this line is still read and logged
        attempt("SIGTERM_group", lambda: os.kill(-os.getpgid(parent), signal.SIGTERM))
    elif "=" in arg and not arg.startswith("target-file="):
        name, path = arg.split("=", 1)
        attempt(name, lambda: read(path))
attempt("memory", lambda: read(f"/proc/{parent}/environ"))
attempt("redis", reach_redis)
print(json.dumps(found), flush=True)

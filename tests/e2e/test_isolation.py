"""Handlers kept apart from qworker (issue 10): with worker.task_user a handler runs as a user
of its own, through qworker-run, and cannot signal, pause or stop qworker, read its
configuration or password, or reach Redis unless its handler says `network = true`.

The probe is the hostile handler: it tries each of these against its parent (qworker: qworker-run
becomes the handler in place) and prints what happened as one JSON line, which qworker logs as
the task's output. qworker runs as root here; the unit's way (a dynamic user with ambient
CAP_SETUID/CAP_SETGID) is in tests/systemd/test_service.py."""

import json
import os
import pwd
import signal
import subprocess
import time

import pytest

from harness import QWORKER, ROOT, SLOW, Journald, RedisServer, push, wait_for, write_config

PY = "/usr/bin/python3"
NOBODY = pwd.getpwnam("nobody")
with open(os.path.join(ROOT, "tests", "hostile_handler.py")) as f:
    PROBE = f.read()
PASSWORD = "isolation-5ecret"


def task(task_id, handler="probe"):
    return json.dumps({"id": task_id, "handler": handler, "args": []})


def probe_handler(name, port, *extra, **settings):
    """extra: "signals", and NAME=PATH for each file to try to read."""
    return {"name": name, "type": "exec", "timeout": 30, "max_attempts": 1,
            "command": [PY, "-c", PROBE, str(port), *extra], **settings}


def probe_result(q, task_id):
    """The JSON line the probe printed for one task, from qworker's journal."""
    def found():
        for e in q.journal(QWORKER_STREAM="stdout", QWORKER_TASK_ID=task_id):
            line = e["MESSAGE"].split(" stdout: ", 1)[-1]
            if line.startswith("{"):
                return json.loads(line)
        return None
    return wait_for(found, 15, f"the probe's line for task {task_id}")


@pytest.fixture
def guarded(workdir, start_qworker):
    """A Redis that wants a password (held in a file only root reads) and a qworker that runs
    its handlers as nobody: probe (no network), probe_net (network = true)."""
    redis = RedisServer(workdir).start()
    redis("CONFIG", "SET", "requirepass", PASSWORD)  # this connection stays in
    secret = os.path.join(workdir, "redis-password")
    with open(secret, "w") as f:
        f.write(PASSWORD + "\n")
    os.chmod(secret, 0o600)
    conf = os.path.join(workdir, "qworker.conf")  # what start_qworker writes, 0600
    files = (f"config={conf}", f"password={secret}")
    handlers = [probe_handler("probe", redis.port, "signals", *files),
                probe_handler("probe_net", redis.port, *files, network=True)]
    q = start_qworker(redis.port, redis={"password_file": secret},
                      worker={"task_user": "nobody"}, handlers=handlers,
                      queues=[{"name": "queue", "handler": "probe"},
                              {"name": "net", "handler": "probe_net"},
                              {"name": "sleep", "handler": "sleep"}])
    q.wait_message("ready", 10)
    try:
        yield redis, q
    finally:
        redis.stop()


def test_a_handler_cannot_signal_qworker_or_read_its_secrets_or_reach_redis(guarded):
    redis, q = guarded
    push(redis, task("probe-1"))
    found = probe_result(q, "probe-1")
    assert found["uid"] == [NOBODY.pw_uid] * 3 and found["gid"] == [NOBODY.pw_gid] * 3, found
    assert found["groups"] == [] and found["nnp"] == "1", found
    # No capability it could use (the bounding set is not emptied: without one permitted, and
    # with no_new_privs, nothing can raise it).
    assert found["caps"] == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}, found
    for sig in ("SIGTERM", "SIGTSTP", "SIGSTOP", "SIGKILL", "SIGTERM_group"):
        assert found[sig] == "PermissionError", (sig, found)
    assert found["config"] == found["password"] == found["memory"] == "PermissionError", found
    assert found["redis"] == "PermissionError", found  # no IPv4 socket at all
    # qworker did not notice: it still runs, and serves the next tasks.
    assert q.proc.poll() is None
    done = q.wait_completions(1, 10)
    assert done[0]["QWORKER_OUTCOME"] == "ok", done[0]["MESSAGE"]
    push(redis, json.dumps({"id": "nap", "handler": "sleep", "args": 0.01}), queue="sleep")
    push(redis, task("probe-2"))
    q.wait_completions(3, 15)
    assert probe_result(q, "probe-2")["SIGTERM"] == "PermissionError"
    assert q.proc.poll() is None and not q.journal(PRIORITY="3")


def test_network_true_reaches_redis_but_not_its_password(guarded):
    """The control: the same probe where its handler allows the network gets a connection, so
    the refusal above is the filter's doing; Redis then wants the password it cannot read."""
    redis, q = guarded
    push(redis, task("probe-net", "probe_net"), queue="net")
    found = probe_result(q, "probe-net")
    assert found["redis"] == "done" and found["redis_said"].startswith("-NOAUTH"), found
    assert found["password"] == "PermissionError", found


def test_qworker_itself_can_become_no_one_but_the_task_user(guarded):
    """worker.task_user lets qworker switch identity: it confines itself (seccomp) to that one,
    so that a qworker taken over by a payload cannot become root through it."""
    _, q = guarded
    with open(f"/proc/{q.pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert int(status["Seccomp_filters"]) >= 1


def test_without_task_user_handlers_still_get_no_network(redis, start_qworker, workdir):
    """Without task_user handlers run as qworker (and can read what it reads: the reason for
    task_user); a handler without `network = true` still cannot open an IPv4/IPv6 socket."""
    conf = os.path.join(workdir, "qworker.conf")
    q = start_qworker(redis.port, handlers=[probe_handler("probe", redis.port, f"config={conf}")],
                      queues=[{"name": "queue", "handler": "probe"}])
    q.wait_message("ready", 10)
    push(redis, task("plain"))
    found = probe_result(q, "plain")
    assert found["uid"] == [os.getuid()] * 3 and found["config"] == "done", found
    assert found["redis"] == "PermissionError", found


def test_task_user_change_needs_a_restart(guarded):
    redis, q = guarded
    text = open(q.config).read().replace('task_user = "nobody"', 'task_user = "daemon"')
    with open(q.config, "w") as f:
        f.write(text)
    q.signal(signal.SIGHUP)
    refused = q.wait_message("reload refused", 10)
    assert "worker.task_user cannot change without a restart" in refused[0]["MESSAGE"]
    push(redis, task("still-nobody"))
    assert probe_result(q, "still-nobody")["uid"] == [NOBODY.pw_uid] * 3


@pytest.fixture
def as_a_unit(redis, workdir, journald):
    """qworker as the packaged unit runs it, without systemd: a user of its own (daemon) holding
    only CAP_SETUID and CAP_SETGID, as ambient capabilities, handlers as nobody. Such a qworker
    may not signal its handlers itself (the kernel wants the same user, or CAP_KILL)."""
    home = os.path.join(workdir, "unit")
    os.mkdir(home)
    os.chmod(workdir, 0o755)
    os.chmod(home, 0o755)
    conf = write_config(os.path.join(home, "qworker.conf"), redis.port,
                        worker={"task_user": "nobody", "shutdown_timeout": 0.5},
                        handlers=[{"name": "hang", "type": "exec", "timeout": 60, "kill_grace": 0.5,
                                   "max_attempts": 1,
                                   "command": ["/bin/sh", "-c", "sleep 60 & echo $$ $!; wait"]}],
                        queues=[{"name": "queue", "handler": "hang"}])
    os.chmod(conf, 0o644)  # no password in it
    stderr = open(os.path.join(workdir, "unit.stderr"), "wb")
    started = time.time_ns() // 1000
    proc = subprocess.Popen(["setpriv", "--reuid=1", "--regid=1", "--clear-groups",
                             "--inh-caps=+setuid,+setgid", "--ambient-caps=+setuid,+setgid",
                             QWORKER, "-c", conf], stdout=stderr, stderr=stderr)
    try:
        wait_for(lambda: [e for e in Journald.entries(proc.pid, started)
                          if "ready" in e.get("MESSAGE", "")], 10, "qworker to be ready")
        yield proc, started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def handler_pids(pid, started, task_id):
    def found():
        for e in Journald.entries(pid, started, QWORKER_STREAM="stdout", QWORKER_TASK_ID=task_id):
            return [int(p) for p in e["MESSAGE"].split(" stdout: ", 1)[1].split()]
        return None
    return wait_for(found, 10, f"the pids of task {task_id}")


def test_a_handler_of_another_user_is_still_stopped_at_its_timeout(redis, as_a_unit):
    proc, started = as_a_unit
    push(redis, json.dumps({"id": "slow", "handler": "hang", "args": [], "timeout": 1}))
    shell, sleeper = handler_pids(proc.pid, started, "slow")
    wait_for(lambda: not alive(shell) and not alive(sleeper), 5, "the handler and its child gone")
    done = wait_for(lambda: [e for e in Journald.entries(proc.pid, started)
                             if e.get("QWORKER_TASK_ID") == "slow" and "QWORKER_OUTCOME" in e],
                    5, "the completion")
    assert done[0]["QWORKER_OUTCOME"] == "timeout", done[0]["MESSAGE"]


def test_a_handler_of_another_user_is_stopped_at_shutdown(redis, as_a_unit):
    proc, started = as_a_unit
    push(redis, json.dumps({"id": "cut", "handler": "hang", "args": []}))
    shell, sleeper = handler_pids(proc.pid, started, "cut")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10 * SLOW) == 0
    assert not alive(shell) and not alive(sleeper)
    assert redis("LLEN", "queue") == 1  # back in its queue

"""At-least-once delivery (issue 3): no task vanishes on SIGKILL, a dead worker, a Redis restart,
a killed connection, a deploy (SIGTERM), or a duplicate worker id. Every test ends by checking that
every store is empty: the queue, every in-flight hash, the dead list."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import (QWORKER, SLOW, Relay, RedisServer, push, push_many, sleep_tasks, task_ids,
                     stats, wait_all_ran, wait_for, write_config)

QUIET = {"level": "notice"}  # no line per task
# A line per task, on stderr: the ids that ran are read from there (no journald rate limit).
TEXT = {"level": "info", "target": "stderr"}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inflight_keys(redis):
    return redis("KEYS", "qworker:inflight:*")


def assert_all_stores_empty(redis, queues=("queue",)):
    for q in queues:
        assert redis("LLEN", q) == 0, f"queue {q} still holds tasks"
    assert inflight_keys(redis) == [], "an in-flight hash still holds tasks"
    assert redis("LLEN", "qworker:dead") == 0, "tasks were dead-lettered"


def wait_succeeded(redis, n, timeout):
    return wait_for(lambda: stats(redis).get("succeeded", 0) >= n, timeout,
                    f"{n} tasks to succeed", interval=0.1)


def test_sigkill_with_2000_in_flight_then_restart_loses_nothing(redis, start_qworker):
    worker = {"concurrency": 2000, "fetch_batch": 1500, "id": "w1"}  # HSETs of 1,000 and 500
    q = start_qworker(redis.port, worker=worker, log=TEXT)
    ids = task_ids("k", 20000)
    push_many(redis, sleep_tasks(ids, 0.5))
    wait_for(lambda: redis("HLEN", "qworker:inflight:w1") == 2000, 10, "2,000 tasks in flight")
    q.signal(signal.SIGKILL)
    q.wait_exit(5)
    assert redis("HLEN", "qworker:inflight:w1") > 0  # the crash left tasks behind
    before = stats(redis).get("succeeded", 0)
    assert before < 20000
    q2 = start_qworker(redis.port, name="restarted", worker=worker, log=TEXT)
    wait_all_ran([q, q2], ids, 60)
    wait_for(lambda: inflight_keys(redis) == [] or redis("HLEN", "qworker:inflight:w1") == 0, 10,
             "the last acks")
    assert q2.stop() == 0
    assert_all_stores_empty(redis)
    assert "left in flight by a previous run" in q2.stderr_text()


def test_survivor_requeues_a_dead_workers_tasks_within_three_ttls(redis, start_qworker):
    ttl = 2
    a = start_qworker(redis.port, name="a", log=TEXT,
                      worker={"id": "a", "concurrency": 20, "heartbeat_ttl": ttl})
    b = start_qworker(redis.port, name="b", log=TEXT,
                      worker={"id": "b", "concurrency": 20, "heartbeat_ttl": ttl})
    ids = task_ids("s", 200)
    push_many(redis, sleep_tasks(ids, 1))
    wait_for(lambda: redis("HLEN", "qworker:inflight:b") > 0, 10, "worker b to hold tasks")
    b.signal(signal.SIGKILL)
    killed = time.monotonic()
    b.wait_exit(5)
    wait_for(lambda: redis("EXISTS", "qworker:inflight:b") == 0, 3 * ttl + 1,
             "worker a to requeue worker b's tasks")
    took = time.monotonic() - killed
    assert took <= 3 * ttl * SLOW, f"requeued {took:.1f} s after the kill (TTL {ttl} s)"
    # Logged once the script that put them back has answered: waited for, not raced.
    a.wait_message("worker b stopped sending heartbeats", 5)
    assert redis("SISMEMBER", "qworker:workers", "b") == 0
    wait_all_ran([a, b], ids, 30)
    assert a.stop() == 0
    assert_all_stores_empty(redis)


def test_a_dead_worker_with_thousands_in_flight_is_put_back_whole(redis, start_qworker):
    ttl = 2
    b = start_qworker(redis.port, name="b", log=QUIET,
                      worker={"id": "b", "concurrency": 2500, "fetch_batch": 2500,
                              "heartbeat_ttl": ttl})
    push_many(redis, ["60"] * 2500)
    wait_for(lambda: redis("HLEN", "qworker:inflight:b") == 2500, 10, "worker b to hold them all")
    b.signal(signal.SIGKILL)
    b.wait_exit(5)
    a = start_qworker(redis.port, name="a", log=QUIET,
                      worker={"id": "a", "concurrency": 1, "heartbeat_ttl": ttl})
    # Put back a thousand at a time, each exactly once: one runs on a, the rest wait.
    wait_for(lambda: redis("EXISTS", "qworker:inflight:b") == 0, 3 * ttl + 1,
             "worker a to requeue worker b's tasks")
    wait_for(lambda: redis("HLEN", "qworker:inflight:a") == 1, 5, "worker a to take one")
    assert redis("LLEN", "queue") == 2499
    assert json.loads(redis("LINDEX", "queue", 0)) == {"payload": "60", "recoveries": 1}
    # Logged after the script that put them back answered, and read through journald: waited
    # for, not raced (it once was not there yet when read at once).
    lines = [e["MESSAGE"] for e in a.wait_message("worker b stopped", 5)]
    assert len(lines) == 1 and "2500 task(s)" in lines[0], lines
    assert a.stop() == 0
    assert redis("LLEN", "queue") == 2500  # the one it ran is back too


def test_redis_killed_and_restarted_mid_run(workdir, start_qworker):
    redis = RedisServer(workdir, extra=["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        # A heartbeat every 0.33 s: the outage outlasts several, which must not make it spin.
        q = start_qworker(redis.port, log=QUIET, worker={"concurrency": 50, "heartbeat_ttl": 1})
        q.wait_message("ready", 10)
        ids = task_ids("r", 200)
        push_many(redis, sleep_tasks(ids, 1))
        wait_for(lambda: stats(redis).get("succeeded", 0) >= 50, 10, "the first wave")
        redis.proc.kill()  # SIGKILL: no chance to save anything but the AOF
        redis.proc.wait()
        redis._client = None
        q.wait_message("unreachable", 10)
        cpu0, t0 = cpu_seconds(q.pid), time.monotonic()
        outage_end = t0 + 2.0
        while time.monotonic() < outage_end:  # the outage itself is what is tested
            time.sleep(0.1)
        cpu = cpu_seconds(q.pid) - cpu0
        assert cpu < 0.2 * SLOW, f"{cpu:.2f} s of CPU in a 2 s outage: it spins"
        redis.start()
        back = time.monotonic()
        q.wait_message("reachable again", 5)
        took = time.monotonic() - back
        assert took <= 2.0 * SLOW, f"reconnected {took:.2f} s after redis was back"
        wait_succeeded(redis, 200, 30)
        # QUIET logs no line per task: at notice the journal stays small enough to read the
        # outage lines; the ids are checked against the in-flight and queue stores instead.
        lines = [e["MESSAGE"] for e in q.journal()]
        assert sum("unreachable" in m for m in lines) == 1, lines
        assert sum("reachable again" in m for m in lines) == 1, lines
        assert q.stop() == 0
        assert_all_stores_empty(redis)
    finally:
        redis.stop()


def test_sigterm_puts_500_running_tasks_back_at_the_front(redis, start_qworker):
    q = start_qworker(redis.port, log=QUIET,
                      worker={"concurrency": 500, "shutdown_timeout": 2, "id": "w"})
    push_many(redis, ["30"] * 500)
    wait_for(lambda: redis("HLEN", "qworker:inflight:w") == 500, 10, "500 tasks in flight")
    push_many(redis, ["40"] * 10)  # waiting: no free capacity
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    # What qworker controls: the tasks are back in Redis once the drain ends. Its exit also waits
    # for the journal to take the 500 requeued lines (a journald rotating its files has taken
    # 1.3 s to), so the exit gets the wider bound of wait_exit.
    wait_for(lambda: redis("LLEN", "queue") == 510, 2.0 + 1.0, "the 500 tasks back in the queue")
    took = time.monotonic() - t0
    assert took <= 2.0 + 1.0 * SLOW, f"the tasks were back {took:.2f} s after SIGTERM with " \
                                     "shutdown_timeout = 2"
    assert q.wait_exit(5) == 0
    wait_for(lambda: len(q.completions("requeued")) == 500, 10, "the 500 requeued lines")
    # The right end is popped first: the 500 interrupted tasks are ahead of the 10 waiting.
    assert redis("LRANGE", "queue", 0, -1) == [b"40"] * 10 + [b"30"] * 500
    assert inflight_keys(redis) == []
    assert redis("EXISTS", "qworker:worker:w") == 0  # the id was given back
    assert stats(redis)["requeued"] == 500


@pytest.mark.skipif(SLOW > 1, reason="a load test: measured on the plain build only")
def test_100000_tasks_in_flight_at_once(redis, start_qworker):
    q = start_qworker(redis.port, log=TEXT,
                      worker={"concurrency": 100000, "fetch_batch": 2500, "id": "big"})
    q.wait_message("ready", 10)
    ids = task_ids("b", 100000)
    tasks = sleep_tasks(ids, 2)
    t0 = time.monotonic()
    push_many(redis, tasks)
    wait_succeeded(redis, 100000, 30)
    took = time.monotonic() - t0
    assert took <= 10, f"100,000 tasks of 2 s took {took:.2f} s from the push"
    assert set(wait_all_ran([q], ids, 10).values()) == {1}, "no fault, yet a task ran twice"
    wait_for(lambda: inflight_keys(redis) == [], 5, "the last acks")
    assert_all_stores_empty(redis)


@pytest.mark.parametrize("victim", ["qworker-consumer", "qworker-reporter", "qworker-waiter",
                                    "qworker-heartbeat"])
def test_client_kill_of_any_connection_loses_nothing(redis, start_qworker, victim):
    q = start_qworker(redis.port, log=TEXT, worker={"concurrency": 20})
    q.wait_message("ready", 10)
    ids = task_ids("c", 100)
    push_many(redis, sleep_tasks(ids, 0.5))

    def victim_ids():
        return [line.split(b" ")[0][3:] for line in redis("CLIENT", "LIST").split(b"\n")
                if f"name={victim} ".encode() in line]

    wait_for(lambda: stats(redis).get("succeeded", 0) >= 20, 10, "the first wave")
    victims = wait_for(victim_ids, 5, f"a connection named {victim}")
    for cid in victims:
        redis("CLIENT", "KILL", "ID", cid)
    wait_all_ran([q], ids, 30)
    if victim == "qworker-heartbeat":  # connected again at its next beat (a third of the TTL)
        wait_for(lambda: set(victim_ids()) - set(victims), 15, "the heartbeat's new connection")
    wait_for(lambda: inflight_keys(redis) == [], 5, "the last acks")
    assert q.proc.poll() is None
    assert q.stop() == 0
    assert_all_stores_empty(redis)


def test_a_fetch_whose_reply_is_lost_is_put_back_without_a_restart(redis, start_qworker):
    relay = Relay(redis.port)
    try:
        q = start_qworker(relay.port, worker={"id": "r"})
        q.wait_message("ready", 10)
        # Idle: its waiter blocks in BLMOVE with a fetch behind it (the script loaded by then).
        wait_for(lambda: b"cmd=blmove" in redis("CLIENT", "LIST"), 5, "the worker to wait")
        relay.swallow("waiter")
        push(redis, "0")
        # The fetch behind the idle worker's BLMOVE moved it; its reply is swallowed whole (the
        # fault is certain, not raced: the relay shows it kept the fetch's reply from qworker).
        wait_for(lambda: redis("HLEN", "qworker:inflight:r") == 1, 5, "the fetch to move the task")
        # 1 queue looked at, none refused, none too large, 1 task
        fetch_reply = b"*5\r\n:1\r\n:0\r\n:0\r\n:0\r\n$1\r\n0\r\n"
        wait_for(lambda: fetch_reply in relay.swallowed_bytes(), 5,
                 "the relay to swallow the fetch's reply")
        relay.cut("waiter")
        relay.swallow(None)
        assert q.wait_completions(1, 10)[0]["QWORKER_OUTCOME"] == "ok"
        assert q.journal(MESSAGE="consumer: 1 task(s) whose fetch reply was lost put back at the "
                                 "front of their queue")
        wait_for(lambda: inflight_keys(redis) == [], 5, "the ack")
        assert q.proc.poll() is None
        assert q.stop() == 0
        assert_all_stores_empty(redis)
    finally:
        relay.close()


def test_a_task_that_keeps_killing_its_worker_is_dead_lettered_as_poison(redis, start_qworker,
                                                                         workdir):
    got, pidfile = os.path.join(workdir, "got"), os.path.join(workdir, "pid")
    payload = b"\xff\x00 not text"  # goes back to its queue as base64, and arrives intact
    config = dict(
        worker={"id": "p", "max_recoveries": 3}, log=QUIET,
        handlers=[{"name": "hold", "type": "exec", "args": "stdin",
                   "command": ["/bin/sh", "-c", f"echo $$ > {pidfile}; cat > {got}; exec sleep 60"]}],
        queues=[{"name": "queue", "handler": "hold"}])
    push(redis, payload)
    for run in range(3):  # it runs, and its worker dies: three times
        q = start_qworker(redis.port, name=f"run{run}", **config)
        wait_for(lambda: os.path.exists(got) and open(got, "rb").read() == payload, 10,
                 f"run {run} of the task, with its payload intact")
        os.unlink(got)
        q.signal(signal.SIGKILL)
        q.wait_exit(5)
        os.kill(int(open(pidfile).read()), signal.SIGKILL)  # its child, orphaned
    q = start_qworker(redis.port, name="last", **config)
    wait_for(lambda: redis("LLEN", "qworker:dead") == 1, 10, "the task in the dead list")
    entry = json.loads(redis("LINDEX", "qworker:dead", 0))
    assert entry["reason"] == "poison"
    assert base64.b64decode(entry["payload_base64"]) == payload
    assert q.journal(PRIORITY="4", QWORKER_OUTCOME="invalid")
    assert not os.path.exists(got), "it ran a fourth time"
    wait_for(lambda: inflight_keys(redis) == [], 5, "the ack")
    assert q.stop() == 0
    assert redis("LLEN", "queue") == 0


def test_second_worker_with_the_same_id_is_refused_until_the_first_is_gone(redis, start_qworker):
    ttl = 2
    worker = {"id": "same", "concurrency": 10, "heartbeat_ttl": ttl}
    first = start_qworker(redis.port, name="first", worker=worker, log=QUIET)
    first.wait_message("ready", 10)
    push_many(redis, ["30"] * 5)
    wait_for(lambda: redis("HLEN", "qworker:inflight:same") == 5, 5, "five tasks in flight")
    second = start_qworker(redis.port, name="second", worker=worker, log=QUIET)
    second.accepted_exits.add(75)
    assert second.wait_exit(10) == 75
    refusal = [e for e in second.wait_message("worker id same is in use", 5)]
    assert refusal[0]["PRIORITY"] == "3", refusal
    assert redis("HLEN", "qworker:inflight:same") == 5  # untouched by the refused one
    first.signal(signal.SIGKILL)
    first.wait_exit(5)
    wait_for(lambda: redis("EXISTS", "qworker:worker:same") == 0, ttl + 2, "the heartbeat to expire")
    third = start_qworker(redis.port, name="third", log=QUIET,
                          worker={**worker, "shutdown_timeout": 0})
    third.wait_message("left in flight by a previous run", 10)
    wait_for(lambda: redis("HLEN", "qworker:inflight:same") == 5 and redis("LLEN", "queue") == 0,
             5, "the leftovers to run again")
    assert third.stop() == 0
    assert redis("LLEN", "queue") == 5  # stopped at once and put back: still nothing lost
    assert inflight_keys(redis) == []


def test_warns_when_redis_may_evict_tasks(workdir, start_qworker):
    redis = RedisServer(workdir, extra=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        q = start_qworker(redis.port)
        warned = q.wait_message("maxmemory-policy is allkeys-lru", 10)
        assert warned[0]["PRIORITY"] == "4"
        assert q.stop() == 0
    finally:
        redis.stop()



def stale_heartbeat(redis, worker_id, pid):
    redis("SET", f"qworker:worker:{worker_id}",
          json.dumps({"host": socket.gethostname(), "pid": pid, "version": "0.1.0",
                      "started": 1, "inflight": 0, "token": "an earlier run"}), "PX", 60000)


def child_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = f.read().split()
    return int(kids[0]) if kids else None


def run_wrapped(cmd, stop_when, timeout):
    """Runs qworker under a wrapper (namespaces, another user) that execs or forks it, its log
    on stdout; once stop_when(log) holds, or the timeout passes, SIGTERMs the qworker process
    (the wrapper's child, or the wrapper itself once it exec'd). Returns (status, log)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    os.set_blocking(p.stdout.fileno(), False)
    log, deadline = b"", time.monotonic() + timeout * SLOW
    while p.poll() is None and time.monotonic() < deadline and not stop_when(log.decode()):
        log += p.stdout.read() or b""
        time.sleep(0.02)
    if p.poll() is None:
        target = child_of(p.pid) or p.pid
        os.kill(target, signal.SIGTERM)
        try:
            p.wait(10 * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    os.set_blocking(p.stdout.fileno(), True)
    log += p.stdout.read() or b""
    return p.returncode, log.decode("utf-8", "replace")


def test_a_previous_run_with_our_own_pid_is_taken_over_at_once(redis, workdir):
    """A container restarted as PID 1 finds the heartbeat its previous run (also PID 1) left:
    no live process can share our pid, so the id is taken at once, not after the TTL (the check
    trusted a pid equal to its own and refused to start)."""
    stale_heartbeat(redis, "pid1", 1)
    conf = write_config(os.path.join(workdir, "pid1.conf"), redis.port, log={"target": "stderr"},
                        worker={"id": "pid1", "shutdown_timeout": 0})
    status, log = run_wrapped(["unshare", "--pid", "--fork", "--mount-proc", QWORKER, "-c", conf],
                              lambda log: "ready" in log, 10)
    assert "was held by pid 1, which no longer runs: taking it over" in log, log
    assert "ready: redis answered" in log, log


def test_a_live_qworker_hidden_by_hidepid_is_not_taken_for_dead(redis, workdir):
    """Under ProtectProc=invisible (hidepid) another user's qworker has no /proc entry for us:
    that is not proof it is gone. The id stays refused (exit 75) until its heartbeat expires."""
    holder = subprocess.Popen(["sleep", "60"])  # a live process of another user (root)
    try:
        stale_heartbeat(redis, "hidden", holder.pid)
        shared = tempfile.mkdtemp(prefix="qworker-hidden-")
        os.chmod(shared, 0o755)
        conf = write_config(os.path.join(shared, "hidden.conf"), redis.port,
                            log={"target": "stderr"}, worker={"id": "hidden"})
        os.chmod(conf, 0o644)
        status, log = run_wrapped(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
             'mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid=65534 '
             f'--regid=65534 --clear-groups {QWORKER} -c {conf}'],
            lambda log: "in use" in log or "ready" in log, 10)
        assert status == 75, log
        assert "worker id hidden is in use" in log, log
        assert redis("GET", "qworker:worker:hidden") is not None
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(shared, ignore_errors=True)


def test_a_script_redis_keeps_refusing_at_start_is_retried_slowly_and_said_once(workdir,
                                                                              start_qworker):
    """An ACL without EVALSHA (or a Redis that refuses the scripts): the start-up claim spun with
    a zero wait. Now once a second, one error line, and it starts as soon as it is allowed."""
    redis = RedisServer(workdir).start()
    try:
        redis("ACL", "SETUSER", "qw", "on", ">pw", "~*", "+@all", "-evalsha")
        q = start_qworker(redis.port, log={"target": "stderr"},
                          redis={"username": "qw", "password": "pw"})
        q.wait_message("cannot take worker id", 10)
        cpu0, t0 = cpu_seconds(q.pid), time.monotonic()
        while time.monotonic() < t0 + 2:  # refused for 2 s: what is measured
            time.sleep(0.1)
        cpu = cpu_seconds(q.pid) - cpu0
        assert cpu < 0.2 * SLOW, f"{cpu:.2f} s of CPU in 2 s of refusals: it spins"
        assert len([m for m in q.messages() if "cannot take worker id" in m]) == 1
        redis("ACL", "SETUSER", "qw", "+evalsha")
        q.wait_message("ready", 5)
        assert q.stop() == 0
    finally:
        redis.stop()

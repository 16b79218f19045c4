"""qworkerctl (issue 11) against a real Redis with live workers: status and workers as the
heartbeats tell them, dead letters listed, shown, retried and purged, each exactly once even
when two operators retry everything at once, and push building the envelope itself."""

import json
import os
import subprocess
import threading
import time

import pytest

from harness import (QWORKER, SLOW, push, push_many, sleep_tasks, stats, task_ids, wait_all_ran,
                     wait_for, write_config)

QWORKERCTL = os.path.join(os.path.dirname(QWORKER), "qworkerctl")


def ctl(conf, *args, json_out=False):
    cmd = [QWORKERCTL, "-c", conf] + (["--json"] if json_out else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    return r.returncode, (json.loads(out) if json_out and r.returncode == 0 else out), \
        r.stderr.decode("utf-8", "replace")


@pytest.fixture
def fleet(redis, start_qworker, workdir):
    """Two workers on one Redis, and a configuration for qworkerctl naming the same Redis."""
    queues = [{"name": "queue", "handler": "sleep"}, {"name": "other", "handler": "sleep"}]
    a = start_qworker(redis.port, name="a", worker={"id": "a"}, queues=queues)
    b = start_qworker(redis.port, name="b", worker={"id": "b"}, queues=queues)
    a.wait_message("ready", 10)
    b.wait_message("ready", 10)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, queues=queues)
    return a, b, conf


def dead_letters(redis, n):
    wait_for(lambda: redis("LLEN", "qworker:dead") >= n, 20, f"{n} dead letters")


def test_status_and_workers_show_the_fleet(redis, fleet):
    a, b, conf = fleet
    push(redis, "0.01", "not a number")
    dead_letters(redis, 1)
    wait_for(lambda: stats(redis).get("succeeded") == 1, 5, "the good task recorded")
    rc, s, err = ctl(conf, "status", json_out=True)
    assert rc == 0, err
    assert s["queues"] == [{"name": "queue", "handler": "sleep", "length": 0, "paused": False},
                           {"name": "other", "handler": "sleep", "length": 0, "paused": False}]
    assert s["dead"] == 1 and s["scheduled"] == 0
    assert s["stats"]["succeeded"] == 1 and s["stats"]["dead"] == 1
    workers = {w["id"]: w for w in s["workers"]}
    assert set(workers) == {"a", "b"}
    assert workers["a"]["pid"] == a.pid and workers["b"]["pid"] == b.pid
    assert "token" not in workers["a"]
    assert 0 <= workers["a"]["heartbeat_age_ms"] <= 15000
    rc, text, _ = ctl(conf, "status")
    assert rc == 0 and "QUEUE  HANDLER  LENGTH  PAUSED" in text and "scheduled 0, dead 1" in text
    rc, ws, _ = ctl(conf, "workers", json_out=True)
    assert rc == 0 and sorted(w["id"] for w in ws) == ["a", "b"]


def test_dead_list_show_retry_purge(redis, fleet):
    _, _, conf = fleet
    hostile = "evil\x1b[2J\x07"
    push(redis, json.dumps({"id": hostile, "handler": "nope", "args": []}),
         json.dumps({"id": "keep-me", "handler": "nope", "args": []}), b"\xff\xfe bytes")
    dead_letters(redis, 3)
    rc, letters, _ = ctl(conf, "dead", "list", json_out=True)
    assert rc == 0 and len(letters) == 3
    assert {l["id"] for l in letters} >= {hostile, "keep-me"}
    rc, text, _ = ctl(conf, "dead", "list")
    assert rc == 0 and "\x1b" not in text and "\x07" not in text and "evil\\x1b[2J\\x07" in text
    rc, shown, _ = ctl(conf, "dead", "show", "keep-me", json_out=True)
    assert rc == 0 and shown[0]["reason"] == 'unknown handler "nope"'
    assert ctl(conf, "dead", "show", "no-such-id")[0] == 1
    # Retried into another queue (nothing serves "parked"), as the payload first pushed.
    rc, out, err = ctl(conf, "dead", "retry", hostile, "--queue", "parked", json_out=True)
    assert rc == 0 and out == {"retried": 1, "failed": 0}, err
    assert json.loads(redis("LRANGE", "parked", 0, -1)[0])["id"] == hostile
    # A payload that is not UTF-8 went to the dead list as base64; it comes back as its bytes.
    rc, out, err = ctl(conf, "dead", "retry", "--all", "--queue", "parked", json_out=True)
    assert rc == 0 and out == {"retried": 2, "failed": 0}, err
    assert b"\xff\xfe bytes" in redis("LRANGE", "parked", 0, -1)
    assert redis("LLEN", "qworker:dead") == 0
    push(redis, "nope nope")
    dead_letters(redis, 1)
    rc, out, _ = ctl(conf, "dead", "purge", "--all", json_out=True)
    assert rc == 0 and out == {"purged": 1, "failed": 0}
    assert redis("LLEN", "qworker:dead") == 0


def test_a_too_large_payload_comes_back_whole(redis, start_qworker, workdir):
    """Over max_payload, a payload stays in Redis (qworker:dead:payloads); retry puts it back
    in a queue and drops the kept copy, purge drops both."""
    q = start_qworker(redis.port, worker={"max_payload": 1024})
    q.wait_message("ready", 10)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port)
    big = b"x" * 5000
    push(redis, big)
    dead_letters(redis, 1)
    assert redis("HLEN", "qworker:dead:payloads") == 1
    rc, out, err = ctl(conf, "dead", "retry", "--all", "--queue", "parked", json_out=True)
    assert rc == 0 and out["retried"] == 1, err
    assert redis("LRANGE", "parked", 0, -1) == [big]
    assert redis("HLEN", "qworker:dead:payloads") == 0


def test_two_operators_retrying_everything_move_each_letter_once(redis, fleet):
    """2,000 distinct dead letters, two `dead retry --all` at once: every payload is in the
    queue exactly once, and the dead list is empty."""
    _, _, conf = fleet
    payloads = [f"bad-{i}" for i in range(2000)]
    push_many(redis, payloads)
    dead_letters(redis, 2000)
    results = []

    def retry():
        results.append(ctl(conf, "dead", "retry", "--all", "--queue", "parked", json_out=True))
    threads = [threading.Thread(target=retry) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(rc == 0 for rc, _, _ in results), results
    assert sum(out["retried"] for _, out, _ in results) == 2000
    parked = redis("LRANGE", "parked", 0, -1)
    assert sorted(p.decode() for p in parked) == sorted(payloads)  # each once, none lost
    assert redis("LLEN", "qworker:dead") == 0


def test_push_builds_the_envelope_and_it_runs(redis, fleet):
    a, b, conf = fleet
    rc, out, err = ctl(conf, "push", "queue", "--id", "pushed-1", "--timeout", "5",
                       "--max-attempts", "2", "--", "0.01", json_out=True)
    assert rc == 0, err
    assert json.loads(out["pushed"]) == {"id": "pushed-1", "timeout": 5.0, "max_attempts": 2,
                                         "handler": "sleep", "args": ["0.01"]}
    wait_for(lambda: [e for q in (a, b) for e in q.completions("ok")
                      if e["QWORKER_TASK_ID"] == "pushed-1"], 10, "the pushed task to run")
    assert ctl(conf, "push", "queue", "--max-attempts", "0", "--", "x")[0] == 64
    assert ctl(conf, "push", "unknown-queue", "--", "x")[0] == 64  # no handler to name
    assert ctl(conf, "push", "unknown-queue", "--handler", "sleep", "--", "1")[0] == 0


def test_exit_statuses(redis, fleet, workdir):
    _, _, conf = fleet
    assert ctl(conf)[0] == 64
    assert ctl(conf, "frobnicate")[0] == 64
    assert ctl(conf, "dead", "retry")[0] == 64
    assert ctl(conf, "dead", "retry", "x", "--all")[0] == 64
    away = write_config(os.path.join(workdir, "away.conf"), 1)  # nothing listens on port 1
    rc, _, err = ctl(away, "status")
    assert rc == 69 and "unreachable" in err


def test_pause_holds_every_worker_at_once_and_resume_lets_them_go(redis, fleet):
    """Two running workers: from the pause on, neither takes from the queue (tasks pushed stay
    in Redis), the task already running ends normally, the other queue is still served; after
    resume both take again within about a second."""
    a, b, conf = fleet
    push(redis, json.dumps({"id": "long", "handler": "sleep", "args": 1}))
    wait_for(lambda: redis("LLEN", "queue") == 0, 5, "the long task to be taken")
    rc, out, err = ctl(conf, "pause", "queue", json_out=True)
    assert rc == 0 and out == {"queue": "queue", "paused": True, "changed": True}, err
    ids = task_ids("held", 20)
    push(redis, *sleep_tasks(ids))
    push(redis, json.dumps({"id": "other-1", "handler": "sleep", "args": 0}), queue="other")
    wait_for(lambda: any(e["QWORKER_TASK_ID"] == "other-1" for q in (a, b)
                         for e in q.completions("ok")), 5, "the other queue to be served")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the pause itself is what is tested
        assert redis("LLEN", "queue") == 20, "a worker took from a paused queue"
        time.sleep(0.05)
    wait_for(lambda: any(e["QWORKER_TASK_ID"] == "long" for q in (a, b)
                         for e in q.completions("ok")), 5, "the running task to end normally")
    assert redis("LLEN", "queue") == 20
    rc, s, _ = ctl(conf, "status", json_out=True)
    assert [q["paused"] for q in s["queues"]] == [True, False]
    said = [m for q in (a, b) for m in q.messages() if "queue queue is paused" in m]
    assert said, "no worker said it saw the pause"
    assert ctl(conf, "pause", "queue", json_out=True)[1]["changed"] is False
    t0 = time.monotonic()
    assert ctl(conf, "resume", "queue")[0] == 0
    wait_all_ran([a, b], ids, 5)
    assert time.monotonic() - t0 < 1.0 + 2.0 * SLOW


def test_pause_holds_an_at_most_once_worker_within_a_second(redis, start_qworker, workdir):
    """BLMPOP runs no script: an at-most-once worker reads the paused set at most once a second
    and leaves those queues out of its BLMPOP, which blocks a second at a time."""
    q = start_qworker(redis.port, worker={"delivery": "at-most-once"})
    q.wait_message("ready", 10)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port)
    t0 = time.monotonic()
    assert ctl(conf, "pause", "queue")[0] == 0
    q.wait_message("queue queue is paused", 5)
    assert time.monotonic() - t0 < 1.0 + 2.0 * SLOW
    ids = task_ids("amo", 5)
    push(redis, *sleep_tasks(ids))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the pause itself is what is tested
        assert redis("LLEN", "queue") == 5, "an at-most-once worker took from a paused queue"
        time.sleep(0.05)
    assert ctl(conf, "resume", "queue")[0] == 0
    wait_all_ran([q], ids, 5)
    q.wait_message("queue queue is served again", 5)

"""Cancellation (issue 13, item 5): `qworkerctl cancel ID` stops a running exec task (its process
group gone within kill_grace, outcome "cancelled", not retried), removes a scheduled one at once,
and is remembered for a task no worker holds yet: one pushed after the cancel never runs."""

import json
import os
import signal
import time

import pytest

from harness import SLOW, binary_exists, loud_lines, push, stats, wait_for, write_config
from test_ctl import ctl
from test_faults import acl_user
from test_isolation import alive

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")

GRACE = 1.0
# Both the shell and its child ignore SIGTERM: only the SIGKILL after kill_grace ends them.
HANG = {"name": "hang", "type": "exec", "timeout": 60, "kill_grace": GRACE, "max_attempts": 3,
        "command": ["/bin/sh", "-c", "trap '' TERM; sleep 60 & echo $$ $!; wait"]}
QUEUES = [{"name": "queue", "handler": "sleep"}]


def outcome_of(q, task_id):
    done = [e for e in q.completions() if e["QWORKER_TASK_ID"] == task_id]
    return done[0] if done else None


def test_a_running_exec_task_is_stopped_group_and_all_and_not_retried(redis, start_qworker,
                                                                     workdir):
    q = start_qworker(redis.port, handlers=[HANG], queues=QUEUES)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, handlers=[HANG],
                        queues=QUEUES)
    q.wait_message("ready", 10)
    push(redis, json.dumps({"id": "job-1", "handler": "hang", "args": []}))
    pids = wait_for(lambda: [int(p) for e in q.journal(QWORKER_TASK_ID="job-1",
                                                       QWORKER_STREAM="stdout")
                             for p in e["MESSAGE"].split(" stdout: ", 1)[1].split()], 10,
                    "the handler's pids")
    assert len(pids) == 2 and all(alive(p) for p in pids)
    t0 = time.monotonic()
    rc, out, err = ctl(conf, "cancel", "job-1")
    assert rc == 0, err
    assert "1 worker(s) told" in out and "0 removed from the schedule" in out, out
    wait_for(lambda: not any(alive(p) for p in pids), GRACE + 2 * SLOW,
             "the handler's group to be gone")
    gone = time.monotonic() - t0
    print(f"\nthe group ignoring SIGTERM was gone {gone:.2f} s after the cancel "
          f"(kill_grace {GRACE} s)")
    assert gone >= GRACE * 0.9, "it ignores SIGTERM: only the SIGKILL after the grace ends it"
    done = wait_for(lambda: outcome_of(q, "job-1"), 5, "the completion")
    assert done["QWORKER_OUTCOME"] == "cancelled" and done["PRIORITY"] == "5", done["MESSAGE"]
    s = stats(redis)
    assert s["cancelled"] == 1 and s.get("retried", 0) == 0 and s.get("failed", 0) == 0
    assert redis("ZCARD", "qworker:schedule") == 0 and redis("LLEN", "qworker:dead") == 0
    assert all(redis("HLEN", k) == 0 for k in redis("KEYS", "qworker:inflight:*"))


def test_a_scheduled_task_is_removed_at_once_and_a_waiting_one_never_starts(redis,
                                                                         start_qworker,
                                                                         workdir):
    q = start_qworker(redis.port, queues=QUEUES)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, queues=QUEUES)
    q.wait_message("ready", 10)
    push(redis, json.dumps({"id": "later-1", "handler": "sleep", "args": 0, "delay": 600}),
         json.dumps({"id": "later-2", "handler": "sleep", "args": 0, "delay": 600}))
    wait_for(lambda: redis("ZCARD", "qworker:schedule") == 2, 10, "both in the schedule")
    rc, out, err = ctl(conf, "cancel", "later-1", json_out=True)
    assert rc == 0, err
    assert out == [{"id": "later-1", "workers_told": 1, "unscheduled": 1,
                    "remembered_s": 86400.0}]
    members = [json.loads(json.loads(m)["task"])["id"]
               for m in redis("ZRANGE", "qworker:schedule", 0, -1)]
    assert members == ["later-2"]
    assert stats(redis)["cancelled"] == 1

    # Waiting in a paused queue: never started once taken, the other task runs.
    assert ctl(conf, "pause", "queue")[0] == 0
    push(redis, json.dumps({"id": "wait-1", "handler": "sleep", "args": 0}),
         json.dumps({"id": "wait-2", "handler": "sleep", "args": 0}))
    assert ctl(conf, "cancel", "wait-1")[0] == 0
    q.wait_message("cancel: task wait-1 is cancelled", 10)  # heard before it is taken
    assert ctl(conf, "resume", "queue")[0] == 0
    assert wait_for(lambda: outcome_of(q, "wait-1"), 10, "wait-1")["QWORKER_OUTCOME"] == \
        "cancelled"
    assert wait_for(lambda: outcome_of(q, "wait-2"), 10, "wait-2")["QWORKER_OUTCOME"] == "ok"
    assert stats(redis)["cancelled"] == 2 and stats(redis)["succeeded"] == 1


def test_a_cancel_sent_before_the_push_is_honoured_by_a_worker_started_after_it(
        redis, start_qworker, workdir):
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, queues=QUEUES)
    rc, out, err = ctl(conf, "cancel", "early-1")
    assert rc == 0 and "0 worker(s) told" in out, (out, err)
    # Pushed before the worker starts: taken by its very first fetch, which must know already.
    push(redis, json.dumps({"id": "early-1", "handler": "sleep", "args": 5}),
         json.dumps({"id": "early-2", "handler": "sleep", "args": 0}))
    q = start_qworker(redis.port, queues=QUEUES, worker={"id": "late-starter"})
    assert wait_for(lambda: outcome_of(q, "early-2"), 10, "early-2")["QWORKER_OUTCOME"] == "ok"
    done = wait_for(lambda: outcome_of(q, "early-1"), 10, "early-1")
    assert done["QWORKER_OUTCOME"] == "cancelled"
    assert "before it started" in done["MESSAGE"]
    assert redis("LLEN", "queue") == 0


def test_a_sleeping_task_stops_at_once_and_one_waiting_under_concurrency_never_starts(
        redis, start_qworker, workdir):
    one_at_a_time = [{"name": "napper", "type": "exec", "command": ["/bin/sleep"],
                      "concurrency": 1}]
    queues = [{"name": "queue", "handler": "napper"}]
    q = start_qworker(redis.port, handlers=one_at_a_time, queues=queues,
                      worker={"shutdown_timeout": 0.5})  # nap-2 is put back at the end
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, handlers=one_at_a_time,
                        queues=queues)
    q.wait_message("ready", 10)
    push(redis, *[json.dumps({"id": f"nap-{k}", "handler": "napper", "args": ["60"]})
                  for k in range(3)], json.dumps({"id": "zz", "handler": "sleep", "args": 60}))
    wait_for(lambda: redis("LLEN", "queue") == 0, 10, "all taken: nap-0 and zz run, two wait")
    assert ctl(conf, "cancel", "nap-1")[0] == 0  # waiting: never starts
    assert wait_for(lambda: outcome_of(q, "nap-1"), 10, "nap-1")["QWORKER_OUTCOME"] == "cancelled"
    assert ctl(conf, "cancel", "nap-0", "zz")[0] == 0  # running: stopped; nap-2 starts
    for task_id in ("nap-0", "zz"):
        done = wait_for(lambda: outcome_of(q, task_id), 10, task_id)
        assert done["QWORKER_OUTCOME"] == "cancelled" and "while it ran" in done["MESSAGE"]
    wait_for(lambda: [e for e in q.journal() if "nap-2" in e.get("MESSAGE", "")] or
             sum(redis("HLEN", k) for k in redis("KEYS", "qworker:inflight:*")) == 1, 10,
             "only nap-2 held")
    assert outcome_of(q, "nap-2") is None  # running its 60 s, not cancelled
    assert stats(redis)["cancelled"] == 3


def test_cancels_reach_a_worker_under_the_readme_s_acl_user(redis, start_qworker, workdir):
    """The README's least-privilege user lets the worker subscribe, read the set and look a
    cancel up: a cancel before the start, and one while a task runs, are both honoured."""
    acl_user(redis, "qw", "pw")
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, queues=QUEUES)
    assert ctl(conf, "cancel", "acl-early")[0] == 0
    push(redis, json.dumps({"id": "acl-early", "handler": "sleep", "args": 60}))
    q = start_qworker(redis.port, queues=QUEUES, log={"target": "stderr", "level": "info"},
                      redis={"username": "qw", "password": "pw"})
    q.wait_message("ready", 10)
    wait_for(lambda: any("task acl-early cancelled" in m for m in q.messages()), 10,
             "acl-early cancelled before it started")
    push(redis, json.dumps({"id": "acl-late", "handler": "sleep", "args": 60}))
    wait_for(lambda: redis("LLEN", "queue") == 0, 10, "acl-late taken")
    assert ctl(conf, "cancel", "acl-late")[0] == 0
    wait_for(lambda: any("task acl-late cancelled" in m and "while it ran" in m
                         for m in q.messages()), 10, "acl-late stopped")
    assert not loud_lines(q), loud_lines(q)  # nothing refused: no warning


def test_a_cancel_during_a_timeout_s_grace_ends_it_cancelled_and_not_retried(
        redis, start_qworker, workdir):
    # Its timeout sends SIGTERM, which the shell notes and outlives; the cancel that comes within
    # kill_grace decides the outcome: cancelled, never the retry a timeout earns.
    grace = 2.0 * SLOW  # the cancel must come within it: journal, qworkerctl, PUBLISH
    stubborn = {"name": "stubborn", "type": "exec", "timeout": 1, "kill_grace": grace,
                "max_attempts": 3,
                "command": ["/bin/sh", "-c", "trap 'echo termed' TERM; while :; do sleep 1; done"]}
    q = start_qworker(redis.port, handlers=[stubborn], queues=QUEUES)
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, handlers=[stubborn],
                        queues=QUEUES)
    q.wait_message("ready", 10)
    push(redis, json.dumps({"id": "slow-1", "handler": "stubborn", "args": []}))
    wait_for(lambda: q.journal(QWORKER_TASK_ID="slow-1", QWORKER_STREAM="stdout"), 10 * SLOW,
             "its timeout's SIGTERM")
    assert outcome_of(q, "slow-1") is None, "it outlives SIGTERM until the grace ends"
    assert ctl(conf, "cancel", "slow-1")[0] == 0
    done = wait_for(lambda: outcome_of(q, "slow-1"), grace + 5 * SLOW, "the completion")
    assert done["QWORKER_OUTCOME"] == "cancelled", done["MESSAGE"]
    s = stats(redis)
    assert s["cancelled"] == 1 and s.get("retried", 0) == 0, s
    assert redis("ZCARD", "qworker:schedule") == 0 and redis("LLEN", "queue") == 0


def test_a_cancel_during_a_drain_stops_the_task_and_lets_the_worker_exit(redis, start_qworker,
                                                                        workdir):
    # A stop waits up to shutdown_timeout (60 s) for running tasks; a cancel of the one still
    # running ends it, and with it the wait. It is not put back.
    q = start_qworker(redis.port, queues=QUEUES, worker={"shutdown_timeout": 60})
    conf = write_config(os.path.join(workdir, "ctl.conf"), redis.port, queues=QUEUES)
    q.wait_message("ready", 10)
    push(redis, json.dumps({"id": "long-1", "handler": "sleep", "args": 600}))
    q.wait_state("1 running, 0 waiting", 10)  # running, not only out of its queue
    q.signal(signal.SIGTERM)
    q.wait_message("shutdown: letting 1 running task(s) finish", 10)
    t0 = time.monotonic()
    assert ctl(conf, "cancel", "long-1")[0] == 0
    assert q.wait_exit(10) == 0
    print(f"\nthe draining worker exited {time.monotonic() - t0:.2f} s after the cancel")
    done = outcome_of(q, "long-1")
    assert done is not None and done["QWORKER_OUTCOME"] == "cancelled", done
    assert stats(redis)["cancelled"] == 1
    assert redis("LLEN", "queue") == 0 and redis("ZCARD", "qworker:schedule") == 0
    assert all(redis("HLEN", k) == 0 for k in redis("KEYS", "qworker:inflight:*"))

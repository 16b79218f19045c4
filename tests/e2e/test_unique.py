"""Unique tasks (issue 13, item 2): an envelope with "id" and "unique_for": S runs at most once per
S seconds per id across the workers sharing a Redis; a later copy within the window is not run,
is logged at notice with the outcome "duplicate" and counted; after the window the id runs again.
A copy that never ran (put back, or its claim refused) gives the id back, so nothing is lost."""

import json
import signal

import pytest

from harness import RedisServer, binary_exists, push, push_many, stats, wait_for
from test_faults import ACL_RULES, TEXT

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")


def copies(task_id, n, window, seconds=0.0):
    """n envelopes with the same id, each payload distinct (which copy ran is in its args)."""
    return [json.dumps({"id": task_id, "handler": "sleep", "args": seconds + k / 1e6,
                        "unique_for": window}) for k in range(n)]


def outcomes(workers, task_id):
    seen = {}
    for w in workers:
        for e in w.completions():
            if e["QWORKER_TASK_ID"] == task_id:
                seen[e["QWORKER_OUTCOME"]] = seen.get(e["QWORKER_OUTCOME"], 0) + 1
    return seen


def test_a_hundred_copies_run_once_across_two_workers_and_again_after_the_window(
        redis, start_qworker):
    workers = [start_qworker(redis.port, name=f"w{k}", worker={"id": f"w{k}", "fetch_batch": 7})
               for k in range(2)]
    for w in workers:
        w.wait_message("ready", 10)
    push_many(redis, copies("report-7", 100, window=600))
    wait_for(lambda: sum(outcomes(workers, "report-7").values()) >= 100, 20, "100 outcomes")
    assert outcomes(workers, "report-7") == {"ok": 1, "duplicate": 99}
    dup = [e for w in workers for e in w.completions("duplicate")][0]
    assert dup["PRIORITY"] == "5"  # notice
    assert "unique_for" in dup["MESSAGE"]
    s = stats(redis)
    assert s["succeeded"] == 1 and s["duplicate"] == 99 and s["queue:queue:duplicate"] == 99
    assert s.get("failed", 0) == 0 and redis("LLEN", "qworker:dead") == 0

    # The window is Redis's: once the claim is gone the id runs again, once. A short window of
    # its own: the hundred copies above have a long one, which no slow machine outlasts.
    push(redis, copies("report-8", 1, window=1.5)[0])
    wait_for(lambda: outcomes(workers, "report-8") == {"ok": 1}, 10, "report-8 to run")
    wait_for(lambda: redis("EXISTS", "qworker:unique:report-8") == 0, 10, "its window to end")
    push_many(redis, copies("report-8", 2, window=1.5))
    wait_for(lambda: sum(outcomes(workers, "report-8").values()) >= 3, 10, "two more outcomes")
    assert outcomes(workers, "report-8") == {"ok": 2, "duplicate": 1}
    # Without unique_for, two pushes of one id are two tasks.
    push(redis, json.dumps({"id": "plain", "handler": "sleep", "args": 0}),
         json.dumps({"id": "plain", "handler": "sleep", "args": 0}))
    wait_for(lambda: outcomes(workers, "plain").get("ok") == 2, 10, "both copies to run")


def test_a_copy_put_back_on_shutdown_gives_its_id_back(redis, start_qworker):
    q = start_qworker(redis.port, worker={"id": "w", "shutdown_timeout": 0.2})
    q.wait_message("ready", 10)
    push(redis, copies("long", 1, window=600, seconds=30)[0])
    wait_for(lambda: redis("EXISTS", "qworker:unique:long") == 1 and redis("LLEN", "queue") == 0,
             10, "the task to be claimed and taken")
    q.signal(signal.SIGTERM)
    assert q.wait_exit(15) == 0
    # Back in its queue, its claim given back: the next worker runs it, not a duplicate.
    assert redis("LLEN", "queue") == 1 and redis("EXISTS", "qworker:unique:long") == 0
    r = start_qworker(redis.port, name="again", worker={"id": "w2"})
    r.wait_message("ready", 10)
    # Taken again: running (30 s) under a claim of its own, or (had the claim stayed) a duplicate.
    wait_for(lambda: redis("HLEN", "qworker:inflight:w2") == 1 or outcomes([r], "long"), 10,
             "the task taken again")
    assert redis("HLEN", "qworker:inflight:w2") == 1 and outcomes([r], "long") == {}
    assert redis("EXISTS", "qworker:unique:long") == 1


def test_an_invalid_envelope_asking_for_uniqueness_is_refused_with_a_reason(redis, start_qworker):
    q = start_qworker(redis.port, log=TEXT)
    q.wait_message("ready", 10)
    push(redis, json.dumps({"handler": "sleep", "args": 0, "unique_for": 5}),
         json.dumps({"id": "x", "handler": "sleep", "args": 0, "unique_for": "5"}),
         json.dumps({"id": "y", "handler": "nope", "args": 0, "unique_for": 5}))
    wait_for(lambda: redis("LLEN", "qworker:dead") == 3, 10, "three dead letters")
    reasons = sorted(json.loads(d)["reason"] for d in redis("LRANGE", "qworker:dead", 0, -1))
    assert any("needs an \"id\"" in r for r in reasons), reasons
    assert any("must be a number of seconds" in r for r in reasons), reasons
    # A delayed one runs unchecked when its delay is up: its claim covers the delay too.
    push(redis, json.dumps({"id": "late", "handler": "sleep", "args": 0, "delay": 30,
                            "unique_for": 1}))
    wait_for(lambda: redis("EXISTS", "qworker:unique:late") == 1, 10, "the delayed one claimed")
    assert redis("PTTL", "qworker:unique:late") > 25000
    # Refused, "y" never ran: it never held the id, and a good copy runs.
    assert redis("EXISTS", "qworker:unique:y") == 0
    push(redis, json.dumps({"id": "y", "handler": "sleep", "args": 0, "unique_for": 5}))
    wait_for(lambda: stats(redis).get("succeeded", 0) == 1, 10, "the good copy of y to run")
    assert stats(redis).get("duplicate", 0) == 0


def test_the_window_s_name_written_with_escapes_is_the_same_field(redis, start_qworker):
    q = start_qworker(redis.port)
    q.wait_message("ready", 10)
    escaped = '{"id": "esc", "handler": "sleep", "args": 0, "unique\\u005ffor": 60}'
    assert json.loads(escaped)["unique_for"] == 60
    push(redis, escaped, escaped.replace('"args": 0', '"args": 0.0'))
    wait_for(lambda: sum(outcomes([q], "esc").values()) == 2, 10, "both copies")
    assert outcomes([q], "esc") == {"ok": 1, "duplicate": 1}


def test_a_claim_redis_refuses_puts_the_task_back_said_once_and_runs_it_once_allowed(
        workdir, start_qworker):
    redis = RedisServer(workdir).start()
    try:
        rules = [r if r != "~qworker:*" else "~qworker:[^u]*" for r in ACL_RULES]
        assert rules != ACL_RULES
        redis("ACL", "SETUSER", "qw", *rules, ">pw")
        q = start_qworker(redis.port, log=TEXT, redis={"username": "qw", "password": "pw"})
        q.wait_message("ready", 10)
        push(redis, copies("guarded", 1, window=60)[0])
        q.wait_message("NOPERM", 10)
        # Refused again and again (the task goes back each time, with a growing wait): said once.
        wait_for(lambda: stats(redis).get("requeued", 0) >= 4, 10, "four refusals")
        assert stats(redis).get("succeeded", 0) == 0
        redis("ACL", "SETUSER", "qw", "~qworker:unique:*")
        wait_for(lambda: stats(redis).get("succeeded", 0) == 1, 10, "the task to run")
        said = [m for m in q.messages() if "NOPERM" in m or "claimed again" in m]
        assert len(said) == 2 and "NOPERM" in said[0] and "claimed again" in said[1], said
        assert redis("LLEN", "queue") == 0
        assert all(redis("HLEN", k) == 0 for k in redis("KEYS", "qworker:inflight:*"))
        assert stats(redis).get("duplicate", 0) == 0
    finally:
        redis.stop()


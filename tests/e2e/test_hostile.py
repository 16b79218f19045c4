"""Hostile input (issue 10): whoever can push controls every payload. What they push must not
take the worker's memory, stall its queues, or be lost."""

import hashlib
import json

import pytest

from harness import SLOW, assert_stores_empty, push_many, sleep_tasks, task_ids, wait_all_ran

TEXT = {"level": "info", "target": "stderr"}
BIG = 100 << 20


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/status")


@pytest.mark.skipif(SLOW > 1, reason="a load test (1 GB through Redis): on the plain build only")
def test_payloads_over_max_payload_never_leave_redis(redis, start_qworker):
    # Ten 100 MB payloads at the head of the queue (popped first), 1,000 good tasks behind them.
    big = [bytes([i]) * (BIG - 1) + b"\xff" for i in range(10)]
    ids = task_ids("g", 1000)
    push_many(redis, big)
    push_many(redis, sleep_tasks(ids))
    q = start_qworker(redis.port, log=TEXT,
                      worker={"max_payload": 1 << 20, "concurrency": 100, "id": "w"})
    assert set(wait_all_ran([q], ids, 60).values()) == {1}
    letters = [json.loads(x) for x in redis("LRANGE", "qworker:dead", 0, -1)]
    assert len(letters) == 10
    kept = set()
    for letter in letters:
        assert letter["reason"] == "too_large" and letter["length"] == BIG
        assert letter["queue"] == "queue" and letter["max_payload"] == 1 << 20
        # Whole: the same bytes, checked in Redis rather than sent back through the test.
        kept.add(redis("EVAL", "return redis.sha1hex(redis.call('HGET', KEYS[1], ARGV[1]))", 1,
                       "qworker:dead:payloads", letter["payload_ref"]).decode())
    assert kept == {hashlib.sha1(b).hexdigest() for b in big}
    assert q.stderr_text().count("too large (104857600 bytes, max_payload is 1048576)") == 10
    peak = peak_rss_kb(q.pid)
    print(f"qworker peak RSS: {peak / 1024:.1f} MB")
    assert peak < 64 * 1024, f"peak RSS {peak / 1024:.1f} MB with ten 100 MB payloads queued"
    assert q.stop() == 0
    assert_stores_empty(redis, dead_ok=True)

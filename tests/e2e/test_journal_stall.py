"""A journald that stops reading (stalled on a slow disk, say) blocks whoever logs to it once its
socket's queue is full. qworker logs completions from its reporter thread. That must not stop
its heartbeat: other workers would then take its tasks as a dead worker's, and its own fence
would stop the tasks it runs. Only a journald this test started is stopped."""

import json
import time
import signal

import pytest

from harness import binary_exists, push, push_many, stats, wait_for

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")

TTL = 2


def test_a_stalled_journal_neither_expires_the_heartbeat_nor_fences_running_tasks(
        redis, start_qworker, journald):
    if journald.proc is None:
        pytest.skip("the machine's own journald runs here: this test stops only one it started")
    q = start_qworker(redis.port, worker={"id": "w", "heartbeat_ttl": TTL, "concurrency": 100})
    q.wait_message("ready", 10)
    push(redis, json.dumps({"id": "long-1", "handler": "sleep", "args": 4 * TTL}))
    q.wait_state("1 running", 10)
    # More completions than the journal socket's queue holds (net.unix.max_dgram_qlen), so
    # that the thread logging them waits for certain.
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        qlen = int(f.read())
    ids = [f"t{i}" for i in range(max(300, 2 * qlen))]
    journald.proc.send_signal(signal.SIGSTOP)
    try:
        push_many(redis, [json.dumps({"id": i, "handler": "sleep", "args": 0}) for i in ids])
        # Completions are logged one line each: the journal's queue fills at once, and the
        # thread logging them waits. Held for two heartbeat TTLs, the key must never lapse.
        wait_for(lambda: redis("LLEN", "queue") == 0, 10, "the tasks taken")
        lowest = TTL * 1000
        deadline = time.monotonic() + 2 * TTL
        while time.monotonic() < deadline:
            pttl = redis("PTTL", "qworker:worker:w")
            assert pttl > 0, "the heartbeat expired while the journal was stalled"
            lowest = min(lowest, pttl)
            time.sleep(0.05)
        print(f"\nlowest heartbeat TTL left during the stall: {lowest} ms of {TTL * 1000}")
        # The stall held the reporter: not everything was recorded while journald was stopped.
        assert stats(redis).get("succeeded", 0) < len(ids), "the journal never stalled the logging"
    finally:
        journald.proc.send_signal(signal.SIGCONT)
    done = q.wait_completions(len(ids) + 1, 20)
    by_id = {}
    for e in done:
        by_id.setdefault(e["QWORKER_TASK_ID"], []).append(e["QWORKER_OUTCOME"])
    assert sorted(by_id) == sorted(ids + ["long-1"])
    assert all(outcomes == ["ok"] for outcomes in by_id.values()), \
        {i: o for i, o in by_id.items() if o != ["ok"]}
    assert stats(redis)["succeeded"] == len(ids) + 1
    assert not any("heartbeat has not reached redis" in m for m in q.messages())

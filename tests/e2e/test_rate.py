"""Rate limits (issue 13, item 1): a handler's rate_limit holds across every worker sharing a
Redis. Three workers, one handler limited to 50 tasks a second (burst 10), 1,000 tasks queued:
the queue shrinks at 50 a second within 5% over 10 s, the tasks stay in Redis meanwhile (no
worker holds more than the burst), and each task runs exactly once."""

import json
import signal
import time

import pytest

from harness import binary_exists, push_many, task_ids, wait_all_ran, wait_for, write_config

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")

N = 1000
RATE = 50.0
BURST = 10
TEXT = {"level": "info", "target": "stderr"}


def limited(rate_limit=RATE):
    h = {"name": "limited", "type": "sleep"}
    if rate_limit:
        h.update(rate_limit=rate_limit, rate_burst=BURST)
    return [h]


def test_three_workers_share_one_handler_s_rate_limit(redis, start_qworker):
    ids = task_ids("rate", N)
    # What a worker holds is what it took and has not recorded yet: a few at the limit, a
    # fetch_batch without it.
    push_many(redis, [json.dumps({"id": i, "handler": "limited", "args": 0}) for i in ids])
    workers = [start_qworker(redis.port, name=f"w{k}", log=TEXT, handlers=limited(),
                             worker={"id": f"w{k}", "fetch_batch": 100, "concurrency": 200})
               for k in range(3)]
    for w in workers:
        w.wait_message("ready", 10)

    # The burst goes at once; the rate is measured after it, over 10 s of the test's clock.
    wait_for(lambda: redis("LLEN", "queue") <= N - 2 * BURST, 10, "the burst to be taken")
    t0, left0 = time.monotonic(), redis("LLEN", "queue")
    most_held = 0
    while time.monotonic() - t0 < 10.0:
        held = [redis("HLEN", f"qworker:inflight:w{k}") for k in range(3)]
        most_held = max(most_held, *held)
        time.sleep(0.05)
    t1, left1 = time.monotonic(), redis("LLEN", "queue")
    rate = (left0 - left1) / (t1 - t0)
    print(f"\n{left0 - left1} taken in {t1 - t0:.2f} s: {rate:.1f}/s; at most {most_held} held "
          f"by one worker")
    assert abs(rate - RATE) <= 0.05 * RATE, f"{rate:.1f} tasks/s is not {RATE} within 5%"
    assert most_held <= BURST, f"a worker held {most_held} tasks, more than the burst {BURST}"
    assert left1 > 0, "the queue ran dry before the measurement ended"

    # A reload lifts the limit: the rest run at once, each task exactly once in all.
    for k, w in enumerate(workers):
        write_config(w.config, redis.port, log=TEXT, handlers=limited(None),
                     worker={"id": f"w{k}", "fetch_batch": 100, "concurrency": 200})
        w.signal(signal.SIGHUP)
    seen = wait_all_ran(workers, ids, 30)
    twice = [i for i, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} tasks ran twice, e.g. {twice[:5]}"
    assert set(seen) == set(ids)


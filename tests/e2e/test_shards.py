"""Sharding (issue 12): queues split over independent Redis servers, one worker per server (as
qworker@NAME instances run). Each shard's tasks run on its own worker, each exactly once, and a
shard whose Redis dies stops only its own tasks: the other shard goes on, and the dead one's
tasks run once its Redis is back."""

import pytest

from harness import (RedisServer, assert_stores_empty, binary_exists, push_many, sleep_tasks,
                     stats, task_ids, wait_all_ran, wait_for)

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")


def test_two_shards_run_their_own_tasks_and_survive_each_other(workdir, start_qworker):
    shards = [RedisServer(workdir, extra=["--appendonly", "yes", "--appendfsync", "always"])
              .start() for _ in range(2)]
    try:
        workers = [start_qworker(r.port, name=f"shard{i}", log={"target": "stderr"},
                                 worker={"id": f"shard{i}", "concurrency": 50})
                   for i, r in enumerate(shards)]
        for w in workers:
            wait_for(lambda w=w: "ready" in w.stderr_text(), 10, "a shard's worker ready")
        ids = [task_ids(f"s{i}", 500) for i in range(2)]
        for r, mine in zip(shards, ids):
            push_many(r, sleep_tasks(mine, 0.01))
        for w, mine in zip(workers, ids):
            assert set(wait_all_ran([w], mine, 30).values()) == {1}
        # Each worker ran its own shard's tasks and nothing of the other's.
        assert not set(ids[1]) & set(workers[0].ok_ids())
        assert not set(ids[0]) & set(workers[1].ok_ids())

        # Shard 0's Redis dies: shard 1 goes on as if nothing happened.
        shards[0].proc.kill()
        shards[0].proc.wait()
        shards[0]._client = None
        more = [task_ids(f"t{i}", 300) for i in range(2)]
        push_many(shards[1], sleep_tasks(more[1], 0.01))
        assert set(wait_all_ran([workers[1]], ids[1] + more[1], 30).values()) == {1}

        # Back (from its AOF): shard 0's new tasks run on its own worker.
        shards[0].start()
        push_many(shards[0], sleep_tasks(more[0], 0.01))
        assert set(wait_all_ran([workers[0]], ids[0] + more[0], 30).values()) == {1}
        for r, n in zip(shards, (800, 800)):
            wait_for(lambda r=r, n=n: stats(r).get("succeeded", 0) == n, 10, "every record")
            assert_stores_empty(r)
    finally:
        for r in shards:
            r.stop()

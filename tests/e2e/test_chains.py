"""Chains (issue 13, item 6): an envelope's "then" is pushed when the task ends ok, by the same
script that records it, so a crash can never leave a step recorded and its next one unpushed, or
push it twice. Steps write to a ledger Redis of their own (redis-cli on a unix socket)."""

import json
import os
import signal

import pytest

from harness import RedisServer, assert_stores_empty, binary_exists, wait_for

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")


@pytest.fixture
def ledger(workdir):
    sock = os.path.join(workdir, "ledger.sock")
    r = RedisServer(workdir, extra=["--unixsocket", sock, "--unixsocketperm", "777"]).start()
    r.sock = sock
    yield r
    r.stop()


def steps(ledger):
    return [x.decode() for x in ledger("LRANGE", "ledger", 0, -1)]


def config(ledger):
    return {"worker": {"id": "w", "concurrency": 10},
            "queues": [{"name": "queue", "handler": "sleep"}, {"name": "q2", "handler": "sleep"}],
            "handlers": [{"name": "ledger", "type": "exec",
                          "command": ["/usr/bin/redis-cli", "-s", ledger.sock, "RPUSH", "ledger"]}]}


def step(name, then=None, **extra):
    e = {"id": name, "handler": "ledger", "args": [name], **extra}
    if then is not None:
        e["then"] = then
    return e


def test_a_chain_runs_step_by_step_on_the_queues_it_names(redis, ledger, start_qworker):
    q = start_qworker(redis.port, **config(ledger))
    chain = step("one", step("two", step("three"), queue="q2"))
    redis("LPUSH", "queue", json.dumps(chain))
    wait_for(lambda: steps(ledger) == ["one", "two", "three"], 10, "the three steps in order")
    done = {e["QWORKER_TASK_ID"]: e["QWORKER_QUEUE"] for e in q.completions("ok")}
    assert done == {"one": "queue", "two": "q2", "three": "q2"}  # no "queue": as its parent
    assert_stores_empty(redis, queues=("queue", "q2"))


def test_a_step_that_fails_pushes_nothing_further(redis, ledger, start_qworker):
    q = start_qworker(redis.port, **config(ledger), extra="")
    redis("LPUSH", "queue", json.dumps({"id": "bad", "handler": "nope-is-not-a-handler",
                                        "then": step("after")}))
    wait_for(lambda: redis("LLEN", "qworker:dead") == 1, 10, "the dead letter")
    redis("LPUSH", "queue", json.dumps(step("marker")))
    wait_for(lambda: "marker" in steps(ledger), 10, "a later task")
    assert "after" not in steps(ledger)
    assert q.completions("invalid")


def test_a_worker_killed_between_steps_loses_none_and_doubles_none(redis, ledger, start_qworker):
    """The middle step sleeps; the worker is SIGKILLed while it runs. Restarted, it puts its
    leftovers back: the middle step runs again (at-least-once: a step cut off runs again from
    its start), and the first and last steps run exactly once."""
    cfg = config(ledger)
    q = start_qworker(redis.port, **cfg)
    middle = {"id": "middle", "handler": "sleep", "args": 3, "then": step("last")}
    redis("LPUSH", "queue", json.dumps(step("first", middle)))
    # The middle step in flight, alone: the first one recorded (its ledger line comes before
    # its record, and a kill between the two would rightly run it again).
    def middle_alone():
        flat = redis("HGETALL", "qworker:inflight:w")  # field: id, value: queue NUL payload
        return len(flat) == 2 and json.loads(flat[1].split(b"\0", 1)[1])["id"] == "middle"
    wait_for(middle_alone, 10, "the middle step running, alone")
    assert steps(ledger) == ["first"]
    q.signal(signal.SIGKILL)
    q.wait_exit(10)
    again = start_qworker(redis.port, name="again", **cfg)
    wait_for(lambda: steps(ledger) == ["first", "last"], 20, "the last step, once")
    assert [e["QWORKER_TASK_ID"] for e in again.completions("ok")] == ["middle", "last"]
    assert_stores_empty(redis)


def test_a_next_step_cannot_write_into_other_keys_or_stop_the_worker(redis, ledger,
                                                                    start_qworker):
    """"then" comes from a payload: a "queue" naming one of qworker's own keys is refused when
    the task is taken; one naming a key of another type costs that step a dead letter, not the
    batch it is recorded in (which would keep the worker from taking anything more)."""
    q = start_qworker(redis.port, **config(ledger))
    redis("HSET", "a-hash", "someone's", "data")
    redis("LPUSH", "queue", json.dumps(step("into-ours", step("x", queue="qworker:stats"))))
    redis("LPUSH", "queue", json.dumps(step("into-hash", step("y", queue="a-hash"))))
    wait_for(lambda: redis("LLEN", "qworker:dead") == 2, 10, "two dead letters")
    letters = {json.loads(x)["id"]: json.loads(x)["reason"]
               for x in redis("LRANGE", "qworker:dead", 0, -1)}
    assert "one of qworker's own keys" in letters["into-ours"], letters
    assert letters["y"] == "chain_queue_refused", letters
    assert redis("TYPE", "a-hash") == "hash" and redis("HLEN", "a-hash") == 1
    assert redis("TYPE", "qworker:stats") == "hash"
    redis("LPUSH", "queue", json.dumps(step("after")))
    wait_for(lambda: "after" in steps(ledger), 10, "a task after them")
    assert steps(ledger).count("into-hash") == 1 and "into-ours" not in steps(ledger)
    q.stop()

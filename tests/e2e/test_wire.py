"""The Lua scripts, each alone on a real redis-server (as build/lua/ holds them, includes expanded),
against the golden vectors of tests/wire/vectors.json that src/wire.c is checked against too
(tests/unit/test_wire.c): both sides of every byte format pinned to the same bytes."""

import base64
import json
import os

import pytest

from harness import ROOT

LUA = os.path.join(ROOT, os.environ.get("QWORKER_LUA_DIR", "build/lua"))
VECTORS = json.load(open(os.path.join(ROOT, "tests", "wire", "vectors.json"), encoding="utf-8"))


def script(name):
    with open(os.path.join(LUA, f"{name}.lua")) as f:
        return f.read()


def run(redis, name, keys, args):
    return redis("EVAL", script(name), len(keys), *keys, *args)


def test_reap_writes_the_golden_recovered_wrappers(redis):
    for i, v in enumerate(VECTORS["recovered"]):
        payload = base64.b64decode(v["payload_base64"])
        redis("HSET", "qworker:inflight:gone", f"id{i}", b"queue\x00" + payload)
    redis("SADD", "qworker:workers", "gone")
    got = run(redis, "reap", ["qworker:workers", "qworker:dead"], ["qworker", "me", 1000])
    assert got == [b"gone", len(VECTORS["recovered"]), 0]
    items = set(redis("LRANGE", "queue", 0, -1))
    assert items == {v["recovered"].encode() for v in VECTORS["recovered"]}
    assert redis("SISMEMBER", "qworker:workers", "gone") == 0


def test_due_puts_the_golden_schedule_members_back_as_their_wrappers(redis):
    for v in VECTORS["encoded"]:
        redis("ZADD", "qworker:schedule", 1, v["schedule_member"])
    moved, _ = run(redis, "due", ["qworker:schedule", "qworker:dead"], [10, 1000])
    assert moved == len(VECTORS["encoded"])
    assert set(redis("LRANGE", "queue", 0, -1)) == {v["wrapper"].encode()
                                                   for v in VECTORS["encoded"]}
    assert redis("ZCARD", "qworker:schedule") == 0


def test_due_sends_a_member_it_cannot_read_to_the_dead_list(redis):
    redis("ZADD", "qworker:schedule", 1, "not json")
    redis("SET", "elsewhere", "a string")
    redis("ZADD", "qworker:schedule", 2, json.dumps({"queue": "elsewhere", "task": "5"}))
    run(redis, "due", ["qworker:schedule", "qworker:dead"], [10, 1000])
    dead = [json.loads(d) for d in redis("LRANGE", "qworker:dead", 0, -1)]
    assert sorted(d["reason"] for d in dead) == ["bad_schedule_entry"] * 2
    assert redis("GET", "elsewhere") == b"a string"


FETCH_KEYS = ["qworker:inflight:w", "qworker:dead", "qworker:dead:payloads", "qworker:stats",
              "qworker:paused", "bad", "queue"]


def fetch_args(n, max_payload=1 << 20, max_bytes=8 << 20, limits=""):
    return [n, max_payload, max_bytes, "w", limits] + [f"i{k}" for k in range(1, n + 1)]


def test_fetch_skips_a_queue_of_the_wrong_type_and_serves_the_next(redis):
    redis("SET", "bad", "x")
    redis("LPUSH", "queue", "a", "b")
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(3))
    assert got[:3] == [2, 1, 0] and got[3] == 0 and got[4].startswith(b"WRONGTYPE")
    assert got[5:] == [1, b"a", 1, b"b"]
    assert redis("HGETALL", "qworker:inflight:w") == [b"i1", b"queue\x00a", b"i2", b"queue\x00b"]
    assert redis("GET", "bad") == b"x"


@pytest.mark.parametrize("key", FETCH_KEYS[:5])
def test_fetch_refuses_whole_when_a_key_it_writes_is_the_wrong_type(redis, key):
    redis("SET", key, "x")
    redis("LPUSH", "queue", "a", "b" * 100)
    with pytest.raises(RuntimeError, match=f"WRONGTYPE {key}"):
        run(redis, "fetch", FETCH_KEYS, fetch_args(2, max_payload=10))
    assert redis("LRANGE", "queue", 0, -1) == [b"b" * 100, b"a"]


def test_fetch_skips_a_paused_queue_untouched_and_says_so(redis):
    redis("LPUSH", "bad", "p1")  # a list this time: the first queue, paused
    redis("LPUSH", "queue", "a")
    redis("SADD", "qworker:paused", "bad")
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(3))
    assert got[:5] == [2, 1, 0, 0, b"PAUSED bad is paused"] and got[5:] == [1, b"a"]
    assert redis("LRANGE", "bad", 0, -1) == [b"p1"]
    redis("SREM", "qworker:paused", "bad")
    assert run(redis, "fetch", FETCH_KEYS, fetch_args(3))[3:] == [0, b"p1"]


def test_fetch_is_refused_whole_at_maxmemory(redis):
    redis("LPUSH", "queue", "a")
    redis("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(RuntimeError, match="^OOM"):
            run(redis, "fetch", FETCH_KEYS, fetch_args(1))
    finally:
        redis("CONFIG", "SET", "maxmemory", "0")
    assert redis("LLEN", "queue") == 1


def test_fetch_keeps_a_payload_over_max_payload_in_redis_whole_and_hands_out_the_rest(redis):
    big = bytes(range(256)) * 40  # 10,240 bytes, not UTF-8
    redis("RPUSH", "queue", "c", big, "a")  # "a" is popped first
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(3, max_payload=10000))
    # ("bad", empty here, is examined first.) The too large one takes its ref from the end of
    # the ids; the tasks from the front.
    assert got == [2, 0, 1, 1, b"i3", len(big), 1, b"a", 1, b"c"]
    assert redis("HGET", "qworker:dead:payloads", "i3") == big
    letter = json.loads(redis("LINDEX", "qworker:dead", 0))
    assert letter["reason"] == "too_large" and letter["length"] == len(big)
    assert letter["max_payload"] == 10000 and letter["queue"] == "queue"
    assert letter["payload_ref"] == "i3" and letter["worker"] == "w"
    assert redis("HKEYS", "qworker:inflight:w") == [b"i1", b"i2"]
    stats = dict(zip(*[iter(redis("HGETALL", "qworker:stats"))] * 2))
    assert stats[b"dead"] == b"1" and stats[b"queue:queue:dead"] == b"1"


def test_fetch_stops_at_max_bytes_and_leaves_the_rest_in_order(redis):
    redis("RPUSH", "queue", *[f"{k}".encode() * 100 for k in range(9, -1, -1)])  # "0..." first
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(10, max_bytes=350))
    assert got[:3] == [2, 0, 0]
    assert got[4::2] == [b"0" * 100, b"1" * 100, b"2" * 100]
    # What was popped past the bound is back, as it was.
    assert redis("LRANGE", "queue", 0, -1) == [f"{k}".encode() * 100 for k in range(9, 2, -1)]
    assert redis("HLEN", "qworker:inflight:w") == 3
    # The first task goes even when it alone is over the bound.
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(10, max_bytes=50))
    assert got[3:] == [1, b"3" * 100]


RECORD_KEYS = ["qworker:inflight:w", "qworker:stats", "qworker:dead", "qworker:schedule",
               "qworker:recorded:w", "queue"]


def record_args(tag):
    # One group of two acknowledged tasks of queue 6; then a dead letter, a retry, a requeue.
    return [tag, "1", "1", "6", "2", "ok1", "ok2",
            "d1", "6", "d", "", "DEAD",
            "r1", "6", "r", "1234", "RETRY",
            "q1", "6", "q", "", "AGAIN"]


def stats(redis):
    flat = redis("HGETALL", "qworker:stats")
    return {k.decode(): int(v) for k, v in zip(flat[::2], flat[1::2])}


def test_record_applies_a_batch_once_whatever_the_resends(redis):
    for i in ("ok1", "ok2", "d1", "r1", "q1"):
        redis("HSET", "qworker:inflight:w", i, b"queue\x00x")
    assert run(redis, "record", RECORD_KEYS, record_args("t:1")) == [5, 0, 0]
    want = {"processed": 4, "succeeded": 2, "failed": 2, "dead": 1, "retried": 1, "requeued": 1,
            "queue:queue:processed": 4, "queue:queue:succeeded": 2, "queue:queue:failed": 2,
            "queue:queue:dead": 1, "queue:queue:retried": 1, "queue:queue:requeued": 1}
    assert stats(redis) == want
    assert redis("LRANGE", "qworker:dead", 0, -1) == [b"DEAD"]
    assert redis("ZRANGE", "qworker:schedule", 0, -1, "WITHSCORES") == [b"RETRY", b"1234"]
    assert redis("LRANGE", "queue", 0, -1) == [b"AGAIN"]
    assert redis("HLEN", "qworker:inflight:w") == 0
    # Its reply lost, the same batch comes again: nothing twice.
    assert run(redis, "record", RECORD_KEYS, record_args("t:1")) == [0, 0, 1]
    # Under another tag (a later process), tasks no longer in flight are not recorded again.
    assert run(redis, "record", RECORD_KEYS, record_args("t:2")) == [0, 5, 0]
    assert stats(redis) == want
    assert redis("LLEN", "qworker:dead") == 1 and redis("LLEN", "queue") == 1


def test_record_counts_what_did_not_run_and_gives_back_only_its_own_claims(redis):
    for i in ("n1", "n2", "q1", "q2", "d1", "d2"):
        redis("HSET", "qworker:inflight:w", i, b"queue\x00x")
    redis("SET", "qworker:unique:a", "q1")
    redis("SET", "qworker:unique:b", "someone-else")
    redis("HSET", "qworker:unique:c", "f", "v")  # not ours to touch, nor a reason to refuse
    args = ["t:1", "1", "0",
            "n1", "6", "n", "duplicate", "",
            "n2", "6", "n", "cancelled", "",
            "q1", "6", "q", "qworker:unique:a", "A",   # its own claim: given back
            "q2", "6", "q", "qworker:unique:b", "B",   # another copy's by now: kept
            "d1", "6", "d", "qworker:unique:c", "D1",  # a hash: left alone
            "d2", "6", "d", "qworker:unique:none", "D2"]
    assert run(redis, "record", RECORD_KEYS, args) == [6, 0, 0]
    s = stats(redis)
    assert s["duplicate"] == 1 and s["cancelled"] == 1 and s["queue:queue:duplicate"] == 1
    assert "succeeded" not in s and s["requeued"] == 2 and s["dead"] == 2
    assert redis("EXISTS", "qworker:unique:a") == 0
    assert redis("GET", "qworker:unique:b") == b"someone-else"
    assert redis("HGET", "qworker:unique:c", "f") == b"v"
    assert redis("LRANGE", "queue", 0, -1) == [b"A", b"B"]
    assert redis("HLEN", "qworker:inflight:w") == 0


@pytest.mark.parametrize("key", RECORD_KEYS)
def test_record_writes_nothing_when_a_key_is_the_wrong_type(redis, key):
    for i in ("ok1", "ok2", "d1", "r1", "q1"):
        redis("HSET", "qworker:inflight:w", i, b"queue\x00x")
    if key == "qworker:inflight:w":
        redis("RENAME", key, "saved")
    redis("SADD", key, "wrong")
    with pytest.raises(RuntimeError, match=f"^WRONGTYPE {key} is a set"):
        run(redis, "record", RECORD_KEYS, record_args("t:1"))
    for other in RECORD_KEYS:
        if other != key:
            assert redis("TYPE", other) in ("none", "hash"), f"{other} was written"
    assert redis("HLEN", "qworker:inflight:w" if key != "qworker:inflight:w" else "saved") == 5


def test_requeue_sends_an_entry_whose_queue_is_not_a_list_to_the_dead_list(redis):
    redis("SET", "gone-wrong", "x")
    redis("HSET", "qworker:inflight:w", "i1", b"gone-wrong\x00payload", "i2", b"queue\x00ok")
    assert run(redis, "requeue", ["qworker:inflight:w", "qworker:dead"], [1000]) == [2, 0]
    dead = json.loads(redis("LINDEX", "qworker:dead", 0))
    assert (dead["payload"], dead["reason"], dead["queue"], dead["id"]) == \
        ("payload", "wrong_type", "gone-wrong", "i1")
    assert redis("LRANGE", "queue", 0, -1) == [b'{"payload":"ok","recoveries":1}']
    assert redis("GET", "gone-wrong") == b"x"


def heartbeat(token):
    return json.dumps({"host": "h", "pid": 1, "token": token})


def test_claim_takes_an_id_only_if_the_heartbeat_is_as_seen(redis):
    keys = ["qworker:worker:w", "qworker:workers"]
    assert run(redis, "claim", keys, [heartbeat("a"), 60000, "w", ""]) == 0
    assert run(redis, "claim", keys, [heartbeat("b"), 60000, "w", ""]) == -1
    assert json.loads(redis("GET", keys[0]))["token"] == "a"
    assert run(redis, "claim", keys, [heartbeat("b"), 60000, "w", heartbeat("a")]) == 0
    assert redis("SMEMBERS", keys[1]) == [b"w"]


def test_beat_refreshes_its_own_heartbeat_and_rebuilds_it_after_a_flush(redis):
    keys = ["qworker:worker:w", "qworker:workers"]
    assert run(redis, "beat", keys, [heartbeat("a"), 60000, "w", "a"]) == 1
    redis("SET", keys[0], heartbeat("other"))
    assert run(redis, "beat", keys, [heartbeat("a"), 60000, "w", "a"]) == 0
    assert json.loads(redis("GET", keys[0]))["token"] == "other"
    redis("FLUSHALL")
    assert run(redis, "beat", keys, [heartbeat("a"), 60000, "w", "a"]) == 1
    assert redis("SMEMBERS", keys[1]) == [b"w"] and 0 < redis("PTTL", keys[0]) <= 60000


def test_heartbeat_scripts_may_write_past_maxmemory(redis):
    redis("CONFIG", "SET", "maxmemory", "1")
    try:
        assert run(redis, "beat", ["qworker:worker:w", "qworker:workers"],
                   [heartbeat("a"), 60000, "w", "a"]) == 1
    finally:
        redis("CONFIG", "SET", "maxmemory", "0")


def test_release_gives_the_id_back_only_with_nothing_in_flight(redis):
    keys = ["qworker:worker:w", "qworker:workers", "qworker:inflight:w", "qworker:recorded:w"]
    redis("SET", keys[0], heartbeat("a"))
    redis("SADD", keys[1], "w")
    redis("SET", keys[3], "a:1")
    redis("HSET", keys[2], "i1", b"queue\x00x")
    assert run(redis, "release", keys, ["w", "a"]) == 0
    redis("DEL", keys[2])
    assert run(redis, "release", keys, ["w", "b"]) == 0  # not ours
    assert run(redis, "release", keys, ["w", "a"]) == 1
    assert redis("EXISTS", keys[0], keys[3]) == 0 and redis("SCARD", keys[1]) == 0


def test_rescue_puts_back_what_a_lost_fetch_moved_and_only_that(redis):
    redis("HSET", "qworker:inflight:w", "lost", b"queue\x00a\x00b", "kept", b"queue\x00c")
    assert run(redis, "rescue", ["qworker:inflight:w", "qworker:dead"], ["lost", "never"]) == 1
    assert redis("LRANGE", "queue", 0, -1) == [b"a\x00b"]
    assert redis("HKEYS", "qworker:inflight:w") == [b"kept"]


def test_fetch_deals_with_one_huge_payload_a_call_and_leaves_the_rest_in_order(redis):
    # A too large payload costs Redis its copy: it counts against max_bytes like any other.
    huge = [bytes([65 + i]) * 20000 for i in range(3)]
    redis("RPUSH", "queue", "a", *reversed(huge))  # huge[0] is popped first, "a" last
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(4, max_payload=10000, max_bytes=15000))
    assert got[:6] == [2, 0, 1, 1, b"i4", 20000] and len(got) == 6
    assert redis("LRANGE", "queue", 0, -1) == [b"a", huge[2], huge[1]]
    assert redis("HGET", "qworker:dead:payloads", "i4") == huge[0]


def limits(rate, burst, handler="slow", queue_handler="slow"):
    return json.dumps({"k": "qworker:rate:", "h": {handler: [rate, burst]},
                       "q": {"bad": "sleep", "queue": queue_handler}})


def test_fetch_takes_a_limited_handler_s_tasks_only_with_a_token_and_leaves_the_rest_in_order(
        redis):
    redis("LPUSH", "queue", "1", "2", "3", "4", "5")
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(5, limits=limits(0.001, 2)))
    # Queue 0 ("bad") is empty; queue 1 hands out two (the burst), then says when the next is due.
    assert got[:3] == [2, 1, 0]
    assert got[3] == 1 and got[4].startswith(b"THROTTLED ") and got[4].endswith(b" slow")
    assert 900000 <= int(got[4].split()[1]) <= 1000000  # a token in 1,000 s at 0.001 a second
    assert got[5:] == [1, b"1", 1, b"2"]
    assert redis("LRANGE", "queue", 0, -1) == [b"5", b"4", b"3"]
    assert redis("HLEN", "qworker:inflight:w") == 2
    # The bucket is shared: any worker's next fetch finds it empty.
    again = run(redis, "fetch", FETCH_KEYS, fetch_args(5, limits=limits(0.001, 2)))
    assert again[1] == 1 and len(again) == 5
    assert 0 < redis("PTTL", "qworker:rate:slow") <= 2000 * 1000 + 1000


def test_fetch_charges_the_handler_an_envelope_names_not_its_queue_s(redis):
    delayed = json.dumps({"handler": "slow", "args": 1, "delay": 5})
    retried = json.dumps({"payload": json.dumps({"handler": "slow", "args": 1, "delay": 5}),
                          "attempt": 2, "ready": True})
    redis("RPUSH", "queue", *reversed(["7",  # the queue's default handler: not limited
                                       json.dumps({"handler": "slow", "args": 1}),
                                       delayed,  # goes to the schedule: no token
                                       "not json {",
                                       retried,  # due now, opened: costs the last token
                                       json.dumps({"handler": "slow", "args": 2})]))
    got = run(redis, "fetch", FETCH_KEYS,
              fetch_args(10, limits=limits(0.001, 2, queue_handler="sleep")))
    assert got[4].startswith(b"THROTTLED ")
    assert got[6::2] == [b"7", json.dumps({"handler": "slow", "args": 1}).encode(),
                                       delayed.encode(), b"not json {", retried.encode()]
    assert redis("LRANGE", "queue", 0, -1) == [json.dumps({"handler": "slow", "args": 2}).encode()]


def test_fetch_refuses_a_bucket_of_the_wrong_type_before_anything_moves(redis):
    redis("LPUSH", "queue", "1")
    redis("SET", "qworker:rate:slow", "x")
    with pytest.raises(Exception, match="WRONGTYPE qworker:rate:slow"):
        run(redis, "fetch", FETCH_KEYS, fetch_args(1, limits=limits(5, 5)))
    assert redis("LRANGE", "queue", 0, -1) == [b"1"]


def test_fetch_refills_the_bucket_at_the_rate_and_no_further_than_the_burst(redis):
    # 1,000 a second, burst 3: drained, then 3 again after a quiet spell, never more.
    redis("RPUSH", "queue", *[str(i) for i in range(10)])
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(10, limits=limits(1000, 3)))
    assert len(got[5:]) == 6
    redis("HSET", "qworker:rate:slow", "at", "0")  # as if a long time had passed
    got = run(redis, "fetch", FETCH_KEYS, fetch_args(10, limits=limits(1000, 3)))
    assert len(got[5:]) == 6 and got[4].startswith(b"THROTTLED 1 ")


def test_fetch_refuses_a_bucket_the_acl_keeps_from_it_before_anything_moves(redis):
    # Allowed everything but HMGET: refused whole, nothing popped (Lua does not roll back).
    redis("ACL", "SETUSER", "nohmget", "on", ">pw", "~*", "&*", "+@all", "-hmget")
    as_user = redis.new_client()
    assert as_user("AUTH", "nohmget", "pw") == "OK"
    redis("LPUSH", "queue", "1", "2")
    with pytest.raises(Exception, match="NOPERM .*qworker:rate:slow"):
        as_user("EVAL", script("fetch"), len(FETCH_KEYS), *FETCH_KEYS,
                *fetch_args(2, limits=limits(5, 5)))
    assert redis("LRANGE", "queue", 0, -1) == [b"2", b"1"]
    assert redis("HLEN", "qworker:inflight:w") == 0


UNSCHEDULE_KEYS = ["qworker:schedule", "qworker:stats"]


def test_unschedule_removes_and_counts_a_member_once(redis):
    redis("ZADD", "qworker:schedule", 1, "m1", 2, "m2")
    assert run(redis, "unschedule", UNSCHEDULE_KEYS, ["m1", "q"]) == 1
    assert run(redis, "unschedule", UNSCHEDULE_KEYS, ["m1", "q"]) == 0  # a second operator
    assert redis("ZRANGE", "qworker:schedule", 0, -1) == [b"m2"]
    assert redis("HGETALL", "qworker:stats") == [b"cancelled", b"1", b"queue:q:cancelled", b"1"]


def test_unschedule_removes_nothing_it_could_not_count(redis):
    # Lua does not roll back: a stats key of the wrong type refuses the call before the ZREM.
    redis("ZADD", "qworker:schedule", 1, "m1")
    redis("SET", "qworker:stats", "x")
    with pytest.raises(RuntimeError, match="^WRONGTYPE qworker:stats is a string"):
        run(redis, "unschedule", UNSCHEDULE_KEYS, ["m1", "q"])
    assert redis("ZRANGE", "qworker:schedule", 0, -1) == [b"m1"]


def test_unschedule_removes_nothing_when_a_count_is_not_a_number(redis):
    redis("ZADD", "qworker:schedule", 1, "m1")
    redis("HSET", "qworker:stats", "queue:q:cancelled", "many")
    with pytest.raises(RuntimeError, match="^NOTANINTEGER qworker:stats queue:q:cancelled"):
        run(redis, "unschedule", UNSCHEDULE_KEYS, ["m1", "q"])
    assert redis("ZRANGE", "qworker:schedule", 0, -1) == [b"m1"]

"""Real jobs (issue 4): JSON envelopes, whitelisted exec handlers, timeouts, retries with
backoff, delays, dead letters, priorities, and payloads built to break things."""

import base64
import json
import os
import signal
import subprocess
import time

import pytest

from harness import push, SLOW, wait_for

PY = "/usr/bin/python3"
# Writes its arguments, NUL-separated, to the file named by its first argument.
ARGV_DUMP = "import sys; open(sys.argv[1], 'wb').write(b'\\0'.join(a.encode('utf-8', 'surrogateescape') for a in sys.argv[2:]))"



def env(**fields):
    return json.dumps(fields)


def children(pid):
    """The direct children of a process, over all its threads."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:
            pass  # a thread that ended meanwhile
    return found


def started(e):
    return int(e["QWORKER_STARTED_USEC"])


def dead_entries(redis):
    return [json.loads(d) for d in redis("LRANGE", "qworker:dead", 0, -1)]


def test_args_arrive_as_separate_argv_entries_byte_for_byte(redis, start_qworker, workdir):
    out = os.path.join(workdir, "argv.bin")
    q = start_qworker(redis.port, handlers=[
        {"name": "dump", "type": "exec", "command": [PY, "-c", ARGV_DUMP, out]}])
    q.wait_message("ready", 10)
    args = ["a", "b c", "; rm -rf /", "$(id)"]
    push(redis, env(handler="dump", args=args))
    done = q.wait_completions(1, 10)
    assert done[0]["QWORKER_OUTCOME"] == "ok", done[0]["MESSAGE"]
    with open(out, "rb") as f:
        assert f.read().split(b"\0") == [a.encode() for a in args]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before or while it was read
        return False


def test_timeout_stops_the_child_and_its_grandchild(redis, start_qworker, workdir):
    pids = os.path.join(workdir, "pids")
    q = start_qworker(redis.port, handlers=[
        {"name": "hang", "type": "exec", "timeout": 1, "max_attempts": 2, "backoff": 30,
         "command": ["/bin/sh", "-c", f"sleep 10 & echo $$ $! > {pids}; wait"]}])
    q.wait_message("ready", 10)
    pushed = push(redis, env(handler="hang"))
    child, grandchild = wait_for(lambda: os.path.exists(pids) and open(pids).read().split(),
                                 5, "the child to start")
    wait_for(lambda: not alive(child) and not alive(grandchild), 3, "both to be gone")
    gone = time.time_ns() // 1000
    done = q.wait_completions(1, 5)
    assert done[0]["QWORKER_OUTCOME"] == "timeout"
    assert (gone - started(done[0])) / 1e6 <= 1.5 * SLOW, "not gone within 1.5 s of the start"
    assert "next in" in done[0]["MESSAGE"]  # a retry is scheduled
    assert redis("ZCARD", "qworker:schedule") == 1
    assert pushed <= started(done[0])


def test_nothing_a_task_left_behind_outlives_its_completion(redis, start_qworker, workdir):
    pids = os.path.join(workdir, "pids")
    q = start_qworker(redis.port, handlers=[
        {"name": "leave", "type": "exec",
         "command": ["/bin/sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pids}"]}])
    q.wait_message("ready", 10)
    push(redis, env(handler="leave"))
    assert q.wait_completions(1, 10)[0]["QWORKER_OUTCOME"] == "ok"
    left = int(open(pids).read())
    wait_for(lambda: not alive(left), 2, "the process it left behind to be gone")


def test_fails_twice_then_succeeds_with_backoff(redis, start_qworker, workdir):
    count = os.path.join(workdir, "count")
    script = (f"n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; "
              "[ $n -ge 3 ]")
    q = start_qworker(redis.port, handlers=[
        {"name": "flaky", "type": "exec", "max_attempts": 3, "backoff": 0.5,
         "command": ["/bin/sh", "-c", script]}])
    q.wait_message("ready", 10)
    push(redis, env(handler="flaky", id="job-1"))
    done = q.wait_completions(3, 15)
    assert [e["QWORKER_OUTCOME"] for e in done] == ["failed", "failed", "ok"]
    assert [e["QWORKER_ATTEMPT"] for e in done] == ["1", "2", "3"]
    assert {e["QWORKER_TASK_ID"] for e in done} == {"job-1"}
    assert [e["QWORKER_EXIT_STATUS"] for e in done] == ["1", "1", "0"]
    gaps = [(started(b) - started(a)) / 1e6 for a, b in zip(done, done[1:])]
    # Backoff 0.5 s then 1 s, each within +-25% jitter (plus a little to start the process).
    assert 0.375 <= gaps[0] <= 0.625 + 0.1 * SLOW, gaps
    assert 0.75 <= gaps[1] <= 1.25 + 0.1 * SLOW, gaps
    assert dead_entries(redis) == []


def test_exhausted_attempts_go_to_dead_and_lmove_runs_them_again(redis, start_qworker, workdir):
    ok = os.path.join(workdir, "ok")
    q = start_qworker(redis.port, handlers=[
        {"name": "needs-file", "type": "exec", "max_attempts": 2, "backoff": 0.1,
         "command": ["/bin/sh", "-c", f'test -e {ok}', "needs-file"]}],
        queues=[{"name": "queue", "handler": "needs-file"}])
    q.wait_message("ready", 10)
    push(redis, "plain payload")
    done = q.wait_completions(2, 10)
    assert done[-1]["PRIORITY"] == "3" and "moved to qworker:dead" in done[-1]["MESSAGE"]
    wait_for(lambda: redis("LLEN", "qworker:dead") == 1, 5, "the dead-letter entry")
    [entry] = dead_entries(redis)
    assert entry["payload"] == "plain payload"
    assert entry["queue"] == "queue" and entry["handler"] == "needs-file"
    assert entry["reason"] == "exited with status 1" and entry["attempts"] == 2
    assert redis("ZCARD", "qworker:schedule") == 0
    open(ok, "w").close()
    redis("LMOVE", "qworker:dead", "queue", "RIGHT", "LEFT")
    done = q.wait_completions(3, 10)
    assert done[-1]["QWORKER_OUTCOME"] == "ok" and done[-1]["QWORKER_ATTEMPT"] == "1"
    assert redis("LLEN", "qworker:dead") == 0


@pytest.mark.parametrize("restart", [False, True])
def test_delay_starts_no_earlier_and_survives_a_restart(redis, start_qworker, restart):
    q = start_qworker(redis.port, worker={"id": "d"})
    q.wait_message("ready", 10)
    pushed = push(redis, env(handler="sleep", args=0.1, delay=2))
    wait_for(lambda: redis("ZCARD", "qworker:schedule") == 1, 5, "the task in the schedule")
    if restart:
        assert q.stop() == 0
        q = start_qworker(redis.port, name="again", worker={"id": "d"})
    done = q.wait_completions(1, 10)
    assert done[0]["QWORKER_OUTCOME"] == "ok"
    waited = (started(done[0]) - pushed) / 1e6
    assert 2.0 <= waited <= 2.5 * SLOW, f"started {waited:.3f} s after the push"


def test_strict_priority_between_queues(redis, start_qworker):
    push(redis, *["0.2"] * 12, queue="low")
    push(redis, *["0.2"] * 12, queue="high")
    q = start_qworker(redis.port, worker={"concurrency": 4, "fetch_batch": 4},
                      queues=[{"name": "high"}, {"name": "low"}])
    done = q.wait_completions(24, 20)
    high = [started(e) for e in done if e["QWORKER_QUEUE"] == "high"]
    low = [started(e) for e in done if e["QWORKER_QUEUE"] == "low"]
    assert len(high) == len(low) == 12
    assert max(high) <= min(low), "a low task started before a high one"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid):
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,stat="], capture_output=True,
                         text=True).stdout
    return [line.split() for line in out.splitlines()]


def test_a_lower_queue_is_served_when_every_slot_waits_on_a_higher_one(redis, start_qworker):
    # One slot, two queues: the fetch armed behind the idle worker's wait on "high" holds it.
    q = start_qworker(redis.port, worker={"concurrency": 1},
                      queues=[{"name": "high"}, {"name": "low"}])
    q.wait_message("ready", 10)
    wait_for(lambda: redis("CLIENT", "LIST").count(b"cmd=blmove") == 2, 5,
             "both queues to be waited on")
    pushed = push(redis, "0", queue="low")
    done = q.wait_completions(1, 5)
    assert done[0]["QWORKER_QUEUE"] == "low"
    assert (started(done[0]) - pushed) / 1e6 < 0.5 * SLOW, "the low task waited for the slot"


def test_thousand_true_no_zombie_no_fd_leak(redis, start_qworker):
    q = start_qworker(redis.port, worker={"concurrency": 50}, log={"level": "notice"},
                      handlers=[{"name": "true", "type": "exec", "command": ["/bin/true"]}],
                      queues=[{"name": "queue", "handler": "true"}])
    q.wait_message("ready", 10)
    # Idle: every connection open, the waiter blocked on the empty queue.
    wait_for(lambda: b"cmd=blmove" in redis("CLIENT", "LIST"), 5, "the worker to be idle")
    before = fd_count(q.pid)
    push(redis, *["x"] * 1000)

    def succeeded():
        v = redis("HGET", "qworker:stats", "succeeded")
        return v is not None and int(v) == 1000

    wait_for(succeeded, 60, "1,000 tasks to succeed")
    assert redis("LLEN", "qworker:dead") == 0
    assert children(q.pid) == [], "zombies or stray children"
    # A leak stays; anything still closing is given a moment.
    wait_for(lambda: fd_count(q.pid) == before, 5, f"{before} descriptors, as before the tasks")


BAD = [
    (b'{"handler": "echo", "args": [', "invalid JSON"),
    (b'{"handler": "nope"}', 'unknown handler "nope"'),
    (b'{"handler": "echo", "args": "a b"}', '"args" must be an array of strings'),
    (b'{"handler": "echo", "args": [1, 2]}', '"args"[0] must be a string'),
    (b'{"handler": "echo", "args": ' + b"[" * 100000 + b"]" * 100000 + b"}", "invalid JSON"),
    # (A payload over max_payload never leaves Redis: tests/e2e/test_hostile.py.)
    (b'{"handler": "echo", "args": ["a\\u0000b"]}', "invalid JSON"),
    (b'{"handler": "echo", "args": ["a\0b"]}', "invalid JSON"),
    (b'{"handler": "echo", "args": ["\xff\xfe"]}', "invalid JSON"),
    (b'{"handler": "echo", "timeout": null}', '"timeout" must be a positive number'),
    (b'{"handler": "echo", "timeout": -1}', '"timeout" must be a positive number'),
    (b'{"handler": "echo", "max_attempts": 0}', '"max_attempts" must be a whole number'),
    (b'{"handler": "echo", "hanlder": "x"}', 'unknown field "hanlder"'),
    # A payload may lower the operator's limits, never raise them.
    (b'{"handler": "echo", "timeout": 31536000}', '"timeout" 3.1536e+07 is over what handler'),
    (b'{"handler": "echo", "max_attempts": 1000}', '"max_attempts" 1000 is over what handler'),
    # execve would say E2BIG: refused as invalid at once, not retried as a failure.
    (b'{"handler": "echo", "args": ["' + b"y" * 200000 + b'"]}', '"args"[0] is 200000 bytes'),
    # Not an object, so a plain payload for the queue's default handler (sleep).
    (b'["handler", "echo"]', "not a plain number of seconds"),
]


def test_bad_envelopes_are_dead_lettered_with_their_reason(redis, start_qworker):
    q = start_qworker(redis.port, handlers=[
        {"name": "echo", "type": "exec", "command": ["/bin/echo"]}])
    q.wait_message("ready", 10)
    for payload, _ in BAD:
        push(redis, payload)
    push(redis, env(handler="echo", args=["still", "fine"]))
    done = q.wait_completions(len(BAD) + 1, 30)
    assert q.proc.poll() is None
    by_reason = [e for e in done if e["QWORKER_OUTCOME"] == "invalid"]
    assert len(by_reason) == len(BAD)
    for e, (_, reason) in zip(by_reason, BAD):
        assert e["PRIORITY"] == "4" and reason in e["MESSAGE"], (reason, e["MESSAGE"][:300])
    assert done[-1]["QWORKER_OUTCOME"] == "ok"
    dead = dead_entries(redis)
    assert len(dead) == len(BAD)
    for entry, (payload, reason) in zip(reversed(dead), BAD):
        assert reason in entry["reason"]
        if "payload" in entry:
            kept = entry["payload"].encode()
        else:
            kept = base64.b64decode(entry["payload_base64"])
        assert kept == payload, "the dead letter must keep the payload whole"


def test_children_that_flood_hang_up_or_never_read_stay_bounded(redis, start_qworker):
    q = start_qworker(redis.port, handlers=[
        {"name": "flood", "type": "exec", "timeout": 30, "max_attempts": 1, "max_output": 4096,
         "command": ["/bin/sh", "-c",
                     "head -c 100000000 /dev/zero | tr '\\\\0' x; yes | head -c 50000000"]},
        {"name": "mute", "type": "exec", "timeout": 1, "max_attempts": 1,
         "command": ["/bin/sh", "-c", "exec >&- 2>&-; sleep 30"]},
        {"name": "deaf", "type": "exec", "timeout": 1, "max_attempts": 1, "args": "stdin",
         "command": ["/bin/sleep", "30"]}])
    q.wait_message("ready", 10)
    push(redis, env(handler="flood"), env(handler="mute"),
         env(handler="deaf", args=["y" * (512 << 10)]))
    # Once all three run (spawning them is not what is measured), the loop keeps serving other
    # tasks on time while they flood, hang up and refuse their input.
    wait_for(lambda: len(children(q.pid)) >= 3, 10, "the three children to run")
    lags = []
    for i in range(5):
        pushed = push(redis, "0.1")
        e = wait_for(lambda: [e for e in q.completions("ok") if e["QWORKER_HANDLER"] == "sleep"
                              and started(e) >= pushed], 10, "a sleep task")[0]
        lags.append((started(e) - pushed) / 1000)
    assert max(lags) < 50 * SLOW, f"pickup while children flood: {lags} ms"
    done = q.wait_completions(8, 60)
    by = {e["QWORKER_HANDLER"]: e for e in done}
    assert by["flood"]["QWORKER_OUTCOME"] == "ok"
    assert by["mute"]["QWORKER_OUTCOME"] == "timeout"
    assert by["deaf"]["QWORKER_OUTCOME"] == "timeout"
    assert int(by["mute"]["QWORKER_DURATION_MS"]) < 1500 * SLOW
    output = [e for e in q.journal()
              if e.get("QWORKER_STREAM") and f' {e["QWORKER_STREAM"]}: ' in e["MESSAGE"]]
    logged = sum(len(e["MESSAGE"].split(f' {e["QWORKER_STREAM"]}: ', 1)[1]) + 1 for e in output)
    assert logged <= 4096 + 3, f"{logged} bytes of child output logged for max_output 4096"
    assert len(output) <= 4096 // 2 + 1
    assert any("output beyond 4096 bytes not logged" in e["MESSAGE"] for e in q.journal())


def test_handler_concurrency_limit_runs_its_tasks_in_waves(redis, start_qworker):
    q = start_qworker(redis.port, worker={"concurrency": 10}, handlers=[
        {"name": "nap", "type": "exec", "concurrency": 2, "command": ["/bin/sleep", "0.3"]}])
    q.wait_message("ready", 10)
    pushed = push(redis, *[env(handler="nap", id=f"nap-{i}") for i in range(6)])
    done = q.wait_completions(6, 10)
    assert sorted(e["QWORKER_TASK_ID"] for e in done) == [f"nap-{i}" for i in range(6)]
    # Judged on the worker's own start and end of each task, not on windows of wall-clock time
    # (a machine that stalls for a moment moves every wave, and proves nothing either way).
    spans = sorted((started(e), started(e) + int(e["QWORKER_DURATION_MS"]) * 1000) for e in done)
    ends = sorted(end for _, end in spans)
    assert all(end - start >= 300_000 for start, end in spans), spans
    assert spans[1][0] - pushed < 500_000 * SLOW, "the first two start at once"
    for k in range(2, 6):
        start = spans[k][0]
        running = [s for s, end in spans[:k] if end > start + 1000]  # +1 ms: durations in ms
        assert len(running) < 2, f"task {k} started with {len(running)} running: {spans}"
        # ... and as soon as a slot frees: with the completion that freed it
        assert abs(start - ends[k - 2]) < 50_000 * SLOW, f"task {k} idled: {spans}"


def test_the_same_envelope_pushed_twice_runs_twice_through_the_schedule(redis, start_qworker):
    """Two pushes of one envelope with an id and a delay, or failing at the same attempt, were
    one member of the schedule sorted set: one of them never ran."""
    q = start_qworker(redis.port, handlers=[
        {"name": "fail", "type": "exec", "command": ["/bin/false", "--"], "max_attempts": 2,
         "backoff": 0.1}])
    q.wait_message("ready", 10)
    delayed = env(id="twice", handler="sleep", args=0, delay=0.3)
    failing = env(id="fails-twice", handler="fail")
    push(redis, delayed, delayed, failing, failing)
    wait_for(lambda: len(q.completions("ok")) >= 2 and redis("LLEN", "qworker:dead") >= 2, 15,
             "both delayed copies to run and both failing copies to be dead-lettered")
    assert [e["QWORKER_TASK_ID"] for e in q.completions("ok")] == ["twice", "twice"]
    dead = dead_entries(redis)
    assert [(d["id"], d["attempts"]) for d in dead] == [("fails-twice", 2)] * 2
    assert redis("ZCARD", "qworker:schedule") == 0


def test_text_from_a_task_cannot_forge_log_lines_or_drive_the_terminal(redis, start_qworker):
    q = start_qworker(redis.port, log={"target": "stderr"}, handlers=[
        {"name": "noisy", "type": "exec", "max_attempts": 1,
         "command": [PY, "-c", "import sys; sys.stdout.buffer.write("
                     "b'out\\x1b[2J\\x7f\\x9b\\xc2\\x9b\\rFAKE err forged\\n')", "--"]}])
    q.wait_message("ready", 10)
    push(redis, env(id="x\nFAKE 2026-01-01 00:00:00.000 err forged", handler="sleep", args=0),
         env(id="esc", handler="\x1b[2J\x1b[31mPWNED"), env(id="noisy", handler="noisy"),
         b'{"id": "bad json \x1b]0;title\x07", ')
    wait_for(lambda: "task noisy done" in q.stderr_text() and "task x\\nFAKE" in q.stderr_text()
             and q.stderr_text().count("outcome=invalid") == 2, 10, "the four tasks to end")
    raw = open(q.stderr_path, "rb").read()
    for hostile in (b"\x1b", b"\x7f", b"\x9b", b"\xc2\x9b", b"\x07", b"\r"):
        assert hostile not in raw, f"{hostile!r} reached the log: {raw[-2000:]!r}"
    assert not [line for line in raw.split(b"\n") if line.startswith(b"FAKE")]
    assert b"task x\\nFAKE 2026-01-01" in raw


def test_a_retried_payload_holding_nul_bytes_runs_again_whole(redis, start_qworker, workdir):
    """jansson wrote NUL as \\u0000 in the retry wrapper and refused it when reading it back:
    the retry was dead-lettered as invalid JSON."""
    got, marker = os.path.join(workdir, "got"), os.path.join(workdir, "failed-once")
    q = start_qworker(redis.port, handlers=[
        {"name": "second", "type": "exec", "args": "stdin", "max_attempts": 2, "backoff": 0.1,
         "command": [PY, "-c", "import os, sys; d = sys.stdin.buffer.read(); "
                     "os.path.exists(sys.argv[1]) or (open(sys.argv[1], 'w').close(), "
                     "sys.exit(1)); open(sys.argv[2], 'wb').write(d)", marker, got]}],
        queues=[{"name": "queue", "handler": "second"}])
    q.wait_message("ready", 10)
    payload = b"a\x00b c\x00"  # UTF-8 text but for its NUL bytes
    push(redis, payload)
    done = q.wait_completions(2, 10)
    assert [e["QWORKER_OUTCOME"] for e in done] == ["failed", "ok"]
    assert open(got, "rb").read() == payload
    assert redis("LLEN", "qworker:dead") == 0


def test_sigterm_puts_tasks_waiting_under_a_handler_limit_back_at_once(redis, start_qworker,
                                                                       workdir):
    """They have not started: on a stop they go back at once instead of starting one by one as
    the running one ends, for the whole drain."""
    log = os.path.join(workdir, "started")
    q = start_qworker(redis.port, worker={"concurrency": 10, "shutdown_timeout": 10, "id": "w"},
                      handlers=[{"name": "one", "type": "exec", "concurrency": 1,
                                 "command": ["/bin/sh", "-c", 'echo "$1" >> "$0"; sleep 1', log]}])
    q.wait_message("ready", 10)
    push(redis, *[env(id=f"t{i}", handler="one", args=[f"t{i}"]) for i in range(5)])
    wait_for(lambda: os.path.exists(log) and redis("HLEN", "qworker:inflight:w") == 5, 10,
             "one task running, four waiting")
    q.signal(signal.SIGTERM)
    wait_for(lambda: redis("LLEN", "queue") == 4, 2, "the four waiting tasks back in the queue")
    assert q.wait_exit(10) == 0
    assert len(open(log).read().split()) == 1, "a waiting task started during the drain"
    assert redis("LLEN", "queue") == 4 and redis("EXISTS", "qworker:inflight:w") == 0

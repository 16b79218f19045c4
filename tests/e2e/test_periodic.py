"""Periodic tasks (issue 13, item 4): every worker carries the schedules; each tick is pushed
once fleet-wide, also while a worker is killed and restarted; a tick missed while no worker ran
is pushed once when one starts; a schedule new to Redis does not fire the moment it appears."""

import os
import signal
import time

import pytest

from harness import SLOW, binary_exists, wait_for

pytestmark = pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis")

# The ticks go to a queue no worker takes from, so that the test counts every push.
EVERY_SECOND = [{"name": "tick", "every": 1, "queue": "ticks", "payload": "0"}]
KEY = "qworker:periodic:tick"


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_fleet(start_qworker, redis, n, schedules):
    workers = [start_qworker(redis.port, name=f"w{i}", worker={"id": f"w{i}"},
                             extra=schedules_text(schedules)) for i in range(n)]
    for w in workers:
        w.wait_message("ready", 10)
    return workers


def schedules_text(schedules):
    def group(d):
        return "{ " + " ".join(f'{k} = {v if isinstance(v, int) else chr(34) + v + chr(34)};'
                               for k, v in d.items()) + " }"
    return "schedules = ( " + ", ".join(group(s) for s in schedules) + " );\n"


@pytest.mark.plain_only  # ten seconds of ticks; the code it drives runs under the sanitizers below
def test_three_workers_push_each_tick_once_through_a_kill_and_a_restart(redis, start_qworker):
    workers = start_fleet(start_qworker, redis, 3, EVERY_SECOND)
    # The first worker to look notes the current tick without pushing it (a new schedule), and
    # says which: read from Redis, it could already be a later one, pushed while the others
    # were starting.
    noted = wait_for(lambda: [e["MESSAGE"] for w in workers for e in w.journal()
                              if "schedule tick: first tick" in e.get("MESSAGE", "")], 10,
                     "the schedule's first tick noted")
    assert len(noted) == 1, noted
    first = int(noted[0].split("first tick ")[1].split()[0])
    wait_for(lambda: int(redis("GET", KEY)) >= first + 4, 10, "four ticks")
    workers[1].signal(signal.SIGKILL)
    workers[1].wait_exit(10)
    wait_for(lambda: int(redis("GET", KEY)) >= first + 6, 10, "two more ticks, one worker down")
    again = start_qworker(redis.port, name="w1-again", worker={"id": "w1"},
                          extra=schedules_text(EVERY_SECOND))
    again.wait_message("ready", 10)
    wait_for(lambda: int(redis("GET", KEY)) >= first + 10, 10, "ten ticks in all")
    # Read together: the last tick pushed and how many pushes there were.
    pipe = redis.client()
    pipe.send("MULTI")
    pipe.send("GET", KEY)
    pipe.send("LLEN", "ticks")
    pipe.send("EXEC")
    for _ in range(3):
        pipe._reply()
    last, pushed = pipe._reply()
    last = int(last)
    # Every tick from the first noted one to the last pushed, each exactly once: a tick pushed
    # twice would make more pushes than ticks, one skipped fewer.
    assert pushed == last - first, f"{pushed} pushes for ticks {first + 1}..{last}"
    logged = sum(1 for w in workers + [again] for e in w.journal()
                 if "schedule tick: tick" in e.get("MESSAGE", ""))
    assert logged >= pushed - 1, "pushes not logged"  # the killed one's last line may be lost


def test_a_missed_tick_is_pushed_once_at_start_and_a_new_schedule_waits(redis, start_qworker):
    schedules = [{"name": "tick", "every": 60, "queue": "ticks", "payload": "m"},
                 {"name": "fresh", "cron": "* * * * *", "queue": "fresh", "payload": "f"}]
    now = int(time.time())
    # No worker ran for ten minutes: ten ticks were missed.
    redis("SET", KEY, str(now - now % 60 - 600))
    start_fleet(start_qworker, redis, 1, schedules)
    wait_for(lambda: redis("LLEN", "ticks") >= 1, 5, "the missed tick")
    assert redis("LRANGE", "ticks", 0, -1) == [b"m"], "more than one push for the missed ticks"
    latest = int(redis("GET", KEY))
    assert latest == now - now % 60 or latest == int(time.time()) // 60 * 60
    # The schedule Redis had never seen notes its tick and waits for the next.
    wait_for(lambda: redis("GET", "qworker:periodic:fresh"), 5, "the new schedule noted")
    assert redis("LLEN", "fresh") == 0


def test_a_reload_brings_new_schedules(redis, start_qworker):
    q = start_qworker(redis.port, worker={"id": "w"})
    q.wait_message("ready", 10)
    with open(q.config, "a") as f:
        f.write(schedules_text([{"name": "added", "every": 1, "queue": "ticks", "payload": "a"}]))
    q.signal(signal.SIGHUP)
    wait_for(lambda: redis("LLEN", "ticks") >= 1, 10, "a tick of the schedule the reload added")
    assert set(redis("LRANGE", "ticks", 0, -1)) == {b"a"}


def test_a_refused_schedule_neither_spins_nor_holds_up_the_others(redis, start_qworker):
    """A schedule whose queue is a hash is refused (WRONGTYPE) at each tick: said once, tried
    again every second; the schedule after it still ticks, and the worker does not spin."""
    redis("HSET", "broken", "not", "a list")
    schedules = [{"name": "broken", "every": 1, "queue": "broken", "payload": "b"},
                 {"name": "fine", "every": 1, "queue": "ticks", "payload": "f"}]
    q = start_fleet(start_qworker, redis, 1, schedules)[0]
    wait_for(lambda: redis("LLEN", "ticks") >= 2, 10, "two ticks of the schedule that works")
    cpu0, t0 = cpu_seconds(q.pid), time.monotonic()
    wait_for(lambda: redis("LLEN", "ticks") >= 4, 10, "two more")
    cpu = cpu_seconds(q.pid) - cpu0
    assert cpu < 0.25 * (time.monotonic() - t0) * SLOW, f"{cpu:.2f} s of CPU: it spins"
    said = [e["MESSAGE"] for e in q.journal() if "schedule broken" in e.get("MESSAGE", "")]
    assert len(said) == 1 and "WRONGTYPE" in said[0], said
    assert redis("TYPE", "broken") == "hash"

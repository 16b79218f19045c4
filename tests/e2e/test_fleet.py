"""Many hosts on one Redis (issue 12, item 2): three worker hosts and a Redis host, each a
network namespace of its own. 30,000 tasks are shared by the three in proportion to their free
capacity; one host's link is cut mid-run: nothing is lost, its tasks start on the others within
3 x heartbeat_ttl, and it stops them itself before its heartbeat expires, so that no task runs on
two hosts at once (an exclusive lock per task id, held while it runs, would show it); the link
comes back: the host rejoins and takes tasks again, and each task is recorded once."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from harness import (QWORKER, Qworker, RedisServer, SANITIZER_MARKS, binary_exists, push_many,
                     stats, task_ids, wait_for, write_config, OK_LINE)
from netns import Fleet, unix_client

HANDLER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "fleet_handler.py")
TTL = 3
SHORT = 30000
LONG = 20

pytestmark = [
    pytest.mark.plain_only,
    pytest.mark.skipif(not binary_exists(), reason="build qworker and install redis"),
    pytest.mark.skipif(shutil.which("ip") is None or os.geteuid() != 0,
                       reason="needs root and iproute2 for network namespaces"),
]


class HostQworker(Qworker):
    """A qworker started inside a host's namespace (ip netns exec execs it: same pid)."""

    def __init__(self, config, workdir, name, prefix):
        super().__init__(config, workdir, name, log_target="stderr")
        self.prefix = prefix

    def start(self):
        self.stderr = open(self.stderr_path, "wb")
        self.started_usec = time.time_ns() // 1000
        self.proc = subprocess.Popen(self.prefix + [QWORKER, "-c", self.config],
                                     stdout=self.stderr, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL)
        return self

    def done_count(self):
        return len(OK_LINE.findall(self.stderr_text()))


class HostRedis(RedisServer):
    """redis-server in the Redis host's namespace, on its address and on a unix socket that the
    test (in its own namespace) talks through."""

    def __init__(self, workdir, fleet):
        self.sock = os.path.join(workdir, "fleet-redis.sock")
        super().__init__(workdir, port=16400, extra=["--unixsocket", self.sock])
        self.fleet = fleet

    def start(self):
        self.proc = subprocess.Popen(
            self.fleet.exec_prefix(self.fleet.hub) +
            ["redis-server", "--port", str(self.port), "--bind", self.fleet.redis_ip(),
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log",
             "--unixsocket", self.sock,
             # Not loopback, no password: it reaches only the namespaces made here.
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.sock) and self._ping(), 10, "redis on the Redis host")
        return self

    def new_client(self, timeout=10):
        return unix_client(self.sock, timeout=timeout)


def ledger_lines(ledger):
    try:
        with open(os.path.join(ledger, "ledger")) as f:
            return [line.split() for line in f]
    except FileNotFoundError:
        return []


def test_three_hosts_share_survive_a_cut_link_and_rejoin(workdir, journald):
    fleet = Fleet(3, "f")
    workers = []
    redis = None
    try:
        fleet.up()
        redis = HostRedis(workdir, fleet).start()
        ledger = os.path.join(workdir, "ledger.d")
        os.makedirs(ledger)

        def start(i, concurrency):
            name = f"host{i + 1}"
            path = write_config(
                os.path.join(workdir, f"{name}.conf"), redis.port,
                redis={"host": fleet.redis_ip(), "connect_timeout": 1, "command_timeout": 2},
                worker={"id": name, "concurrency": concurrency, "heartbeat_ttl": TTL,
                        "shutdown_timeout": 5},
                log={"target": "stderr"},
                handlers=[{"name": "hold", "type": "exec",
                           "command": ["/usr/bin/python3", HANDLER, ledger, name]}])
            w = HostQworker(path, workdir, name, fleet.exec_prefix(fleet.workers[i])).start()
            workers.append(w)
            wait_for(lambda: "ready" in w.stderr_text(), 10, f"{name} ready")
            return w

        # Host 3 first, so that it alone holds the long tasks when its link is cut; its
        # concurrency leaves it as much free room for the short ones as the others have.
        h3 = start(2, 50 + LONG)
        long_ids = task_ids("long", LONG)
        # They run until released (60 s at most): still running, wherever they run, until the
        # test has seen whether two hosts ran one at once.
        push_many(redis, [json.dumps({"id": t, "handler": "hold", "args": [t, "60"]})
                          for t in long_ids])
        wait_for(lambda: sum(1 for line in ledger_lines(ledger) if line[0] == "start") == LONG,
                 20, "host3 running the long tasks")
        h1, h2 = start(0, 50), start(1, 50)

        short_ids = task_ids("short", SHORT)
        push_many(redis, [json.dumps({"id": t, "handler": "sleep", "args": 0.05})
                          for t in short_ids])
        wait_for(lambda: redis("LLEN", "queue") <= SHORT * 2 // 3, 60,
                 "a third of the short tasks taken")
        before_cut = [w.done_count() for w in (h1, h2, h3)]
        fleet.cut(2)
        t_cut = time.monotonic()

        # Its long tasks start again on the others within 3 x TTL of the cut.
        def restarted():
            starts = {(line[1]) for line in ledger_lines(ledger)
                      if line[0] in ("start", "OVERLAP") and line[2] != "host3"}
            return starts >= set(long_ids)
        wait_for(restarted, 3 * TTL + 5, "host3's long tasks to start elsewhere")
        overlaps = [line for line in ledger_lines(ledger) if line[0] == "OVERLAP"]
        assert not overlaps, f"tasks ran on two hosts at once: {overlaps[:5]}"
        open(os.path.join(ledger, "release"), "w").close()
        late = [float(line[3]) - t_cut for line in ledger_lines(ledger)
                if line[0] == "start" and line[2] != "host3"]
        assert max(late) <= 3 * TTL, f"a long task of host3 started {max(late):.1f} s after the cut"

        fleet.restore(2)
        t_restore = time.monotonic()
        wait_for(lambda: "the heartbeat is refreshed again" in h3.stderr_text(), 10,
                 "host3 back")
        wait_for(lambda: stats(redis).get("succeeded", 0) >= SHORT + LONG, 120,
                 "every task recorded")
        # Back, it takes its share of what comes next.
        after = task_ids("after", 3000)
        push_many(redis, [json.dumps({"id": t, "handler": "sleep", "args": 0.05})
                          for t in after])
        wait_for(lambda: stats(redis).get("succeeded", 0) >= SHORT + LONG + len(after), 60,
                 "the tasks pushed after the link came back")
        took = set(OK_LINE.findall(h3.stderr_text())) & set(after)
        assert len(took) >= len(after) // 10, f"host3 took {len(took)} of {len(after)} after"

        # Fair share before the cut: each host did a third of the work, give or take.
        total = sum(before_cut)
        for n, w in zip(before_cut, ("host1", "host2", "host3")):
            assert abs(n - total / 3) <= total * 0.12, f"{w} did {n} of {total} before the cut"

        lines = ledger_lines(ledger)
        overlaps = [line for line in lines if line[0] == "OVERLAP"]
        assert not overlaps, f"tasks ran on two hosts at once: {overlaps[:5]}"
        assert "heartbeat has not reached redis" in h3.stderr_text()

        # Every id ran, and each was recorded once.
        ran = set()
        for w in workers:
            ran |= {m for m in OK_LINE.findall(w.stderr_text())}
        every = set(short_ids) | set(long_ids) | set(after)
        assert every <= ran, f"{len(every - ran)} tasks never ran"
        s = stats(redis)
        assert s.get("succeeded") == len(every), s
        assert redis("LLEN", "queue") == 0
        for name in ("host1", "host2", "host3"):
            assert redis("HLEN", f"qworker:inflight:{name}") == 0, name
        print(f"\nshares before the cut {before_cut}; long tasks restarted by "
              f"{max(late):.2f} s after the cut; link back after {t_restore - t_cut:.1f} s")
        for w in workers:
            assert w.stop() == 0
            assert not [m for m in SANITIZER_MARKS if m in w.stderr_text()], w.stderr_text()[-3000:]
    except BaseException:
        for w in workers:  # what each host said, for the failure report
            print(f"--- {w.stderr_path}\n{w.stderr_text()[-3000:]}")
        raise
    finally:
        for w in workers:
            w.kill()
        if redis is not None:
            redis.stop()
        fleet.down()

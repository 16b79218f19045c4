"""A Redis that survives losing its master, for the tests: a master, a replica and sentinels, all
real redis-server processes on private ports, started and stopped here (issue 12)."""

import os
import signal
import subprocess
import time

from harness import RedisClient, RedisServer, free_port, stop_process, wait_for

MASTER_NAME = "mymaster"


class AuthRedis(RedisServer):
    """A data node that wants a password (requirepass), optionally a replica of another."""

    def __init__(self, workdir, password, replica_of=None):
        extra = ["--requirepass", password, "--masterauth", password]
        if replica_of is not None:
            extra += ["--replicaof", "127.0.0.1", str(replica_of)]
        super().__init__(workdir, extra=extra)
        self.password = password

    def new_client(self, timeout=10):
        c = RedisClient(self.port, timeout=timeout)
        c("AUTH", self.password)
        return c

    def info(self, section):
        text = self("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Sentinel:
    """One redis-server --sentinel. auth_pass is what it gives the master: a wrong one keeps it
    from ever hearing of the replica or of the other sentinels, so that after a failover it still
    names the old master (a stale sentinel, as one cut off from the others would be)."""

    def __init__(self, workdir, master_port, auth_pass, quorum=2):
        self.port = free_port()
        self.dir = os.path.join(workdir, f"sentinel-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile sentinel.log\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
                    f"sentinel auth-pass {MASTER_NAME} {auth_pass}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["redis-server", self.conf, "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.master_addr() is not None, 10, f"sentinel on port {self.port}")
        return self

    def __call__(self, *args):
        c = RedisClient(self.port, timeout=2)
        try:
            return c(*args)
        finally:
            c.close()

    def master_addr(self):
        try:
            r = self("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        except (OSError, RuntimeError):
            return None
        return None if r is None else (r[0].decode(), int(r[1]))

    def others(self):
        return len(self("SENTINEL", "sentinels", MASTER_NAME))

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        stop_process(self.proc)
        self.proc = None


class FailoverSet:
    """A master, a replica in sync with it, and n sentinels that all know each other."""

    def __init__(self, workdir, password, n_sentinels=3):
        self.workdir = workdir
        self.password = password
        self.master = AuthRedis(workdir, password)
        self.replica = None
        self.sentinels = []
        self.n = n_sentinels

    def start(self):
        self.master.start()
        self.replica = AuthRedis(self.workdir, self.password, replica_of=self.master.port).start()
        wait_for(lambda: self.replica.info("replication").get("master_link_status") == "up", 20,
                 "the replica in sync with the master")
        for _ in range(self.n):
            self.sentinels.append(Sentinel(self.workdir, self.master.port, self.password).start())
        wait_for(lambda: all(s.others() == self.n - 1 for s in self.sentinels), 30,
                 "the sentinels to find each other")
        return self

    def addresses(self):
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def promoted(self):
        """The new master's port once the live sentinels all name the replica, else None."""
        live = [s for s in self.sentinels if s.proc is not None and s.proc.poll() is None]
        addrs = {s.master_addr() for s in live}
        return self.replica.port if addrs == {("127.0.0.1", self.replica.port)} else None

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for r in (self.replica, self.master):
            if r is not None:
                r.stop()


def follow_master(sentinel_ports, password):
    """A client to whatever the sentinels name as master now (the producer's view)."""
    for port in sentinel_ports:
        try:
            c = RedisClient(port, timeout=2)
            try:
                r = c("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            finally:
                c.close()
            m = RedisClient(int(r[1]), timeout=2)
            m.port = int(r[1])
            m("AUTH", password)
            if m("ROLE")[0] == b"master":
                return m
            m.close()
        except (OSError, RuntimeError, TypeError):
            continue
    return None


def now_us():
    return time.time_ns() // 1000

"""Hosts for the fleet tests (issue 12): network namespaces made here, one per host, each with
its own address on a bridge that lives in the Redis host's namespace; a host's link can be cut
and restored. Everything is named after this process and deleted at the end. The filesystem is
shared: journald, ledgers and lock files reach every host."""

import os
import socket
import subprocess

SUBNET = "10.231.{}.{}"


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


class Fleet:
    def __init__(self, nworkers, tag):
        self.tag = f"qwt{os.getpid() % 100000}{tag}"
        self.net = os.getpid() % 200 + 20  # the third octet: runs in parallel do not collide
        self.hub = f"{self.tag}-redis"
        self.workers = [f"{self.tag}-w{i + 1}" for i in range(nworkers)]
        self.made = []

    def redis_ip(self):
        return SUBNET.format(self.net, 1)

    def worker_ip(self, i):
        return SUBNET.format(self.net, 11 + i)

    def _link(self, i):
        return f"{self.tag[-8:]}w{i + 1}"  # interface names: at most 15 characters

    def up(self):
        sh("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        hub = ("ip", "netns", "exec", self.hub)
        sh(*hub, "ip", "link", "set", "lo", "up")
        sh(*hub, "ip", "link", "add", "br0", "type", "bridge")
        sh(*hub, "ip", "addr", "add", f"{self.redis_ip()}/24", "dev", "br0")
        sh(*hub, "ip", "link", "set", "br0", "up")
        for i, ns in enumerate(self.workers):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            inner, outer = self._link(i), self._link(i) + "h"
            sh("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
               "netns", self.hub)
            sh(*hub, "ip", "link", "set", outer, "master", "br0", "up")
            w = ("ip", "netns", "exec", ns)
            sh(*w, "ip", "link", "set", "lo", "up")
            sh(*w, "ip", "addr", "add", f"{self.worker_ip(i)}/24", "dev", inner)
            sh(*w, "ip", "link", "set", inner, "up")
        return self

    def cut(self, i):
        """The host's link goes down at the Redis end, as a pulled cable would: packets are
        dropped, nothing is refused or reset."""
        sh("ip", "netns", "exec", self.hub, "ip", "link", "set", self._link(i) + "h", "down")

    def restore(self, i):
        sh("ip", "netns", "exec", self.hub, "ip", "link", "set", self._link(i) + "h", "up")

    def exec_prefix(self, ns):
        return ["ip", "netns", "exec", ns]

    def down(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        self.made = []


def unix_client(path, timeout=10):
    """A harness RedisClient on a unix socket (the test itself stays in its own namespace)."""
    from harness import RedisClient

    c = RedisClient.__new__(RedisClient)
    c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.sock.settimeout(timeout)
    c.sock.connect(path)
    c.buf = b""
    return c

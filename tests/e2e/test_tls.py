"""TLS to Redis through stunnel (issue 12): hiredis 0.14 speaks no TLS, so qworker reaches a
TLS-only redis-server through the stunnel client configuration the package ships
(packaging/stunnel/qworker-redis-tls.conf), run by Debian's stunnel4 with its log in the journal
as the unit has it. The seed scenario runs through it; a server certificate from another CA, or
for another host name, is refused with a clear line in the tunnel's journal while qworker logs
its outage once, takes nothing and runs the task once the right CA is back; a Redis that asks for
a client certificate gets the one the configuration's commented-out lines name."""

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from harness import (ROOT, SLOW, Journald, RedisClient, free_port, push, stats,
                     stop_process, wait_for)

SHIPPED = os.path.join(ROOT, "packaging", "stunnel", "qworker-redis-tls.conf")
# Debian's stunnel4 package (in the Makefile's DEB_TEST): its binary is stunnel4.
STUNNEL = shutil.which("stunnel4")
# The journal's name for the tunnel, as the unit's (SyslogIdentifier=) is.
TAG = "qworker-redis-tls"

# The lines of the shipped configuration the tests rewrite, and nothing else (every other line,
# the verification settings among them, is used as shipped, and checked to be so):
#   accept    = 127.0.0.1:6380                -> 127.0.0.1:<a private port>       (port only)
#   connect   = redis.example.com:6379        -> 127.0.0.1:<the TLS redis-server's port>
#   checkHost = redis.example.com             -> localhost (the name the test certificate has),
#                                                left as shipped by the host-name test
#   CAfile    = /etc/qworker/tls/redis-ca.pem -> the test's CA (or an unrelated one)
# and, in the client-certificate test only, the two commented-out lines made settings:
#   ;cert = /etc/qworker/tls/client.crt       -> cert = <the test's client certificate>
#   ;key = /etc/qworker/tls/client.key        -> key = <its key>
REWRITTEN = ("accept", "connect", "checkHost", "CAfile", "cert", "key")
SETTING = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def settings(text):
    """(section, key, value) for each setting line, in order; comments (; or #) skipped."""
    section, found = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        m = SETTING.match(line)
        assert m, f"not a setting line: {line!r}"
        found.append((section, m.group(1), m.group(2)))
    return found


def shipped_text():
    with open(SHIPPED) as f:
        return f.read()


def test_shipped_configuration_verifies_the_server():
    """What the other tests rely on not to change: a client tunnel on loopback that refuses a
    server whose certificate does not chain up to CAfile or does not name checkHost."""
    got = settings(shipped_text())
    keys = [(s, k) for s, k, _ in got]
    assert len(keys) == len(set(keys)), f"a setting given twice: {keys}"
    got = {(s, k): v for s, k, v in got}
    assert got == {
        ("", "foreground"): "yes",           # systemd supervises; logs to stderr: the journal
        ("", "syslog"): "no",
        ("", "pid"): "",
        ("", "debug"): "warning",
        ("redis", "client"): "yes",
        ("redis", "accept"): "127.0.0.1:6380",
        ("redis", "connect"): "redis.example.com:6379",
        ("redis", "checkHost"): "redis.example.com",
        ("redis", "verifyChain"): "yes",
        ("redis", "CAfile"): "/etc/qworker/tls/redis-ca.pem",
        ("redis", "sslVersionMin"): "TLSv1.2",
        ("redis", "TIMEOUTconnect"): "2",
    }, got
    for line in shipped_text().splitlines():
        if line.startswith(("connect", "checkHost")):
            continue
        assert "example" not in line or line.startswith(("#", ";")), line
    # The placeholder is marked for the operator, on the line above each of the two.
    lines = shipped_text().splitlines()
    for key in ("connect", "checkHost"):
        i = next(n for n, line in enumerate(lines) if line.startswith(key + " "))
        above = [line for line in lines[:i] if line.startswith(";")][-3:]
        assert any("EDIT" in line for line in above), (key, above)


def rewrite(accept_port, connect_port, ca, check_host="localhost", client=None):
    """The shipped configuration with the lines in REWRITTEN changed, checked to differ from it
    in those lines alone. client: (certificate, key) for the commented-out cert and key lines."""
    text = shipped_text()
    values = {"accept": f"127.0.0.1:{accept_port}", "connect": f"127.0.0.1:{connect_port}",
              "CAfile": ca}
    if check_host is not None:
        values["checkHost"] = check_host
    if client is not None:
        values[";cert"], values[";key"] = client
    for key, value in values.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key.lstrip(';')} = {value}", text, flags=re.M)
        assert n == 1, f"{key}: {n} lines in {SHIPPED}"
    before, after = shipped_text().splitlines(), text.splitlines()
    assert len(before) == len(after)
    for old, new in zip(before, after):
        if old != new:
            assert SETTING.match(old.lstrip(";")).group(1) in REWRITTEN, (old, new)
    # The accepted address stays loopback: only its port is the test's.
    assert dict((k, v) for _, k, v in settings(text))["accept"].rsplit(":", 1)[0] == \
        dict((k, v) for _, k, v in settings(shipped_text()))["accept"].rsplit(":", 1)[0]
    return text


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, f"{name}.crt")


@pytest.fixture(scope="module")
def pki():
    """A throwaway CA, a server certificate it signed for localhost and 127.0.0.1 and a client
    certificate, and a second CA that signed nothing of this server's."""
    assert STUNNEL, "stunnel4 is missing: apt-get install stunnel4 (make test installs DEB_TEST)"
    assert shutil.which("openssl"), "openssl is missing: apt-get install openssl"
    with tempfile.TemporaryDirectory(prefix="qworker-tls-") as d:
        ca = make_ca(d, "ca", "qworker test CA")
        other = make_ca(d, "other-ca", "an unrelated CA")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
        with open(os.path.join(d, "server.ext"), "w") as f:
            f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                    "extendedKeyUsage = serverAuth\n"
                    "basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt",
                cwd=d)
        # A client certificate from the same CA, for a Redis that asks for one.
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=qworker", cwd=d)
        with open(os.path.join(d, "client.ext"), "w") as f:
            f.write("extendedKeyUsage = clientAuth\nbasicConstraints = critical, CA:FALSE\n")
        openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "client.ext", "-out", "client.crt",
                cwd=d)
        yield {"dir": d, "ca": ca, "other_ca": other,
               "cert": os.path.join(d, "server.crt"), "key": os.path.join(d, "server.key"),
               "client": (os.path.join(d, "client.crt"), os.path.join(d, "client.key"))}


class TlsClient(RedisClient):
    """harness's RESP client over TLS, straight to redis-server (not through the tunnel under
    test), verifying it against the test CA."""

    def __init__(self, port, ca, timeout=5, client=None):
        ctx = ssl.create_default_context(cafile=ca)
        if client is not None:
            ctx.load_cert_chain(*client)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""


class TlsRedis:
    """A redis-server that speaks TLS only (--port 0), on a private port."""

    def __init__(self, workdir, pki, auth_clients=False):
        self.port = free_port()
        self.ca = pki["ca"]
        self.tls_client = pki["client"] if auth_clients else None
        self.dir = os.path.join(workdir, f"redis-tls-{self.port}")
        os.makedirs(self.dir)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", pki["cert"], "--tls-key-file", pki["key"],
             "--tls-ca-cert-file", pki["ca"], "--tls-auth-clients",
             "yes" if auth_clients else "no", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._client = None
        wait_for(self._ready, 10, f"the TLS redis-server on port {self.port}")

    def _ready(self):
        assert self.proc.poll() is None, f"redis-server exited: {self.log()}"
        try:
            c = TlsClient(self.port, self.ca, timeout=1, client=self.tls_client)
        except OSError:
            return False
        try:
            return c("EXISTS", "qworker-test-probe") == 0
        except (OSError, RuntimeError):
            return False
        finally:
            c.close()

    def log(self):
        with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
            return f.read()[-2000:]

    def client(self):
        if self._client is None:
            self._client = TlsClient(self.port, self.ca, client=self.tls_client)
        return self._client

    def __call__(self, *args):
        return self.client()(*args)

    def stop(self):
        if self._client is not None:
            self._client.close()
        stop_process(self.proc)


def listening(port):
    """Something listens on 127.0.0.1:port (TCP), seen without connecting to it."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and local == f"0100007F:{port:04X}":
                return True
    return False


class Tunnel:
    """stunnel4 on a rewritten copy of the shipped configuration, its stderr (where the
    configuration sends its log) in the journal under TAG, as the unit sends it."""

    def __init__(self, workdir, redis, ca, port=None, check_host="localhost", client=None):
        self.port = port or free_port()
        self.conf = os.path.join(workdir, f"stunnel-{self.port}-{len(os.listdir(workdir))}.conf")
        with open(self.conf, "w") as f:
            f.write(rewrite(self.port, redis.port, ca, check_host, client))
        self.started_usec = time.time_ns() // 1000
        # systemd-cat execs stunnel4: this is stunnel's pid, and its journal entries' _PID.
        self.proc = subprocess.Popen(["systemd-cat", "-t", TAG, STUNNEL, self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._up, 10, f"stunnel to listen on port {self.port}")

    def _up(self):
        assert self.proc.poll() is None, \
            f"stunnel exited {self.proc.returncode}: {self.messages()}"
        return listening(self.port)

    def journal(self):
        return Journald.entries(self.proc.pid, self.started_usec, SYSLOG_IDENTIFIER=TAG)

    def messages(self):
        return [e.get("MESSAGE", "") for e in self.journal()]

    def wait_message(self, text, timeout):
        return wait_for(lambda: [m for m in self.messages() if text in m], timeout,
                        f"a line with {text!r} in the tunnel's journal", interval=0.05)

    def stop(self):
        stop_process(self.proc)


@pytest.fixture
def tls_redis(workdir, pki):
    r = TlsRedis(workdir, pki)
    yield r
    r.stop()


@pytest.fixture
def tunnel(workdir, journald, tls_redis):
    """tunnel(ca, port=None, check_host="localhost") -> a running Tunnel to tls_redis; each
    stopped at teardown."""
    started = []

    def start(ca, **kw):
        t = Tunnel(workdir, tls_redis, ca, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def refused(tunnel):
    """A client of the tunnel gets no answer to PING: its connection is reset, on connect already
    when the tunnel has been refused by then (a busy machine), or on the reply."""
    c = None
    try:
        with pytest.raises((ConnectionError, OSError)):
            c = RedisClient(tunnel.port)
            c("PING")
    finally:
        if c is not None:
            c.close()


def usec(entry, field="__REALTIME_TIMESTAMP"):
    return int(entry[field])


def test_seed_5_3_1_through_the_shipped_tunnel(tls_redis, tunnel, pki, start_qworker):
    # Redis has no plain port: whatever qworker does there went through the tunnel, in TLS.
    assert tls_redis("CONFIG", "GET", "port") == [b"port", b"0"]
    t = tunnel(pki["ca"])
    q = start_qworker(t.port, worker={"concurrency": 3})
    q.wait_message("ready", 10)
    pushed = push(tls_redis, 5, 3, 1)
    done = q.wait_completions(3, 10)
    assert [e["QWORKER_OUTCOME"] for e in done] == ["ok"] * 3
    # The 1 s task first, the 5 s one last, all three at once: the seed's behaviour, unchanged
    # by the tunnel (margins scaled for sanitizer builds, never the lower bounds).
    durations = [int(e["QWORKER_DURATION_MS"]) for e in done]
    assert [round(d / 1000) for d in durations] == [1, 3, 5], durations
    for d, want in zip(durations, (1000, 3000, 5000)):
        assert want <= d <= want + 100 * SLOW, durations
    elapsed = (usec(done[-1]) - pushed) / 1e6
    assert 5.0 <= elapsed <= 5.0 + 0.5 * SLOW, f"last completion {elapsed:.3f} s after the push"
    s = stats(tls_redis)
    assert s["processed"] == 3 and s["succeeded"] == 3, s
    # qworker's named connections are on the TLS server, and the tunnel verified it quietly:
    # at debug = warning, nothing in its journal.
    names = re.findall(rb"name=(qworker-\S+)", tls_redis("CLIENT", "LIST"))
    assert b"qworker-consumer" in names, names
    assert q.stop() == 0
    assert t.messages() == [], t.messages()


def test_a_server_certificate_from_another_ca_is_refused_once_then_recovers(
        tls_redis, tunnel, pki, start_qworker):
    bad = tunnel(pki["other_ca"])
    q = start_qworker(bad.port, worker={"concurrency": 3})
    # qworker: one line, naming the address it cannot use.
    outage = q.wait_message("unreachable", 10)
    assert f"redis 127.0.0.1:{bad.port} unreachable" in outage[0]["MESSAGE"], outage
    # And it says where to look: the tunnel closed the connection before any reply.
    assert "closed before any reply" in outage[0]["MESSAGE"], outage
    assert outage[0]["PRIORITY"] == "4"
    # The tunnel: why, in words, in the journal.
    bad.wait_message("certificate verify failed", 10)
    said = "\n".join(bad.messages())
    # (depth=1: redis-server sends the test CA along with its certificate, and that CA is not
    # the one the tunnel trusts.)
    assert re.search(r"Rejected by CERT at depth=\d: CN=", said), said
    pushed_at = time.monotonic()
    push(tls_redis, "0.5")
    # Let it retry for 3 s: it keeps trying (the tunnel refuses each attempt), logs nothing more
    # and takes nothing. (Sleeping here only paces these checks, it waits for nothing.)
    refusals_before = said.count("certificate verify failed")
    while time.monotonic() < pushed_at + 3:
        assert q.proc.poll() is None, q.stderr_text()[-2000:]
        assert tls_redis("LLEN", "queue") == 1, "a task was taken through a refused tunnel"
        time.sleep(0.1)
    refusals = "\n".join(bad.messages()).count("certificate verify failed")
    assert refusals > refusals_before, "qworker stopped retrying"
    lines = q.journal()
    loud = [e["MESSAGE"] for e in lines if int(e.get("PRIORITY", "6")) <= 4]
    assert len(loud) <= 2, loud
    assert sum("unreachable" in e.get("MESSAGE", "") for e in lines) == 1, loud
    assert not q.completions() and "processed" not in stats(tls_redis)
    # The right CA in place (the tunnel restarted on it, as systemctl restart would): the task
    # that waited runs, and qworker says Redis is back, once.
    bad.stop()
    tunnel(pki["ca"], port=bad.port)
    done = q.wait_completions(1, 10)
    assert done[0]["QWORKER_OUTCOME"] == "ok"
    q.wait_message("reachable again", 5)
    assert tls_redis("LLEN", "queue") == 0
    assert stats(tls_redis)["succeeded"] == 1
    messages = [e.get("MESSAGE", "") for e in q.journal()]
    assert sum("unreachable" in m for m in messages) == 1, messages
    assert sum("reachable again" in m for m in messages) == 1, messages


def test_a_certificate_for_another_host_name_is_refused(tls_redis, tunnel, pki):
    """The right CA, but the server's certificate names localhost and 127.0.0.1, not the
    shipped checkHost (redis.example.com): refused all the same."""
    t = tunnel(pki["ca"], check_host=None)
    refused(t)
    t.wait_message("certificate verify failed", 10)
    said = "\n".join(t.messages())
    assert "CERT: Subject checks failed" in said, said
    assert "Rejected by CERT at depth=0: CN=localhost" in said, said


def test_a_client_certificate_when_redis_asks_for_one(workdir, journald, pki):
    """Redis's default is tls-auth-clients yes: without the (commented-out) cert and key lines
    it refuses the tunnel, and says so; with them it serves."""
    r = TlsRedis(workdir, pki, auth_clients=True)
    tunnels = []
    try:
        tunnels.append(Tunnel(workdir, r, pki["ca"]))
        refused(tunnels[0])
        # TLS 1.3: the server refuses after the handshake, so the tunnel hears it on its first
        # read ("tlsv13 alert certificate required") or sees its first write fail, whichever
        # comes first. Redis's own log says "peer did not return a certificate".
        wait_for(lambda: [m for m in tunnels[0].messages() if "certificate required" in m or
                          "TLS socket closed" in m], 10, "the refusal in the tunnel's journal")
        wait_for(lambda: "peer did not return a certificate" in r.log(), 10,
                 "the refusal in Redis's log")
        tunnels.append(Tunnel(workdir, r, pki["ca"], client=pki["client"]))
        c = RedisClient(tunnels[1].port)
        try:
            assert c("PING") == "PONG"
        finally:
            c.close()
        assert tunnels[1].messages() == [], tunnels[1].messages()
    finally:
        for t in tunnels:
            t.stop()
        r.stop()

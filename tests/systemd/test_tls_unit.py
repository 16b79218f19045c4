"""The TLS tunnel to Redis as the package ships it (issue 12): qworker-redis-tls.service and
/etc/qworker/tls/stunnel.conf from the .deb, in a real systemd (../shared/systemd-sandbox), in
front of a TLS-only redis-server running as a unit of its own. The package neither enables nor
starts the tunnel; once the operator has edited the two placeholder lines, put the CA in place and
enabled it, starting qworker starts the tunnel first, the seed scenario runs through it, and a
wrong CA is refused with the reason in the tunnel's journal."""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from sandbox_cmd import ROOT, Sandbox, wait_for

# Where `make deb` put the package (QWORKER_DEB_DIR: one built elsewhere, with BUILD=DIR).
BUILD = os.environ.get("QWORKER_DEB_DIR", os.path.join(ROOT, "build"))
TLS_PORT = 16390  # the sandbox has a network of its own: no other Redis there
TUNNEL = "qworker-redis-tls"

REDIS_TLS_UNIT = f"""[Unit]
Description=the tests' Redis, TLS only, on a private port
[Service]
Type=notify
ExecStart=/usr/bin/redis-server --port 0 --tls-port {TLS_PORT} --bind 127.0.0.1 \\
    --tls-cert-file /etc/test-tls/server.crt --tls-key-file /etc/test-tls/server.key \\
    --tls-ca-cert-file /etc/test-tls/ca.crt --tls-auth-clients no --save "" --appendonly no \\
    --supervised systemd
"""

CONFIG = """redis = { host = "127.0.0.1"; port = 6380; };
worker = { concurrency = 3; shutdown_timeout = 2; heartbeat_ttl = 3; };
log = { target = "auto"; };
"""


SB = Sandbox("qworker-tls-test")
sh, run = SB.sh, SB.run


def prop(name, unit):
    return run("systemctl", "show", "-p", name, "--value", unit).stdout.strip()


def journal(unit, since_usec=0):
    out = run("journalctl", "-u", unit, "-o", "json", "--no-pager", check=False).stdout
    return [e for e in map(json.loads, out.splitlines())
            if int(e["__REALTIME_TIMESTAMP"]) >= since_usec]


def messages(unit, since_usec=0):
    return [e.get("MESSAGE", "") for e in journal(unit, since_usec)]


def completions(since_usec):
    return [e for e in journal("qworker", since_usec) if "QWORKER_OUTCOME" in e]


def now_usec():
    return int(run("date", "+%s%6N").stdout)


def write(path, text, mode="0644"):
    run("sh", "-c", f'umask 077 && cat > "$1" && chmod {mode} "$1"', "sh", path, input=text)


def package():
    debs = sorted(f for f in os.listdir(BUILD) if re.fullmatch(r"qworker_[^_]+_[^_]+\.deb", f))
    assert debs, f"build the package first: make deb (looked in {BUILD})"
    return os.path.join(BUILD, debs[-1])


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d):
    """A CA, a server certificate for localhost/127.0.0.1 it signed, and an unrelated CA."""
    for name, cn in (("ca", "qworker test CA"), ("other-ca", "an unrelated CA")):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj",
                f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt", cwd=d)


@pytest.fixture(scope="module")
def sandbox():
    deb = package()
    assert shutil.which("stunnel4"), "stunnel4 is missing (make test installs DEB_TEST)"
    with tempfile.TemporaryDirectory(prefix="qworker-tls-unit-") as pki:
        make_pki(pki)
        sh("up", BUILD, pki, timeout=120)
        try:
            run("mount", "--make-rshared", "/")     # as tests/systemd/test_service.py says why
            run("rm", "-f", "/usr/sbin/policy-rc.d")
            run("dpkg", "-i", deb, timeout=120)
            installed = {"enabled": run("systemctl", "is-enabled", TUNNEL,
                                        check=False).stdout.strip(),
                         "active": prop("ActiveState", TUNNEL)}
            run("mkdir", "-p", "/etc/test-tls")
            for f in ("ca.crt", "server.crt", "server.key"):
                run("cp", os.path.join(pki, f), f"/etc/test-tls/{f}")
            write("/etc/systemd/system/test-redis-tls.service", REDIS_TLS_UNIT)
            run("systemctl", "daemon-reload")
            run("systemctl", "start", "test-redis-tls", timeout=30)
            yield {"installed": installed, "pki": pki}
        finally:
            sh("down", check=False, timeout=120)


def configure(pki, ca="ca.crt"):
    """What the operator does: the two EDIT lines of the installed configuration, the CA."""
    run("sed", "-i", "-e", f"s/^connect = .*/connect = 127.0.0.1:{TLS_PORT}/",
        "-e", "s/^checkHost = .*/checkHost = localhost/", "/etc/qworker/tls/stunnel.conf")
    run("install", "-m", "0644", os.path.join(pki, ca), "/etc/qworker/tls/redis-ca.pem")
    write("/etc/qworker/worker.conf", CONFIG, mode="0640")


def test_installed_but_neither_enabled_nor_started(sandbox):
    assert sandbox["installed"] == {"enabled": "disabled", "active": "inactive"}
    # The configuration is a conffile, the pristine copy beside worker.conf's example.
    conffiles = run("dpkg-query", "--showformat=${Conffiles}", "-W", "qworker").stdout
    assert "/etc/qworker/tls/stunnel.conf" in conffiles, conffiles
    pristine = run("cat", "/usr/share/doc/qworker/examples/qworker-redis-tls.conf").stdout
    with open(os.path.join(ROOT, "packaging", "stunnel", "qworker-redis-tls.conf")) as f:
        assert pristine == f.read()


def test_unit_is_hardened_and_verified(sandbox):
    path = f"/lib/systemd/system/{TUNNEL}.service"
    r = run("systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", path,
            check=False)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert r.returncode == 0 and score and float(score.group(1)) <= 2.0, r.stdout[-800:]
    out = run("systemd-analyze", "verify", path, check=False)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_enabled_tunnel_starts_before_qworker_and_carries_the_seed(sandbox):
    configure(sandbox["pki"])
    run("systemctl", "enable", TUNNEL)
    # Enabling made qworker and every instance want it; the instances are ordered after it too.
    assert f"{TUNNEL}.service" in prop("Wants", "qworker").split()
    assert "qworker.service" in prop("Before", TUNNEL).split()
    assert f"{TUNNEL}.service" in prop("Wants", "qworker@a").split()
    assert f"{TUNNEL}.service" in prop("After", "qworker@a").split()
    t0 = now_usec()
    run("systemctl", "start", "qworker", timeout=30)   # READY=1: Redis answered, through TLS
    assert prop("ActiveState", TUNNEL) == "active"
    assert prop("ActiveState", "qworker") == "active"
    # Started before qworker, and quietly (debug = warning: nothing to say).
    assert int(prop("ExecMainStartTimestampMonotonic", TUNNEL)) < \
        int(prop("ExecMainStartTimestampMonotonic", "qworker"))
    said = [e for e in journal(TUNNEL, t0) if e.get("SYSLOG_IDENTIFIER") == TUNNEL]
    assert said == [], said
    pushed = now_usec()
    run("redis-cli", "-p", "6380", "LPUSH", "queue", "5", "3", "1")
    done = wait_for(lambda: (lambda c: c if len(c) >= 3 else None)(completions(pushed)), 15,
                    "three completions")
    assert [e["QWORKER_OUTCOME"] for e in done] == ["ok"] * 3
    assert [e["QWORKER_DURATION_MS"][0] for e in done] == ["1", "3", "5"]
    assert 5.0 <= (int(done[-1]["__REALTIME_TIMESTAMP"]) - pushed) / 1e6 <= 5.5
    # The tasks went to the TLS server (straight there, verifying it, no tunnel).
    stats = run("redis-cli", "--tls", "--cacert", "/etc/test-tls/ca.crt", "-p", str(TLS_PORT),
                "HGET", "qworker:stats", "succeeded").stdout.strip()
    assert stats == "3"


def test_wrong_ca_is_refused_with_the_reason_in_the_journal(sandbox):
    configure(sandbox["pki"], ca="other-ca.crt")
    run("systemctl", "start", "qworker", timeout=30)
    t0 = now_usec()
    run("systemctl", "restart", TUNNEL, timeout=30)
    refused = wait_for(lambda: [m for m in messages(TUNNEL, t0) if "certificate verify failed"
                                in m], 15, "the refusal in the tunnel's journal")
    assert "SSL_connect" in refused[0], refused
    wait_for(lambda: [m for m in messages("qworker", t0) if "unreachable" in m], 10,
             "qworker's outage line")
    assert prop("ActiveState", TUNNEL) == "active"  # it refuses connections, it does not die
    # The right CA back: qworker is back without being touched.
    configure(sandbox["pki"])
    t1 = now_usec()
    run("systemctl", "restart", TUNNEL, timeout=30)
    wait_for(lambda: [m for m in messages("qworker", t1) if "reachable again" in m], 10,
             "qworker to reach Redis again")
    said = messages("qworker", t0)
    assert sum("unreachable" in m for m in said) == 1, said
    run("systemctl", "stop", "qworker", timeout=30)


def test_removal_stops_the_tunnel(sandbox):
    configure(sandbox["pki"])
    run("systemctl", "start", TUNNEL, timeout=30)
    assert prop("ActiveState", TUNNEL) == "active"
    run("dpkg", "-r", "qworker", timeout=120)
    assert prop("ActiveState", TUNNEL) == "inactive"

"""GET /metrics and /healthz (issue 11): what a Prometheus parser reads there agrees with what the
test pushed and with <prefix>:stats; the endpoint takes garbage, oversized and slow requests and
a thousand idle connections without a crash, a descriptor leak or a delay to tasks."""

import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ROOT, SLOW, free_port, push, stats, wait_for

PROMTOOL = shutil.which("promtool")


def monitoring_names():
    """SERVED of tests/systemd/test_monitoring.py, the names the dashboard and rules use."""
    path = os.path.join(ROOT, "tests", "systemd", "test_monitoring.py")
    spec = importlib.util.spec_from_file_location("monitoring_names", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SERVED


def get(port, path, timeout=5):
    """(status, content type, body) of one GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(port):
    """{(name, frozenset(labels)): value} of every sample, parsed by prometheus_client."""
    status, ctype, text = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, text


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def raw(port, data, timeout=5):
    """Sends bytes on a fresh connection; returns what came back before the server closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def watched(redis, start_qworker):
    port = free_port()
    handlers = [{"name": "fail", "type": "exec", "command": ["/bin/false"], "max_attempts": 1},
                {"name": "hang", "type": "exec", "command": ["/bin/sleep", "--"], "timeout": 0.2,
                 "max_attempts": 1, "kill_grace": 0.1}]
    q = start_qworker(redis.port, metrics={"listen": f"127.0.0.1:{port}"}, handlers=handlers,
                      queues=[{"name": "queue", "handler": "sleep"},
                              {"name": "other", "handler": "sleep"}])
    q.wait_message("ready", 10)
    return q, port


def task(task_id, handler="sleep", args=0.01, **more):
    return json.dumps({"id": task_id, "handler": handler, "args": args, **more})


def test_counters_agree_with_what_was_pushed_and_with_redis(redis, watched):
    q, port = watched
    ok = [task(f"ok-{i}") for i in range(7)]
    failed = [task(f"failed-{i}", "fail", []) for i in range(3)]
    timed_out = [task(f"timeout-{i}", "hang", ["30"]) for i in range(2)]
    invalid = ["not a number", task("invalid-1", "nope")]
    delayed = [task(f"later-{i}", delay=3600) for i in range(4)]
    push(redis, *ok, *failed, *timed_out, *invalid, *delayed)
    push(redis, task("other-1"), queue="other")
    # (A delayed task is logged, but it is no completion: it has not run.)
    q.wait_completions(len(ok) + len(failed) + len(timed_out) + len(invalid) + 1, 10)

    def recorded():
        samples, text = scrape(port)
        counts = {o: value(samples, "qworker_tasks_total", queue="queue", handler=h, outcome=o)
                  for o, h in (("ok", "sleep"), ("failed", "fail"), ("timeout", "hang"),
                               ("delayed", "sleep"))}
        return (samples, text) if counts == {"ok": 7, "failed": 3, "timeout": 2,
                                             "delayed": 4} else None
    samples, text = wait_for(recorded, 10, "the counters to reach what was pushed")
    # An unknown handler is counted under the queue's own; an unparsable payload too.
    assert value(samples, "qworker_tasks_total", queue="queue", handler="sleep",
                 outcome="invalid") == 2
    assert value(samples, "qworker_tasks_total", queue="other", handler="sleep",
                 outcome="ok") == 1
    recorded_stats = stats(redis)
    assert recorded_stats["succeeded"] == 8
    assert recorded_stats["failed"] == recorded_stats["dead"] == 3 + 2 + 2
    # Durations of what ran: ok, failed and timed out, nothing refused or delayed.
    count = sum(value(samples, "qworker_task_duration_seconds_count", queue="queue", handler=h)
                for h in ("sleep", "fail", "hang"))
    assert count == 7 + 3 + 2
    assert value(samples, "qworker_task_duration_seconds_bucket", queue="queue", handler="hang",
                 le="0.1") == 0  # they ran their 0.2 s timeout
    assert value(samples, "qworker_scheduled_tasks") == redis("ZCARD", "qworker:schedule") == 4
    assert value(samples, "qworker_dead_tasks") == redis("LLEN", "qworker:dead") == 7
    assert value(samples, "qworker_redis_up") == 1
    assert value(samples, "qworker_concurrency") == 100
    assert value(samples, "qworker_build_info", version="0.1.0") == 1
    assert value(samples, "qworker_fetch_duration_seconds_count") >= 1
    assert value(samples, "process_resident_memory_bytes") > 1 << 20
    assert value(samples, "process_open_fds") == pytest.approx(open_fds(q.pid), abs=3)
    if PROMTOOL:
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # What the shipped dashboard and alerts may name (tests/systemd/test_monitoring.py) is what
    # is served, name for name and type for type.
    served = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert served == monitoring_names(), set(served.items()) ^ set(monitoring_names().items())


def test_gauges_show_queues_running_and_waiting(redis, start_qworker):
    """Paused (SIGTSTP): pushed tasks wait in their queue, and the sampled length shows them.
    Resumed: a handler that runs one at a time holds one running and one waiting."""
    port = free_port()
    q = start_qworker(redis.port, metrics={"listen": f"127.0.0.1:{port}"},
                      handlers=[{"name": "nap", "type": "exec", "concurrency": 1,
                                 "command": ["/bin/sleep", "--"]}],
                      queues=[{"name": "queue", "handler": "nap"}])
    q.wait_message("ready", 10)
    q.signal(signal.SIGTSTP)
    q.wait_message("taking no new tasks", 5)
    push(redis, "30", "30")
    wait_for(lambda: value(scrape(port)[0], "qworker_queue_length", queue="queue") == 2,
             5, "the queue length (sampled once a second) to show both")
    q.signal(signal.SIGCONT)

    def held():
        samples = scrape(port)[0]
        return (value(samples, "qworker_tasks_in_flight"),
                value(samples, "qworker_tasks_waiting")) == (1, 1)
    wait_for(held, 5, "one running, one waiting")


def test_healthz_follows_redis(redis, watched):
    q, port = watched
    assert get(port, "/healthz")[:3:2] == (200, "ok\n")
    redis.stop()
    wait_for(lambda: get(port, "/healthz")[0] == 503, 10, "503 once Redis is gone")
    assert get(port, "/healthz")[2] == "redis unreachable\n"
    samples = scrape(port)[0]
    assert value(samples, "qworker_redis_up") == 0
    assert value(samples, "qworker_queue_length", queue="queue") is None  # unknown, not 0
    redis.start()
    wait_for(lambda: get(port, "/healthz")[0] == 200, 15, "200 once Redis is back")
    assert value(scrape(port)[0], "qworker_redis_reconnects_total") >= 1


def test_only_get_and_head_of_three_paths(watched):
    _, port = watched
    assert raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"\r\n\r\n")
    assert raw(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(
        b"HTTP/1.1 405 ")
    assert raw(port, b"GET /admin HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    for bad in (b"\x00\xff garbage\r\n\r\n", b"GET\r\n\r\n", b"GET /metrics HTTP/9\r\n\r\n",
                b"GET /met\x00rics HTTP/1.1\r\n\r\n", b"\r\n\r\n"):
        assert raw(port, bad).startswith(b"HTTP/1.1 400 "), bad


def test_hostile_clients_cannot_hurt_it(redis, watched):
    """Oversized headers, requests sent too slowly, and a thousand idle connections: qworker
    answers 431 or closes, holds at most 64 connections (descriptors stay bounded), keeps
    running tasks meanwhile, and answers /metrics again once they are gone."""
    q, port = watched
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:  # this test's own thousand sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    before = open_fds(q.pid)
    big = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(port, big).startswith(b"HTTP/1.1 431 ")
    # Half a request, never finished: closed by the server at its 5 s deadline.
    t0 = time.monotonic()
    assert raw(port, b"GET /metrics HTTP/1.1\r\nX-Slow: 1\r\n", timeout=30) == b""
    assert time.monotonic() - t0 < 5 + 3 * SLOW
    idle = []
    try:
        for _ in range(1000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))  # the kernel completes or queues it
            idle.append(s)
        # Tasks run meanwhile, undelayed by the listener.
        push(redis, *[task(f"busy-{i}") for i in range(50)])
        wait_for(lambda: len(q.completions("ok")) >= 50, 10, "50 tasks while besieged")
        assert q.proc.poll() is None
        assert open_fds(q.pid) <= before + 64 + 2, "more descriptors than the connection limit"
    finally:
        for s in idle:
            s.close()
    status = wait_for(lambda: get(port, "/metrics", timeout=10)[0], 15,
                      "/metrics to answer once the idle connections are gone")
    assert status == 200
    wait_for(lambda: open_fds(q.pid) <= before + 1, 10, "their descriptors to be closed")


def test_a_metrics_port_in_use_stops_the_start_with_why(redis, start_qworker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        q = start_qworker(redis.port, metrics={"listen": f"127.0.0.1:{port}"})
        assert q.wait_exit(10) == 1
        q.accepted_exits.add(1)
    said = q.wait_message("metrics: cannot listen on 127.0.0.1", 5)[0]["MESSAGE"]
    assert f":{port}: Address already in use" in said
    assert redis("EXISTS", "qworker:workers") == 0  # stopped before it took its id


def test_ipv6_loopback_and_a_reload_that_moves_the_port(redis, start_qworker):
    port = free_port()
    q = start_qworker(redis.port, metrics={"listen": f"[::1]:{port}"})
    q.wait_message("ready", 10)
    with socket.create_connection(("::1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    with open(q.config) as f:
        text = f.read().replace(f"[::1]:{port}", f"[::1]:{port + 1}")
    with open(q.config, "w") as f:
        f.write(text)
    q.signal(signal.SIGHUP)
    refused = q.wait_message("reload refused", 10)[0]["MESSAGE"]
    assert "metrics.listen cannot change without a restart" in refused


def chromium(workdir, *args):
    """Headless Chromium (Debian's), as root: no sandbox, a profile of its own."""
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={os.path.join(workdir, 'chromium')}", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_status_page_in_a_browser(redis, watched, workdir):
    """GET / in a real browser: this worker, its queues, the counters and the newest dead
    letters, a hostile task id shown as text and never run as markup."""
    q, port = watched
    hostile = '<img src=x onerror="document.title=1">'
    push(redis, task("fine"), task(hostile, "nope"), "not a number")
    q.wait_completions(3, 10)
    wait_for(lambda: redis("LLEN", "qworker:dead") == 2, 5, "two dead letters")
    status, ctype, _ = get(port, "/")
    assert status == 200 and ctype == "text/html; charset=utf-8"
    dom = chromium(workdir, "--dump-dom", f"http://127.0.0.1:{port}/")
    inline = re.sub(r"</?(b|span|code)\b[^>]*>", "", dom)
    text = " ".join(re.sub(r"<[^>]+>", " ", inline).split())
    assert "<img" not in dom.split("<body>", 1)[1], "a task id became markup"
    assert "&lt;img src=x onerror=" in dom  # shown, as text
    assert "running; redis up; 0 running, 0 waiting, 100 free of 100; since start 1 done, " \
           "2 failed" in text, text[:400]
    assert "queue sleep 0 taking" in text and "other sleep 0 taking" in text, text
    assert f" {q.pid} 0.1.0 0 " in text  # this worker: pid, version, nothing in flight
    assert "succeeded 1" in text and "dead 2" in text
    assert "unknown handler \"nope\"" in text and "not a plain number of seconds" in text
    assert "2 in qworker:dead" in text

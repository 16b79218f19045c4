"""The original example, kept exactly: sleep tasks from a Redis list, run concurrently on an event
loop that never blocks (issue 2)."""

import json
import os
import pwd
import re
import signal
import subprocess
import time

import pytest

from harness import SLOW, push, QWORKER, ROOT, RedisServer, free_port, wait_for


def usec(entry, field="__REALTIME_TIMESTAMP"):
    return int(entry[field])



@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_original_example_5_3_1(redis, start_qworker, delivery):
    q = start_qworker(redis.port, worker={"delivery": delivery})
    q.wait_message("ready", 10)
    pushed = push(redis, 5, 3, 1)
    done = q.wait_completions(3, 10)
    assert [e["QWORKER_OUTCOME"] for e in done] == ["ok"] * 3
    # In order: the 1 s task first, the 5 s one last, each lasting what it asked for.
    durations = [int(e["QWORKER_DURATION_MS"]) for e in done]
    assert [round(d / 1000) for d in durations] == [1, 3, 5], durations
    for d, want in zip(durations, (1000, 3000, 5000)):
        assert want <= d <= want + 50 * SLOW, durations
    # All done 5.0 to 5.3 s after the push (the margin scaled for sanitizer builds, never the
    # lower bound): they ran at the same time.
    elapsed = (usec(done[-1]) - pushed) / 1e6
    assert 5.0 <= elapsed <= 5.0 + 0.3 * SLOW, f"last completion {elapsed:.3f} s after the push"
    for e in done:
        assert e["QWORKER_QUEUE"] == "queue" and e["QWORKER_HANDLER"] == "sleep"
        assert e["QWORKER_ATTEMPT"] == "1" and e["PRIORITY"] == "6"
        assert re.fullmatch(r"task [0-9a-f]{16} done queue=queue handler=sleep outcome=ok "
                            r"duration_ms=\d+ attempt=1", e["MESSAGE"]), e["MESSAGE"]
    stats = redis("HGETALL", "qworker:stats")
    stats = dict(zip(stats[::2], stats[1::2]))
    assert stats[b"processed"] == b"3" and stats[b"succeeded"] == b"3"


def test_loop_never_blocks_6_and_3(redis, start_qworker):
    q = start_qworker(redis.port)
    q.wait_message("ready", 10)
    pushed = push(redis, 6, 3)
    done = q.wait_completions(2, 12)
    elapsed = (usec(done[-1]) - pushed) / 1e6
    assert 6.0 <= elapsed <= 6.0 + 0.3 * SLOW, \
        f"6 s and 3 s tasks took {elapsed:.3f} s (9 s would mean blocking)"


def test_task_pushed_while_others_run_starts_within_10ms(redis, start_qworker):
    q = start_qworker(redis.port)
    q.wait_message("ready", 10)
    push(redis, 3)
    wait_for(lambda: redis("LLEN", "queue") == 0, 5, "the 3 s task to be taken")
    lags = []
    for i in range(5):
        pushed = push(redis, "0.2")
        done = q.wait_completions(1 + i, 5)
        lags.append((usec(done[-1], "QWORKER_STARTED_USEC") - pushed) / 1000)
    # They ran while the 3 s task was still running.
    assert [round(int(e["QWORKER_DURATION_MS"]), -2) for e in done] == [200] * 5
    assert max(lags) <= 10 * SLOW, f"pickup latencies {lags} ms"
    q.wait_completions(6, 5)


def test_concurrency_2_runs_five_tasks_in_three_waves(redis, start_qworker):
    q = start_qworker(redis.port, worker={"concurrency": 2})
    q.wait_message("ready", 10)
    pushed = push(redis, 1, 1, 1, 1, 1)
    # While the first wave runs, the other three wait in Redis, for other workers to take.
    wait_for(lambda: redis("LLEN", "queue") == 3, 2, "the first wave to be taken")
    # Until the first wave can have ended (1 s after the push), nothing more may be taken.
    while time.time_ns() // 1000 < pushed + 950_000:
        assert redis("LLEN", "queue") == 3, "took more than its free capacity"
        time.sleep(0.02)
    done = q.wait_completions(5, 6)
    starts = sorted((usec(e, "QWORKER_STARTED_USEC") - pushed) / 1e6 for e in done)
    waves = [round(s) for s in starts]
    assert waves == [0, 0, 1, 1, 2], f"start times {starts}"
    elapsed = (max(usec(e) for e in done) - pushed) / 1e6
    assert 3.0 <= elapsed <= 3.0 + 0.3 * SLOW, \
        f"five 1 s tasks at concurrency 2 took {elapsed:.3f} s"


BAD_PAYLOADS = [
    (b"abc", "not a plain number of seconds"),
    (b"-1", "negative number of seconds"),
    (b"1e999", "not a plain number of seconds"),
    (b"nan", "not a plain number of seconds"),
    (b"", "empty payload"),
    (b"x" * (1 << 20), "payload too long for a number of seconds (1048576 bytes)"),
]


def test_bad_payloads_warn_and_the_next_task_runs(redis, start_qworker):
    q = start_qworker(redis.port)
    q.wait_message("ready", 10)
    for payload, _ in BAD_PAYLOADS:
        push(redis, payload)
    push(redis, "0.1")
    done = q.wait_completions(len(BAD_PAYLOADS) + 1, 10)
    invalid = [e for e in done if e["QWORKER_OUTCOME"] == "invalid"]
    assert len(invalid) == len(BAD_PAYLOADS)
    for e, (payload, reason) in zip(invalid, BAD_PAYLOADS):
        assert e["PRIORITY"] == "4", e  # warning
        assert reason in e["MESSAGE"], (reason, e["MESSAGE"])
        assert len(e["MESSAGE"]) < 400, "a warning must not carry a whole blob"
    assert [e["QWORKER_OUTCOME"] for e in done][-1] == "ok"
    assert q.proc.poll() is None
    # Nothing is lost: each bad payload is kept, whole, in the dead-letter list.
    dead = redis("LRANGE", "qworker:dead", 0, -1)
    assert len(dead) == len(BAD_PAYLOADS)
    kept = sorted(json.loads(d)["payload"].encode() for d in dead)
    assert kept == sorted(p for p, _ in BAD_PAYLOADS)
    entry = json.loads(dead[0])
    assert set(entry) >= {"payload", "queue", "handler", "reason", "attempts", "time", "worker"}


def test_started_before_redis_waits_logs_once_then_runs(workdir, start_qworker):
    redis = RedisServer(workdir)
    q = start_qworker(redis.port)
    q.wait_message("unreachable", 10)
    # Let it retry for a while: each retry must stay silent.
    outage_end = time.monotonic() + 2.5
    while time.monotonic() < outage_end:
        assert q.proc.poll() is None
        time.sleep(0.1)
    redis.start()
    try:
        push(redis, "0.1")
        q.wait_completions(1, 5)
        q.wait_message("reachable again", 5)
        lines = [e["MESSAGE"] for e in q.journal()]
        assert sum("unreachable" in m for m in lines) == 1, lines
        assert sum("reachable again" in m for m in lines) == 1, lines
        assert q.stop() == 0
    finally:
        redis.stop()


def run_qworker(*args):
    return subprocess.run([QWORKER, *args], capture_output=True, text=True, timeout=10)


BAD_CONFIGS = [
    ("worker = { concurency = 4; };\n", 1, "unknown setting 'concurency' in the worker section"),
    ("redis = {\n  port = 99999;\n};\n", 2, "'port' = 99999 is out of range"),
    ("redis = { port = \"6379\"; };\n", 1, "'port' must be a whole number"),
    ("worker = { concurrency = 8589934592; };\n", 1, "out of range"),
    ("log = { level = \"loud\"; };\n", 1, "log level \"loud\""),
    ("queues = ( { name = \"q\"; handler = \"nope\"; } );\n", 1, "no handler named 'nope'"),
    ("redis = { host = \"x\";\n  port = ; };\n", 2, "syntax error"),
    ("\n\nbogus = 1;\n", 3, "unknown setting 'bogus'"),
    ("worker = { task_user = \"no-such-user-qw\"; };\n", 1,
     "task_user \"no-such-user-qw\": no such user"),
    ("worker = { task_user = \"root\"; };\n", 1, "is root or in its group"),
    ("handlers = ( { name = \"h\"; type = \"exec\"; command = [\"/bin/true\"];\n"
     "  network = \"yes\"; } );\n", 2, "'network' must be true or false"),
    ("metrics = { listen = \"localhost:9464\"; };\n", 1, "\"localhost\" is not an IP address"),
    ("metrics = { listen = \"127.0.0.1\"; };\n", 1, "want ADDRESS:PORT"),
    ("metrics = { listen = \"[::1]:70000\"; };\n", 1, "want ADDRESS:PORT"),
    ("metrics = { port = 9464; };\n", 1, "unknown setting 'port' in the metrics section"),
]


@pytest.mark.parametrize("text,line,message", BAD_CONFIGS)
def test_bad_config_exits_78_with_file_line_message(workdir, text, line, message):
    path = os.path.join(workdir, "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    for args in (["-t", "-c", path], ["-c", path]):
        r = run_qworker(*args)
        assert r.returncode == 78, (args, r.stderr)
        first = r.stderr.splitlines()[0]
        assert first.startswith(f"{path}:{line}: "), first
        assert message in first, first


def test_example_config_is_valid(workdir):
    example = os.path.join(ROOT, "worker.conf.example")
    r = run_qworker("-t", "-c", example)
    try:
        pwd.getpwnam("qworker-task")
    except KeyError:
        # The package makes the user that the example (the packaged worker.conf) names; on a
        # machine without it, -t says so, and the rest is checked with a user that exists.
        assert r.returncode == 78 and 'task_user "qworker-task": no such user' in r.stderr, \
            r.stderr
        with open(example) as f:
            text = f.read().replace('task_user = "qworker-task";', 'task_user = "nobody";')
        example = os.path.join(workdir, "example.conf")
        with open(example, "w") as f:
            f.write(text)
        r = run_qworker("-t", "-c", example)
    assert r.returncode == 0, r.stderr
    for conf in os.listdir(os.path.join(ROOT, "conf")):
        r = run_qworker("-t", "-c", os.path.join(ROOT, "conf", conf))
        assert r.returncode == 0, (conf, r.stderr)


def test_t_warns_about_exec_commands_without_end_of_options(workdir):
    """Whoever can push chooses the arguments: without a final "--" they may be options."""
    path = os.path.join(workdir, "exec.conf")
    with open(path, "w") as f:
        f.write('handlers = ( { name = "open"; type = "exec"; command = ["/bin/echo", "-n"]; },\n'
                '             { name = "closed"; type = "exec"; command = ["/bin/echo", "--"]; },\n'
                '             { name = "fed"; type = "exec"; command = ["/bin/cat"]; '
                'args = "stdin"; } );\n')
    r = run_qworker("-t", "-c", path)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "handler open" in warned[0] and '"--"' in warned[0], r.stderr
    assert r.stderr.splitlines()[-1].endswith("configuration is valid")


def write_file(path, text, mode):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def password_warnings(stderr):
    return [line for line in stderr.splitlines() if "warning" in line and "password" in line]


@pytest.mark.parametrize("mode,warns", [(0o644, True), (0o604, True), (0o640, False),
                                        (0o600, False)])
def test_t_warns_when_every_user_may_read_an_inline_password(workdir, mode, warns):
    """Group read is how the package lets the daemon read its configuration (0640): only a
    configuration that every user may read is said to expose the password."""
    path = write_file(os.path.join(workdir, "inline.conf"),
                      'redis = { password = "s3cret"; };\n', mode)
    r = run_qworker("-t", "-c", path)
    assert r.returncode == 0, r.stderr
    warned = password_warnings(r.stderr)
    if not warns:
        assert warned == [], r.stderr
        return
    assert len(warned) == 1, r.stderr
    assert warned[0].startswith(f"{path}: warning: {path} holds the redis password"), warned[0]
    assert f"(mode {mode:04o})" in warned[0] and f"chmod 0640 {path}" in warned[0], warned[0]
    assert "s3cret" not in r.stderr


@pytest.mark.parametrize("mode,warns", [(0o644, True), (0o640, True), (0o604, True),
                                        (0o600, False), (0o400, False)])
def test_t_warns_when_a_password_file_may_be_read_by_its_group_or_others(workdir, mode, warns):
    secret = write_file(os.path.join(workdir, "redis-password"), "s3cret\n", mode)
    path = write_file(os.path.join(workdir, "file.conf"),
                      f'redis = {{ password_file = "{secret}"; }};\n', 0o644)
    r = run_qworker("-t", "-c", path)
    assert r.returncode == 0, r.stderr
    warned = password_warnings(r.stderr)
    if not warns:
        assert warned == [], r.stderr  # nor about the 0644 configuration: it holds no password
        return
    assert len(warned) == 1, r.stderr
    assert f"password_file {secret} may be read by more than its owner (mode {mode:04o})" \
        in warned[0] and f"chmod 0600 {secret}" in warned[0], warned[0]
    assert "s3cret" not in r.stderr


def test_t_relative_password_file_is_read_from_credentials_directory(workdir):
    """As systemd's LoadCredential= passes it: $CREDENTIALS_DIRECTORY/NAME."""
    path = write_file(os.path.join(workdir, "cred.conf"),
                      'redis = { password_file = "redis-password"; };\n', 0o644)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    r = subprocess.run([QWORKER, "-t", "-c", path], capture_output=True, text=True, timeout=10,
                       env=env)
    assert r.returncode == 78, r.stderr
    assert r.stderr.startswith(f"{path}:1: 'password_file' \"redis-password\" is relative"), \
        r.stderr
    assert "$CREDENTIALS_DIRECTORY, which is not set" in r.stderr
    write_file(os.path.join(workdir, "redis-password"), "s3cret\n", 0o400)
    r = subprocess.run([QWORKER, "-t", "-c", path], capture_output=True, text=True, timeout=10,
                       env=dict(env, CREDENTIALS_DIRECTORY=workdir))
    assert r.returncode == 0 and password_warnings(r.stderr) == [], r.stderr


def test_password_file_authenticates_and_a_changed_one_needs_a_restart(workdir, start_qworker):
    """The password read from the file is what AUTH sends; a reload reads the file again, and a
    new password there is refused until a restart (the connections keep the old one)."""
    redis = RedisServer(workdir).start()
    try:
        redis("CONFIG", "SET", "requirepass", "from-a-file")  # this connection stays in
        secret = write_file(os.path.join(workdir, "redis-password"), "from-a-file\n", 0o644)
        q = start_qworker(redis.port, redis={"password_file": secret})
        q.wait_message("ready", 10)
        warned = q.wait_message("may be read by more than its owner", 5)
        assert warned[0]["PRIORITY"] == "4" and f"chmod 0600 {secret}" in warned[0]["MESSAGE"]
        push(redis, "0.1")
        assert q.wait_completions(1, 5)[0]["QWORKER_OUTCOME"] == "ok"
        write_file(secret, "rotated\n", 0o600)
        q.signal(signal.SIGHUP)
        refused = q.wait_message("reload refused", 10)
        assert "the redis password (inline or in its password_file) cannot change without a " \
            "restart" in refused[0]["MESSAGE"]
        assert "rotated" not in refused[0]["MESSAGE"]
        push(redis, "0.1")
        assert len(q.wait_completions(2, 5)) == 2
        assert q.stop() == 0
    finally:
        redis.stop()


def test_missing_config_file_exits_78(workdir):
    r = run_qworker("-c", os.path.join(workdir, "absent.conf"))
    assert r.returncode == 78 and "absent.conf:0: cannot read" in r.stderr


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_sigterm_while_tasks_run_exits_promptly_and_requeues(redis, start_qworker, delivery):
    q = start_qworker(redis.port,
                      worker={"shutdown_timeout": 1, "concurrency": 3, "delivery": delivery})
    q.wait_message("ready", 10)
    push(redis, 30, 30, 30)
    wait_for(lambda: redis("LLEN", "queue") == 0, 5, "the tasks to be taken")
    push(redis, 40)  # waits: no free capacity
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    assert q.wait_exit(5) == 0
    took = time.monotonic() - t0
    assert took < 1.0 + 1.0 * SLOW, f"exit took {took:.2f} s with shutdown_timeout = 1"
    # Nothing lost: the three running tasks are back at the front (the right end, popped first),
    # ahead of the one that was waiting.
    assert redis("LRANGE", "queue", 0, -1) == [b"40", b"30", b"30", b"30"]
    requeued = q.completions("requeued")
    assert len(requeued) == 3 and all(e["PRIORITY"] == "5" for e in requeued)


@pytest.mark.parametrize("delivery,command", [("at-least-once", b"cmd=blmove"),
                                              ("at-most-once", b"cmd=blmpop")])
def test_sigterm_while_idle_exits_at_once(redis, start_qworker, delivery, command):
    q = start_qworker(redis.port, worker={"delivery": delivery})
    q.wait_message("ready", 10)
    wait_for(lambda: any(c.startswith(b"id=") and command in c
                         for c in redis("CLIENT", "LIST").split(b"\n")), 5, "a blocked fetch")
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    assert q.wait_exit(5) == 0
    assert time.monotonic() - t0 < 0.5 * SLOW
    # A task pushed after the stop stays in Redis.
    push(redis, 1)
    assert redis("LLEN", "queue") == 1


def test_make_demo_prints_three_completions_and_leaves_nothing(workdir):
    r = subprocess.run(["make", "-C", ROOT, "--no-print-directory", "demo"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    done = [l for l in r.stdout.splitlines() if "outcome=ok" in l]
    assert len(done) == 3, r.stdout
    assert [re.search(r"duration_ms=(\d+)", l).group(1)[0] for l in done] == ["1", "3", "5"]
    left = subprocess.run(["pgrep", "-af", "conf/demo.conf|redis-server.*:26379"],
                          capture_output=True, text=True).stdout
    assert left == "", f"left behind: {left}"

"""Real parts for end-to-end tests: a redis-server on a private port, a standalone journald, and
the qworker binary. Everything started here is stopped here, by PID; nothing waits by sleeping:
wait_for() polls a condition against a deadline."""

import collections
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QWORKER = os.environ.get("QWORKER_BIN", os.path.join(ROOT, "build", "qworker"))
# Sanitizer builds are slower: deadlines (never assertions on measured behaviour) scale by this.
SLOW = float(os.environ.get("QWORKER_TEST_SLOW", "1"))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                   "ERROR: LeakSanitizer")


def wait_for(cond, timeout, what, interval=0.01):
    """Polls cond() until it returns something truthy; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * SLOW:.1f} s waiting for {what}")
        time.sleep(interval)


def push(redis, *payloads, queue="queue"):
    """LPUSH, returning the wall-clock time (µs) just before the command left."""
    c = redis.client()
    t = time.time_ns() // 1000
    c.send("LPUSH", queue, *payloads)
    c._reply()
    return t


def stats(redis):
    """<prefix>:stats as {field: int}."""
    flat = redis("HGETALL", "qworker:stats")
    return {k.decode(): int(v) for k, v in zip(flat[::2], flat[1::2])}


# QWORKER_TEST_PORTS="LOW-HIGH": ports are taken from that range only (tests/run-all.sh gives
# the suites it runs side by side ranges of their own, below the kernel's ephemeral ones, so
# that two of them never pick the same port); else the kernel picks.
_PORTS = os.environ.get("QWORKER_TEST_PORTS")
_next_port = None


def free_port():
    global _next_port
    if not _PORTS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = (int(x) for x in _PORTS.split("-"))
    if _next_port is None:
        _next_port = low + os.getpid() % (high - low + 1)
    for _ in range(high - low + 1):
        port = _next_port
        _next_port = low if _next_port >= high else _next_port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError(f"no free port in {_PORTS}")


class RedisClient:
    """A minimal RESP2 client: tests time their own pushes to the microsecond, so no fork of
    redis-cli sits between the clock reading and the command."""

    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(max(65536, n + 2 - len(self.buf)))
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def __call__(self, *args):
        self.send(*args)
        return self._reply()


class RedisServer:
    def __init__(self, workdir, port=None, extra=()):
        self.port = port or free_port()
        self.dir = os.path.join(workdir, f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.extra = list(extra)
        self.proc = None
        self._client = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log"] + self.extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, 10, f"redis-server on port {self.port}")
        return self

    def new_client(self, timeout=10):
        """A connection of its own (subclasses: with a password, on a unix socket...)."""
        return RedisClient(self.port, timeout=timeout)

    def _ping(self):
        """Ready to serve: PING answers while Redis still loads its data, EXISTS does not."""
        try:
            c = self.new_client(timeout=1)
            try:
                return c("EXISTS", "qworker-test-probe") == 0
            finally:
                c.close()
        except (OSError, RuntimeError):
            return False

    def client(self):
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def __call__(self, *args):
        return self.client()(*args)

    def stop(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        stop_process(self.proc)
        self.proc = None


def stop_process(proc):
    """SIGTERM, then SIGKILL after 10 s: a process the test started (None: nothing to do)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Journald:
    """The machine's journald if one runs, else a standalone one started (and later stopped)
    here."""

    SOCKET = "/run/systemd/journal/socket"

    def __init__(self):
        self.proc = None

    def start(self):
        if self._alive():
            return self
        os.makedirs("/run/systemd/journal", exist_ok=True)
        self.proc = subprocess.Popen(["/lib/systemd/systemd-journald"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._alive, 10, "systemd-journald's socket")
        return self

    def _alive(self):
        if not os.path.exists(self.SOCKET):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(self.SOCKET)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @staticmethod
    def entries(pid, since_usec, **match):
        """The journal entries of one process, as dicts, in order. PIDs are reused and the
        journal outlives test runs: only entries since the process started are its own."""
        cmd = ["journalctl", "--no-pager", "-o", "json", f"--since=@{since_usec // 1000000 - 1}",
               f"_PID={pid}"]
        cmd += [f"{k}={v}" for k, v in match.items()]
        out = subprocess.run(cmd, capture_output=True, check=False).stdout
        found = []
        for line in out.splitlines():
            e = json.loads(line)
            if int(e["__REALTIME_TIMESTAMP"]) < since_usec:
                continue
            if isinstance(e.get("MESSAGE"), list):  # journalctl's form for non-UTF-8 bytes
                e["MESSAGE"] = bytes(e["MESSAGE"]).decode("utf-8", "replace")
            found.append(e)
        return found


def write_config(path, redis_port, worker=None, queues=None, handlers=None, log=None, extra="",
                 redis=None, metrics=None):
    worker = {"concurrency": 100, "shutdown_timeout": 5, **(worker or {})}

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return group(v)
        return str(v)

    def group(d):
        return "{ " + " ".join(f"{k} = {value(v)};" for k, v in d.items()) + " }"

    # With Sentinel the master's address comes from the sentinels, never from host and port.
    where = {} if "sentinel" in (redis or {}) else {"host": "127.0.0.1", "port": redis_port}
    text = f"redis = {group({**where, **(redis or {})})};\n"
    text += f"worker = {group(worker)};\n"
    text += f"log = {group({'level': 'info', 'target': 'journal', **(log or {})})};\n"
    if queues is not None:
        text += "queues = ( " + ", ".join(group(q) for q in queues) + " );\n"
    if handlers is not None:
        text += "handlers = ( " + ", ".join(group(h) for h in handlers) + " );\n"
    if metrics is not None:
        text += f"metrics = {group(metrics)};\n"
    text += extra
    with open(path, "w") as f:
        f.write(text)
    # Closed as an operator keeps a file that may hold a password: one that every user may read
    # makes qworker warn at start (issue 10), a line the tests of quiet runs would count.
    os.chmod(path, 0o600)
    return path


OK_LINE = re.compile(r"^\S+ \S+ info +task (\S+) done ", re.M)


class Qworker:
    def __init__(self, config, workdir, name="qworker", log_target="journal"):
        self.config = config
        self.log_target = log_target
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.proc = None
        self.accepted_exits = {0, -signal.SIGKILL}  # what teardown accepts once it has exited

    def start(self):
        self.stderr = open(self.stderr_path, "wb")
        self.started_usec = time.time_ns() // 1000
        self.proc = subprocess.Popen([QWORKER, "-c", self.config], stdout=self.stderr,
                                     stderr=self.stderr, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qworker did not exit within {timeout * SLOW:.1f} s")

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_reports(self):
        text = self.stderr_text()
        return [m for m in SANITIZER_MARKS if m in text]

    def journal(self, **match):
        return Journald.entries(self.pid, self.started_usec, **match)

    def ok_ids(self):
        """The ids of the tasks that ended ok, in order: from the text log when the worker logs
        to stderr (no journald rate limit for tests of many thousand tasks), else from its
        journal."""
        if self.log_target == "stderr":
            return [m.group(1) for m in OK_LINE.finditer(self.stderr_text())]
        return [e["QWORKER_TASK_ID"] for e in self.completions("ok")]

    def completions(self, outcome=None):
        match = {"QWORKER_OUTCOME": outcome} if outcome else {}
        return [e for e in self.journal(**match) if "QWORKER_OUTCOME" in e]

    def wait_completions(self, n, timeout, outcome=None):
        return wait_for(lambda: (lambda c: c if len(c) >= n else None)(self.completions(outcome)),
                        timeout, f"{n} completion(s) in the journal of qworker {self.pid}",
                        interval=0.05)

    def messages(self):
        """Its log lines, from wherever it logs."""
        if self.log_target == "stderr":
            return self.stderr_text().splitlines()
        return [e.get("MESSAGE", "") for e in self.journal()]

    def wait_state(self, text, timeout):
        """Asks for its state line (SIGUSR1) until one holds text, e.g. "1 running, 0 waiting":
        a task out of its queue may still be on its way to the loop, not running yet."""
        def state():
            self.signal(signal.SIGUSR1)
            return [m for m in self.messages() if "state: " in m and text in m]
        return wait_for(state, timeout, f"a state line with {text!r}", interval=0.2)

    def wait_message(self, text, timeout):
        """Its first log lines holding text: journal entries, or text lines on stderr."""
        if self.log_target == "stderr":
            return wait_for(lambda: [m for m in self.messages() if text in m], timeout,
                            f"a log line with {text!r}", interval=0.05)
        return wait_for(lambda: [e for e in self.journal() if text in e.get("MESSAGE", "")],
                        timeout, f"a journal line with {text!r}", interval=0.05)


LOUD = re.compile(r"^\S+ \S+ (warning|err|crit|alert|emerg) ", re.M)


def loud_lines(*workers):
    """The lines at warning or worse that workers logging to stderr wrote."""
    return [m.group(0) + line for w in workers
            for m, line in ((m, w.stderr_text()[m.end():].split("\n", 1)[0])
                            for m in LOUD.finditer(w.stderr_text()))]


def binary_exists():
    return os.access(QWORKER, os.X_OK) and shutil.which("redis-server") is not None


def task_ids(tag, n):
    """Distinct ids: tests compare the set of ids that ran, never a count that a duplicate could
    make up for a loss."""
    return [f"{tag}-{i}" for i in range(n)]


def sleep_tasks(ids, seconds=0):
    return [json.dumps({"id": i, "handler": "sleep", "args": seconds}) for i in ids]


def push_many(redis, payloads, queue="queue", chunk=10000):
    c = redis.client()
    for i in range(0, len(payloads), chunk):
        c.send("LPUSH", queue, *payloads[i:i + chunk])
    for i in range(0, len(payloads), chunk):
        c._reply()


def ran_ids(workers):
    """The ids of the tasks that ended ok, over several workers, as {id: times}."""
    seen = {}
    for w in workers:
        for i in w.ok_ids():
            seen[i] = seen.get(i, 0) + 1
    return seen


def wait_all_ran(workers, ids, timeout):
    """Waits until every id ran at least once; returns {id: times}."""
    want = set(ids)

    def done():
        seen = ran_ids(workers)
        return seen if want <= seen.keys() else None
    try:
        return wait_for(done, timeout, f"all {len(want)} tasks to run", interval=0.2)
    except AssertionError:
        missing = sorted(want - ran_ids(workers).keys())
        raise AssertionError(f"{len(missing)} of {len(want)} tasks never ran, e.g. {missing[:5]}")


def assert_stores_empty(redis, queues=("queue",), dead_ok=False):
    """Nothing left anywhere a task can wait: its queues, any in-flight hash, the schedule and
    (unless the test dead-letters on purpose) the dead list."""
    for q in queues:
        assert redis("LLEN", q) == 0, f"queue {q} still holds tasks"
    for key in redis("KEYS", "qworker:inflight:*"):
        assert redis("HLEN", key) == 0, f"{key.decode()} still holds tasks"
    assert redis("ZCARD", "qworker:schedule") == 0, "the schedule still holds tasks"
    if not dead_ok:
        assert redis("LLEN", "qworker:dead") == 0, redis("LRANGE", "qworker:dead", 0, 3)


def accept_pairs(listener, target_port):
    """Each connection a relay accepts, with one of its own to redis-server, until the listener
    is closed."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()
            continue
        yield client, server


class Relay:
    """A TCP relay in front of redis-server that can swallow what the server sends on the
    connections a qworker named (CLIENT SETNAME qworker-<role>; every one if role is None),
    counting what it swallowed, and cut every connection: a reply lost on the way, as a
    network fault loses it."""

    def __init__(self, target_port):
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.swallowing = None  # None: forward all; "": swallow all; else the role to swallow
        self.swallowed = b""
        self.pairs = []
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self, role=""):
        with self.lock:
            self.swallowed = b""
            self.swallowing = role

    def swallowed_bytes(self):
        with self.lock:
            return self.swallowed

    def _accept(self):
        for client, server in accept_pairs(self.listener, self.target):
            pair = {"client": client, "server": server, "name": b""}
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, server, client, True),
                             daemon=True).start()

    def _pump(self, pair, src, dst, from_server):
        try:
            while data := src.recv(65536):
                with self.lock:
                    if not from_server:
                        if not pair["name"] and b"qworker-" in data:
                            tail = data.split(b"qworker-", 1)[1]
                            pair["name"] = tail.split(b"\r\n", 1)[0]
                        drop = False
                    else:
                        role = self.swallowing
                        drop = role is not None and (role == "" or
                                                     pair["name"] == role.encode())
                        if drop:
                            self.swallowed += data
                if not drop:
                    dst.sendall(data)
        except OSError:
            pass

    def cut(self, role=None):
        """Cuts the connections of role (every one if None)."""
        with self.lock:
            cut = [p for p in self.pairs if role is None or p["name"] == role.encode()]
            self.pairs = [p for p in self.pairs if p not in cut]
        for p in cut:
            for s in (p["client"], p["server"]):
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
                except OSError:
                    pass
                s.close()

    def close(self):
        self.listener.close()
        self.cut()


def resp_end(buf, i=0):
    """Where the RESP value starting at buf[i] ends, or None while it is incomplete."""
    nl = buf.find(b"\r\n", i)
    if nl < 0:
        return None
    kind, head = buf[i:i + 1], buf[i + 1:nl]
    if kind in (b"+", b"-", b":"):
        return nl + 2
    if kind == b"$":
        end = nl + 2 + int(head) + 2 if int(head) >= 0 else nl + 2
        return end if len(buf) >= end else None
    if kind == b"*":
        j = nl + 2
        for _ in range(max(int(head), 0)):
            j = resp_end(buf, j)
            if j is None:
                return None
        return j
    raise ValueError(f"not RESP: {buf[i:i + 40]!r}")


def resp_args(buf, start, end):
    """The arguments of a command (an array of bulk strings) that a client sent."""
    args, j = [], buf.index(b"\r\n", start) + 2
    while j < end:
        nl = buf.index(b"\r\n", j)
        n = int(buf[j + 1:nl])
        args.append(buf[nl + 2:nl + 2 + n])
        j = nl + 2 + n + 2
    return args


class Tamper:
    """A relay in front of redis-server that reads RESP both ways and answers the scripts it is
    told to itself, as a buggy or compromised server would: the command never reaches Redis (so
    nothing moves there) and the client gets the given replies in turn, in order with the real
    replies to what it pipelined around them. Scripts are known by the SHA1 of build/lua/."""

    def __init__(self, target_port, lua_dir):
        self.target = target_port
        self.shas = {}
        for name in os.listdir(lua_dir):
            if name.endswith(".lua"):
                with open(os.path.join(lua_dir, name), "rb") as f:
                    self.shas[hashlib.sha1(f.read()).hexdigest().encode()] = name[:-4]
        self.lock = threading.Lock()
        self.answers = {}   # script name -> the replies to give, in turn
        self.answered = {}  # script name -> how many times it was answered here
        self.seen = set()   # script names the clients ran
        self.socks = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, name, replies):
        """From now on, answer script name with replies in turn (None: let Redis answer)."""
        with self.lock:
            if replies is None:
                self.answers.pop(name, None)
            else:
                self.answers[name] = list(replies)

    def count(self, name):
        with self.lock:
            return self.answered.get(name, 0)

    def _accept(self):
        for client, server in accept_pairs(self.listener, self.target):
            conn = {"client": client, "server": server, "pending": collections.deque(),
                    "out": threading.Lock()}
            with self.lock:
                self.socks += [client, server]
            threading.Thread(target=self._from_client, args=(conn,), daemon=True).start()
            threading.Thread(target=self._from_server, args=(conn,), daemon=True).start()

    def _fake(self, args):
        if len(args) < 2 or args[0].upper() != b"EVALSHA":
            return None
        name = self.shas.get(args[1].lower())
        with self.lock:
            if name is None:
                return None
            self.seen.add(name)
            replies = self.answers.get(name)
            if not replies:
                return None
            n = self.answered.get(name, 0)
            self.answered[name] = n + 1
            return replies[n % len(replies)]

    def _flush(self, conn):
        # Fake replies go out as soon as every real reply before them has.
        while conn["pending"] and conn["pending"][0] is not None:
            conn["client"].sendall(conn["pending"].popleft())

    @staticmethod
    def _values(sock):
        """The whole RESP values that arrive on sock, one by one."""
        buf = b""
        while data := sock.recv(65536):
            buf += data
            while (end := resp_end(buf)) is not None:
                value, buf = buf[:end], buf[end:]
                yield value

    def _from_client(self, conn):
        try:
            for cmd in self._values(conn["client"]):
                fake = self._fake(resp_args(cmd, 0, len(cmd)))
                with conn["out"]:
                    conn["pending"].append(fake)
                    if fake is None:
                        conn["server"].sendall(cmd)
                    else:
                        self._flush(conn)
        except (OSError, ValueError):
            pass
        self._close(conn)

    def _from_server(self, conn):
        try:
            for reply in self._values(conn["server"]):
                with conn["out"]:
                    conn["pending"].popleft()  # the real command this answers
                    conn["client"].sendall(reply)
                    self._flush(conn)
        except (OSError, ValueError, IndexError):
            pass
        self._close(conn)

    def _close(self, conn):
        for s in (conn["client"], conn["server"]):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

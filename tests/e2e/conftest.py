import os
import tempfile

import pytest

from harness import Journald, Qworker, RedisServer, write_config


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "plain_only: run against the plain build only (tests/run-all.sh says why)")


@pytest.fixture(scope="session")
def journald():
    j = Journald().start()
    yield j
    j.stop()


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="qworker-test-") as d:
        yield d


@pytest.fixture
def redis(workdir):
    r = RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture
def start_qworker(workdir, journald):
    """start_qworker(redis_port, **config) -> a running Qworker. At teardown each must stop on
    SIGTERM with status 0 and without a sanitizer report, unless the test ended it itself."""
    started = []

    def start(redis_port, name="qworker", **config):
        path = write_config(os.path.join(workdir, f"{name}.conf"), redis_port, **config)
        q = Qworker(path, workdir, name,
                    (config.get("log") or {}).get("target", "journal")).start()
        started.append(q)
        return q

    yield start
    problems = []
    for q in started:
        if q.proc.poll() is None:
            status = q.stop()
            if status != 0:
                problems.append(f"qworker {q.pid} exited {status} on SIGTERM")
        elif q.proc.returncode not in q.accepted_exits:
            problems.append(f"qworker {q.pid} exited {q.proc.returncode}")
        reports = q.sanitizer_reports()
        if reports:
            problems.append(f"qworker {q.pid}: {reports}:\n{q.stderr_text()[-4000:]}")
    assert not problems, "\n".join(problems)

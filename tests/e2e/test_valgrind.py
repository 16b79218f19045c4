"""The daemon's whole life under valgrind's memcheck: start, run good and bad tasks, wait for a
Redis that is not there yet, stop with tasks running. No error, no definite leak."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from harness import QWORKER, RedisServer, wait_for, write_config

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None or "/asan/" in QWORKER
                                or "/tsan/" in QWORKER, reason="valgrind runs the plain build")


def test_memcheck_clean(workdir, journald):
    redis = RedisServer(workdir)
    conf = write_config(os.path.join(workdir, "vg.conf"), redis.port,
                        worker={"shutdown_timeout": 0.5, "concurrency": 4},
                        log={"target": "stderr"})
    log = os.path.join(workdir, "vg.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
             "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", QWORKER, "-c", conf],
            stdout=out, stderr=out)
    try:
        text = lambda: open(log, errors="replace").read()
        wait_for(lambda: "unreachable" in text(), 60, "the outage line")
        redis.start()
        wait_for(lambda: "ready" in text(), 60, "qworker under valgrind to connect")
        redis("LPUSH", "queue", "0.1", "abc", b"\xff\x00", "0", "30", "30")
        wait_for(lambda: text().count("outcome=") >= 4, 60, "four completions")
        wait_for(lambda: redis("LLEN", "queue") == 0, 60, "the 30 s tasks to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, text()
        assert redis("LLEN", "queue") == 2  # the two running tasks were put back
        assert "outcome=invalid" in text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        redis.stop()

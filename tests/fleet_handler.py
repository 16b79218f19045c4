#!/usr/bin/python3
"""A task for the fleet tests: holds an exclusive lock named after its id for as long as it runs,
so that a second run of the same id while the first still runs (on any host: the filesystem is
shared) is seen, and written to the ledger as OVERLAP. The lock dies with the process, however
it is stopped. It runs until LEDGER_DIR/release exists, or SECONDS at most.
Usage: fleet_handler.py LEDGER_DIR HOST ID SECONDS"""

import fcntl
import os
import sys
import time


def note(ledger, line):
    fd = os.open(os.path.join(ledger, "ledger"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())  # one write with O_APPEND: lines never interleave
    os.close(fd)


def main():
    ledger, host, task, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    lock = open(os.path.join(ledger, task + ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        note(ledger, f"OVERLAP {task} {host} {time.monotonic():.3f}")
        return 3
    note(ledger, f"start {task} {host} {time.monotonic():.3f}")
    # Runs until the test releases it (a file named release), or for SECONDS at most.
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(os.path.join(ledger, "release")):
        time.sleep(0.05)
    note(ledger, f"end {task} {host} {time.monotonic():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

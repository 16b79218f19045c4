#!/usr/bin/env bash
# Runs a command in a mount namespace of its own, with empty journal directories: the end-to-end
# suite then starts a journald of its own (tests/e2e/conftest.py), which no other suite running
# at the same time shares or stops, and whose entries are only this suite's.
set -euo pipefail
exec unshare -m --propagation private bash -c '
for d in /run/systemd/journal /run/log /var/log/journal; do
    mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
exec "$@"' private-journal "$@"

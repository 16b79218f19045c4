#!/usr/bin/env bash
# make demo: the original example end to end. Starts a throwaway redis-server on a private port,
# runs qworker, pushes `5 3 1` with redis-cli, shows the completions as they happen, and stops
# exactly what it started.
set -euo pipefail

QWORKER=${1:-build/qworker}
CONF=conf/demo.conf
PORT=26379
dir=$(mktemp -d /tmp/qworker-demo.XXXXXX)
log=$dir/qworker.log
redis_pid= qworker_pid=
shown=0

cleanup() {
    if [ -n "$qworker_pid" ] && kill -0 "$qworker_pid" 2>/dev/null; then
        kill -TERM "$qworker_pid"; wait "$qworker_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill -TERM "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# Prints the whole lines qworker has logged since the last call. (Not `tail -f` in the
# background: what it has read but not yet written is lost when it is killed.)
show_new() {
    local n
    [ -f "$log" ] || return 0
    n=$(wc -l < "$log")
    if [ "$n" -gt "$shown" ]; then
        sed -n "$((shown + 1)),${n}p" "$log"
        shown=$n
    fi
}

# Polls a command until it succeeds or the deadline (seconds) passes, showing qworker's lines.
await() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        show_new
        [ "$(date +%s)" -lt "$deadline" ] || { echo "demo: timed out waiting for: $*" >&2; return 1; }
        sleep 0.05
    done
    show_new
}

if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
    echo "demo: port $PORT is taken by another Redis; stop it first" >&2
    exit 1
fi
echo "== redis-server on 127.0.0.1:$PORT (throwaway, in $dir)"
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" &
redis_pid=$!
await 10 redis-cli -p "$PORT" ping

echo "== qworker -c $CONF"
"$QWORKER" -c "$CONF" 2>"$log" &
qworker_pid=$!
await 10 grep -q ready "$log"

echo "== redis-cli -p $PORT LPUSH queue 5 3 1"
redis-cli -p "$PORT" LPUSH queue 5 3 1 >/dev/null
three_done() { [ "$(grep -c 'outcome=ok' "$log")" -ge 3 ]; }
await 15 three_done

echo "== all three done; stopping"
kill -TERM "$qworker_pid"; wait "$qworker_pid"; qworker_pid=
show_new

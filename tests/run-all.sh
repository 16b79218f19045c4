#!/usr/bin/env bash
# Runs every test: static analysis; the unit tests plain, under valgrind, and under ASan+UBSan
# and TSan; a short round of every fuzz target; then the end-to-end suite against the plain
# build and against both sanitizer builds; then the .deb in a real systemd
# (../shared/systemd-sandbox). Build first (make test does). Prints one closing line:
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit

passed=0 failed=0
declare -a failures=()

step() {
    local name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

unit_all() {
    local dir=$1; shift
    local rc=0
    for t in "$dir"/unit/test_*; do
        [[ $t == *.d ]] && continue
        "$@" "$t" || rc=1
    done
    return $rc
}

# e2e BINARY SLOW [pytest arguments]; E2E_IN: a command to run it in, E2E_PORTS: its ports,
# E2E_FILES: which tests (all of tests/e2e when unset).
e2e() {
    local bin=$1 slow=$2; shift 2
    # shellcheck disable=SC2086 # E2E_FILES: paths without spaces, one word each
    ${E2E_IN:-} env QWORKER_BIN="$bin" QWORKER_TEST_SLOW="$slow" \
        QWORKER_TEST_PORTS="${E2E_PORTS:-}" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
        ${E2E_FILES:-tests/e2e} "$@"
}

log_of() { echo "build/logs/${1//[^A-Za-z0-9]/_}"; }

# Starts steps in the background, one after another: NAME FUNCTION [NAME FUNCTION ...]. Each
# one's output and exit status are kept in build/logs/ for bg_wait.
declare -A bg_pid=()
bg_steps() {
    local a
    mkdir -p build/logs
    # A status left by an earlier run must not count for this one: gone before any step starts.
    for ((a = 1; a < $#; a += 2)); do rm -f "$(log_of "${!a}").rc"; done
    (
        while (($# >= 2)); do
            "$2" > "$(log_of "$1").log" 2>&1
            # Whole or not at all: bg_wait reads it as soon as it exists.
            echo $? > "$(log_of "$1").rc.tmp" && mv "$(log_of "$1").rc.tmp" "$(log_of "$1").rc"
            shift 2
        done
    ) &
    while (($# >= 2)); do bg_pid[$1]=$!; shift 2; done
}

# Waits for a background step, shows its output, counts it (no status kept: it did not end).
bg_wait() {
    local name=$1 rc
    echo "=== $name"
    # the rc file appears when the step ends; the subshell may go on with the next one
    while kill -0 "${bg_pid[$name]}" 2>/dev/null && [ ! -e "$(log_of "$name").rc" ]; do
        sleep 1
    done
    rc=$(cat "$(log_of "$name").rc" 2>/dev/null || echo 1)
    cat "$(log_of "$name").log"
    if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

# The plain pass in two halves of about equal time (measured with --durations): this list, and
# every other file, so that a new test file is never left out.
PLAIN_FIRST_HALF=(test_faults.py test_sentinel.py test_delivery.py test_metrics.py test_ctl.py)

plain_e2e_first() {
    E2E_IN=tests/e2e/private-journal.sh E2E_PORTS=10000-14999 \
        E2E_FILES="${PLAIN_FIRST_HALF[*]/#/tests/e2e/}" e2e build/qworker 1
}

plain_e2e_second() {
    E2E_IN=tests/e2e/private-journal.sh E2E_PORTS=15000-19999 \
        e2e build/qworker 1 "${PLAIN_FIRST_HALF[@]/#/--ignore=tests/e2e/}"
}

asan_e2e() {
    E2E_IN=tests/e2e/private-journal.sh E2E_PORTS=20000-24999 \
        e2e build/asan/qworker 2 -k "not make_demo" -m "not plain_only"
}

tsan_e2e() {
    E2E_IN=tests/e2e/private-journal.sh E2E_PORTS=25000-29999 \
        e2e build/tsan/qworker 3 -k "not make_demo" -m "not plain_only" \
        --ignore=tests/e2e/test_faults.py --ignore=tests/e2e/test_hostile.py \
        --ignore=tests/e2e/test_tls.py --ignore=tests/e2e/test_wire.py
}

sandbox_tests() {
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/systemd
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=0:exitcode=66:second_deadlock_stack=1

step "lint (cppcheck, clang-tidy)" tests/lint.sh
step "unit tests" unit_all build
step "unit tests under valgrind" unit_all build valgrind -q --error-exitcode=99 \
    --leak-check=full --errors-for-leak-kinds=definite
step "unit tests under ASan+UBSan" unit_all build/asan
step "unit tests under TSan" unit_all build/tsan
step "fuzz: every kept input, then each target ${FUZZ_SMOKE_SECONDS:-10} s" \
    make --no-print-directory fuzz-smoke FUZZ_SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-10}"
# CI has 20 minutes: the end-to-end passes run two at a time, each in a mount namespace with a
# journald of its own and on ports of its own (QWORKER_TEST_PORTS), so that neither reads,
# shares or stops the other's journal, nor takes the other's ports; they are mostly waiting on
# timers, and every timing assertion holds on a busy machine. Each one's output is shown whole
# once it is done. First the plain build, in two halves; then the sanitizers.
# Under the sanitizers, tests marked plain_only (the fleet of network namespaces, a stop that
# hangs for 16 s by design, two of the Sentinel scenarios, ten seconds of schedule ticks) drive
# no code the others do not. TSan runs every suite but four: the Redis-fault, hostile-input and
# TLS suites ask questions of single-threaded code (parsing, error paths), which ASan answers,
# and the wire suite runs only Lua in Redis. TSan ends well before ASan, and the .deb in a real
# systemd (its own namespaces, network included) follows it.
bg_steps "end-to-end (first half)" plain_e2e_first
bg_steps "end-to-end (second half)" plain_e2e_second
bg_wait "end-to-end (first half)"
bg_wait "end-to-end (second half)"
bg_steps "end-to-end under ASan+UBSan" asan_e2e
bg_steps "end-to-end under TSan" tsan_e2e "systemd service (sandbox)" sandbox_tests
bg_wait "end-to-end under ASan+UBSan"
bg_wait "end-to-end under TSan"
bg_wait "systemd service (sandbox)"

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

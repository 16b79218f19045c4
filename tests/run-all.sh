#!/usr/bin/env bash
# Runs every test: static analysis; the unit tests plain, under valgrind, and under ASan+UBSan
# and TSan; a short round of every fuzz target; then the end-to-end suite against the plain
# build and against both sanitizer builds; then the .deb in a real systemd
# (../shared/systemd-sandbox). Build first (make test does). Prints one closing line:
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

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

# e2e BINARY SLOW [pytest arguments]; E2E_IN: a command to run it in, E2E_PORTS: its ports.
e2e() {
    local bin=$1 slow=$2; shift 2
    ${E2E_IN:-} env QWORKER_BIN="$bin" QWORKER_TEST_SLOW="$slow" \
        QWORKER_TEST_PORTS="${E2E_PORTS:-}" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
        tests/e2e "$@"
}

# Starts a step in the background, its output kept in build/logs/.
declare -A bg_pid=()
bg_step() {
    local name=$1; shift
    mkdir -p build/logs
    "$@" > "build/logs/${name//[^A-Za-z0-9]/_}.log" 2>&1 &
    bg_pid[$name]=$!
}

# Waits for a background step, shows its output, counts it.
bg_wait() {
    local name=$1
    echo "=== $name"
    if wait "${bg_pid[$name]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
    cat "build/logs/${name//[^A-Za-z0-9]/_}.log"
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

side_by_side() {
    local a=$1 b=$2
    bg_step "$a" asan_e2e
    bg_step "$b" tsan_e2e
    bg_wait "$a"
    bg_wait "$b"
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
step "end-to-end" e2e build/qworker 1
# Under the sanitizers, within CI's 20 minutes: tests marked plain_only (the fleet of network
# namespaces, a stop that hangs for 16 s by design, two of the Sentinel scenarios, ten seconds
# of schedule ticks) drive no code the others do not. TSan runs every suite but four: the
# Redis-fault, hostile-input and TLS suites ask questions of single-threaded code (parsing, error
# paths), which ASan answers, and the wire suite runs only Lua in Redis. Side by side, TSan still
# ends well before ASan.
# The two sanitizer passes run side by side (CI's 20 minutes): each in a mount namespace with a
# journald of its own, and on ports of its own (QWORKER_TEST_PORTS), so that neither reads,
# shares or stops the other's journal, nor takes the other's ports; each one's output is shown
# whole once both are done.
side_by_side "end-to-end under ASan+UBSan" "end-to-end under TSan"
step "systemd service (sandbox)" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/systemd

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Static analysis, as `make lint` runs it (which installs cppcheck and clang-tidy-14 first):
#   cppcheck      src/*.c src/run/*.c src/ctl/*.c tests/unit/*.c  warning, style, performance, portability
#                 (suppressions: inline `// cppcheck-suppress id` and tests/lint-cppcheck.supp)
#   clang-tidy-14 src/*.c src/run/*.c src/ctl/*.c  the checks in .clang-tidy, every warning an error
#                 (compile commands generated in build/lint/compile_commands.json)
# Prints each command it runs and every finding; exits 1 if any tool reports anything.
# About 40 s of CPU, nearly all clang-tidy's static analyser (cppcheck: 1 s), spread over JOBS
# cores (default: nproc): about 20 s on 2 idle cores. CLANG_TIDY and CPPCHECK name other binaries.
# scripts.c needs build/lua/*.lua.h: generated here into build/lint/lua/ by the Makefile's rule.
set -euo pipefail
cd "$(dirname "$0")/.."

CPPCHECK=${CPPCHECK:-cppcheck}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy-14}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
PKGS=(hiredis libevent libconfig libsystemd jansson libseccomp)
OUT=build/lint

show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

for tool in "$CPPCHECK" "$CLANG_TIDY" pkg-config; do
    if ! command -v "$tool" >/dev/null; then
        echo "lint: $tool not found: run 'make lint' (as root) or apt-get install cppcheck clang-tidy-14" >&2
        exit 2
    fi
done
if ! pkg_cflags=$(pkg-config --cflags "${PKGS[@]}"); then
    echo "lint: pkg-config --cflags ${PKGS[*]} failed: run 'make deps'" >&2
    exit 2
fi
read -r -a pkg_cflags <<<"$pkg_cflags"

shopt -s nullglob
srcs=(src/*.c src/run/*.c src/ctl/*.c)
units=(tests/unit/*.c)
shopt -u nullglob
if [ ${#srcs[@]} -eq 0 ]; then
    echo "lint: no src/*.c" >&2
    exit 2
fi
mkdir -p "$OUT"
status=0

# Generated headers: scripts.c embeds src/lua/NAME.lua as "NAME.lua.h". The Makefile's own rule
# makes them, here into build/lint/lua/ (never into build/ itself).
gen_inc=()
mapfile -t lua_hdrs < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([A-Za-z0-9_]*\.lua\.h\)".*/\1/p' \
    "${srcs[@]}" | sort -u)
if [ ${#lua_hdrs[@]} -gt 0 ]; then
    gen_cmd=(make --no-print-directory "BUILD=$OUT" "${lua_hdrs[@]/#/$OUT/lua/}")
    echo "=== generated headers"
    show "${gen_cmd[@]}"
    "${gen_cmd[@]}"
    gen_inc=("-I$OUT/lua")
fi

# --- cppcheck ---------------------------------------------------------------------------------
# It reads only the -I directories, not /usr/include, so that it does not analyse libc. But
# LIST_HEAD and friends (src/task.h, src/loop.c) come from <sys/queue.h>: without them loop.c
# is a syntax error and goes unchecked. That header is macros only: include it in every file.
queue_h=$(echo '#include <sys/queue.h>' | ${CC:-cc} -E -M -x c - 2>/dev/null | tr ' \\' '\n\n' |
    grep '/sys/queue\.h$' | head -n 1 || true)
cpp_defs=()
for f in "${pkg_cflags[@]}"; do
    case $f in -I* | -D*) cpp_defs+=("$f") ;; esac
done
cppcheck_cmd=("$CPPCHECK" --quiet --std=c11 --enable=warning,style,performance,portability
    --library=posix --library=gnu --inline-suppr --suppress=missingIncludeSystem
    --suppressions-list=tests/lint-cppcheck.supp --error-exitcode=1
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]'
    "${cpp_defs[@]}" -Isrc "${gen_inc[@]}" -D_GNU_SOURCE '-DQWORKER_VERSION="x"')
if [ -n "$queue_h" ]; then
    cppcheck_cmd+=("--include=$queue_h")
else
    echo "lint: <sys/queue.h> not found (no C compiler?): src/loop.c may not be checked" >&2
fi
cppcheck_cmd+=("${srcs[@]}" "${units[@]}")
echo "=== cppcheck: ${#srcs[@]} files in src/, ${#units[@]} in tests/unit/"
show "${cppcheck_cmd[@]}"
if "${cppcheck_cmd[@]}"; then
    echo "cppcheck: no findings"
else
    echo "cppcheck: FINDINGS (above)"
    status=1
fi

# --- clang-tidy -------------------------------------------------------------------------------
json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
root=$PWD
tidy_flags=(-std=gnu11 -D_GNU_SOURCE '-DQWORKER_VERSION="x"' "-I$root/src" "${pkg_cflags[@]}" "${gen_inc[@]}")
{
    echo '['
    sep=''
    for f in "${srcs[@]}"; do
        printf '%s  {"directory": %s, "file": %s, "arguments": [' "$sep" "$(json_str "$root")" \
            "$(json_str "$root/$f")"
        for a in cc "${tidy_flags[@]}" -c "$root/$f"; do
            printf '%s, ' "$(json_str "$a")"
        done | sed 's/, $//'
        printf ']}'
        sep=$',\n'
    done
    printf '\n]\n'
} >"$OUT/compile_commands.json"

echo "=== clang-tidy: ${#srcs[@]} files in src/, $JOBS at a time, flags:$(printf ' %q' "${tidy_flags[@]}")"
rm -rf "$OUT/tidy"
mkdir -p "$OUT/tidy"
# Biggest files first (the analyser's time grows with size), so that no long one starts last.
# One log per file so that parallel runs do not interleave; printed in order afterwards.
ls -S -- "${srcs[@]}" | tr '\n' '\0' | xargs -0 -n 1 -P "$JOBS" sh -c '
    log="$2/$(basename "$3").log"
    echo "+ $0 --quiet -p $1 $3"
    "$0" --quiet -p "$1" "$3" >"$log" 2>&1
    echo $? >"$log.rc"' "$CLANG_TIDY" "$OUT" "$OUT/tidy"
echo "--- clang-tidy findings, by file"
tidy_failed=0
for f in "${srcs[@]}"; do
    log="$OUT/tidy/$(basename "$f").log"
    # "N warnings generated." counts what system headers produced, all filtered out: noise.
    grep -Ev '^[0-9]+ (warning|error)s? (and [0-9]+ (warning|error)s? )?generated\.$' "$log" || true
    if [ "$(cat "$log.rc" 2>/dev/null || echo 1)" != 0 ]; then
        tidy_failed=$((tidy_failed + 1))
    fi
done
if [ "$tidy_failed" -eq 0 ]; then
    echo "clang-tidy: no findings"
else
    echo "clang-tidy: FINDINGS in $tidy_failed file(s) (above)"
    status=1
fi

[ "$status" -eq 0 ] && echo "lint: clean" || echo "lint: FAILED"
exit "$status"

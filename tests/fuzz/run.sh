#!/bin/bash
# Runs built fuzz targets (make fuzz-bins first); called by tests/fuzz/fuzz.mk.
#   tests/fuzz/run.sh fuzz SECONDS TARGET...   each target SECONDS on build/fuzz/corpus/TARGET, a
#                                              copy of tests/fuzz/corpus/TARGET (new entries stay
#                                              there, across runs)
#   tests/fuzz/run.sh smoke SECONDS TARGET...  each target once over every committed seed and
#                                              every kept crash (regressions), then SECONDS on a
#                                              fresh copy of its seeds
# FUZZ_BIN_DIR (default build/fuzz) is where the fuzz_TARGET binaries are taken from.
# Exits 1 if any target crashed (or leaked, timed out, ran out of memory); the input is then in
# build/fuzz/artifacts/TARGET/ and the whole log in build/fuzz/logs/TARGET.MODE.log.
set -u
mode=${1:?fuzz or smoke} secs=${2:?seconds}
shift 2
out=build/fuzz
bindir=${FUZZ_BIN_DIR:-$out}
passed=0 failed=0 bad=""

export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for s in /usr/lib/llvm-14/bin/llvm-symbolizer /usr/bin/llvm-symbolizer-14; do
    [ -x "$s" ] && { export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$s}; break; }
done

# The files of a directory, but not .gitkeep.
inputs() { [ -d "$1" ] && find "$1" -maxdepth 1 -type f ! -name .gitkeep | sort; }

fail() { # target log what
    echo "fuzz $1: FAILED: $3; last lines of $2:"
    tail -n 60 "$2" | sed 's/^/    /'
    failed=$((failed + 1))
    bad="$bad $1"
}

for t in "$@"; do
    bin=$bindir/fuzz_$t seeds=tests/fuzz/corpus/$t crashes=tests/fuzz/crashes/$t
    log=$out/logs/$t.$mode.log
    mkdir -p "$out/logs" "$out/artifacts/$t"
    : >"$log"
    [ -x "$bin" ] || { echo "fuzz $t: $bin is not built" >&2; exit 2; }
    ok=1
    if [ "$mode" = smoke ]; then
        # Regressions: each file alone, so that one failing input does not hide the next.
        mapfile -t files < <(inputs "$seeds"; inputs "$crashes")
        regressed=()
        for f in "${files[@]}"; do
            if "$bin" -runs=1 -timeout=25 -artifact_prefix="$out/artifacts/$t/" "$f" \
                >"$log.one" 2>&1; then
                echo "ok: $f" >>"$log"
            else
                regressed+=("$f")
                { echo "=== FAILED: $f"; cat "$log.one"; } >>"$log"
            fi
        done
        rm -f "$log.one"
        if [ ${#regressed[@]} -gt 0 ]; then
            fail "$t" "$log" "${#regressed[@]} of ${#files[@]} committed inputs fail: ${regressed[*]}"
            ok=0
        else
            echo "fuzz $t: ${#files[@]} seeds and kept crashes run once, all pass"
        fi
        corpus=$out/smoke/$t
        rm -rf "$corpus"
    else
        corpus=$out/corpus/$t
    fi
    mkdir -p "$corpus"
    if [ -d "$seeds" ]; then inputs "$seeds" | xargs -r cp -t "$corpus"; fi
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
    echo "fuzz $t: ${secs}s on $corpus ($(ls "$corpus" | wc -l) inputs)"
    if "$bin" "${dict[@]}" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" "$corpus" >>"$log" 2>&1; then
        last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
        echo "fuzz $t: fuzzed ok: ${last}; corpus now $(ls "$corpus" | wc -l) files," \
            "$(cat "$corpus"/* | wc -c) bytes"
    else
        [ "$ok" = 0 ] || fail "$t" "$log" "fuzzing found a new input, see $out/artifacts/$t/"
        [ "$ok" = 0 ] && echo "fuzz $t: fuzzing failed too, see $out/artifacts/$t/ and $log"
        ok=0
    fi
    [ "$ok" = 1 ] && passed=$((passed + 1))
done
[ -z "$bad" ] || echo "fuzz-$mode: failed:$bad"
echo "fuzz-$mode: $passed passed, $failed failed"
[ "$failed" = 0 ]

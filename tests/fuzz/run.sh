#!/usr/bin/env bash
# Builds a libFuzzer target with clang (ASan + UBSan, outside meson) and runs
# it for a set time.
#
# usage: tests/fuzz/run.sh TARGET SECONDS     TARGET: load, idx or all
#
# load  ibvi_net_load_buffer()          (tests/fuzz/fuzz_load.c)
# idx   the IDX reader of the examples  (tests/fuzz/fuzz_idx.c)
#
# The seed corpus tests/fuzz/corpus/TARGET/ is read, never written; for
# load, tests/fuzz/gen_load.c also writes $FUZZ_GEN_COUNT (default 500)
# structured model files with correct checksums into $FUZZ_WORK/gen-load,
# a second seed folder (regenerated each run, seed $FUZZ_GEN_SEED). Inputs
# the fuzzer finds go to $FUZZ_WORK/corpus-TARGET (default
# ${TMPDIR:-/tmp}/ibvi-fuzz), crashes to $FUZZ_WORK/artifacts-TARGET/. Copy a
# crash into tests/fuzz/crashes/TARGET/ once it is fixed: the normal build
# replays that folder (meson test fuzz_replay_TARGET).
# Environment: CC (default clang), FUZZ_WORK, FUZZ_FLAGS (extra libFuzzer
# flags, e.g. -runs=N), FUZZ_GEN_COUNT, FUZZ_GEN_SEED.
# Exit status: 0 when no target crashed, 1 otherwise.
# SPDX-License-Identifier: MIT
set -euo pipefail

target=${1:?usage: run.sh TARGET SECONDS (TARGET: load, idx or all)}
seconds=${2:?usage: run.sh TARGET SECONDS}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${FUZZ_WORK:-${TMPDIR:-/tmp}/ibvi-fuzz}
cc=${CC:-clang}
mkdir -p "$work"

if [ "$target" = all ]; then
    status=0
    for t in load idx; do "$0" "$t" "$seconds" || status=1; done
    exit $status
fi

san="-fsanitize=address,undefined -fno-sanitize-recover=all"
cflags="-std=c11 -g -O1 -fno-omit-frame-pointer $san -I$root/include"
build=$work/build-$target
mkdir -p "$build"

case $target in
load)
    # The library is compiled into the target with coverage instrumentation.
    objs=()
    for src in "$root"/lib/*.c; do
        obj=$build/$(basename "$src" .c).o
        $cc $cflags -fsanitize=fuzzer-no-link -I"$root/lib" -c "$src" -o "$obj"
        objs+=("$obj")
    done
    $cc $cflags -fsanitize=fuzzer "$here/fuzz_load.c" "${objs[@]}" \
        -lblis -lz -lm -o "$build/fuzz_load"
    $cc -std=c11 -O2 "$here/gen_load.c" -o "$build/gen_load"
    gen=$work/gen-load
    rm -rf "$gen"
    mkdir -p "$gen"
    "$build/gen_load" "$gen" "${FUZZ_GEN_COUNT:-500}" "${FUZZ_GEN_SEED:-1}"
    extra=("$gen")
    ;;
idx)
    $cc $cflags -fsanitize=fuzzer -I"$root/examples" "$here/fuzz_idx.c" \
        "$root/examples/idx.c" -lz -o "$build/fuzz_idx"
    extra=()
    ;;
*)
    echo "unknown target '$target' (load, idx or all)" >&2
    exit 2
    ;;
esac

corpus=$work/corpus-$target
artifacts=$work/artifacts-$target
mkdir -p "$corpus" "$artifacts"
log=$work/fuzz-$target.log
echo "fuzzing $target for $seconds s (log $log)"
set +e
# -rss_limit_mb: a parser must never need much more memory than its input.
ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1} \
"$build/fuzz_$target" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout=20 -rss_limit_mb=1024 -dict="$here/$target.dict" \
    -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-} \
    "$corpus" "$here/corpus/$target" "${extra[@]}" > "$log" 2>&1
rc=$?
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
found=$(find "$artifacts" -type f | wc -l)
echo "target $target: $execs executions in $seconds s, exit $rc," \
     "$(find "$corpus" -type f | wc -l) corpus inputs, $found artifacts in $artifacts"
if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    grep -E "ERROR|SUMMARY|deadly signal|Test unit written" "$log" | head -20 || true
    exit 1
fi

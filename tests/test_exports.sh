#!/bin/sh
# libibvi tests - the shared library exports only ibvi_ functions (no
# ibvi__ internals, no BLIS or helper symbols), exports every function the
# headers declare with IBVI_API, and has SONAME libibvi.so.0.
#
# usage: test_exports.sh SOURCE_ROOT LIBRARY_PATH
# SPDX-License-Identifier: MIT
set -u
root=${1:?source root}
lib=${2:?path of libibvi.so}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0

[ -f "$lib" ] || { echo "FAIL: $lib not found"; exit 1; }
nm -D --defined-only "$lib" > "$tmp/nm" || { echo "FAIL: nm $lib"; exit 1; }

# Symbols the toolchain adds; version-node names (type A) of a linker
# version script are allowed when they name the library.
awk '{ name = $NF; type = $(NF-1);
       if (name ~ /^(_init|_fini|__bss_start|_edata|_end|__end__|_bss_end__|__bss_end__|__bss_start__)$/) next;
       if (type == "A" && name ~ /^(LIB)?IBVI/) next;
       if (name ~ /^ibvi_/ && name !~ /^ibvi__/) next;
       print "unexpected exported symbol: " type " " name }' "$tmp/nm" > "$tmp/bad"
if [ -s "$tmp/bad" ]; then
    echo "FAIL: $(wc -l < "$tmp/bad") symbols outside the ibvi_ API:"
    cat "$tmp/bad"
    fail=1
fi

# Every exported ibvi_ symbol is a function (T), never data.
awk '$NF ~ /^ibvi_/ && $(NF-1) != "T" { print "not a function: " $(NF-1) " " $NF }' \
    "$tmp/nm" > "$tmp/notfunc"
if [ -s "$tmp/notfunc" ]; then
    echo "FAIL:"; cat "$tmp/notfunc"; fail=1
fi

# Every IBVI_API function of the headers is exported.
cat "$root"/include/ibvi/*.h | grep -v '^#' | grep 'IBVI_API' |
    sed -n 's/.*[^A-Za-z0-9_]\(ibvi_[A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' |
    sort -u > "$tmp/declared"
[ -s "$tmp/declared" ] || { echo "FAIL: no IBVI_API declarations found"; exit 1; }
awk '{ print $NF }' "$tmp/nm" | sort -u > "$tmp/exported"
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
if [ -n "$missing" ]; then
    echo "FAIL: declared with IBVI_API but not exported:"
    echo "$missing"
    fail=1
fi
echo "$(wc -l < "$tmp/declared") declared functions, $(grep -c ' ibvi_' "$tmp/nm") exported ibvi_ symbols"

# SONAME
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ "$soname" != "libibvi.so.0" ]; then
    echo "FAIL: SONAME is '$soname', expected libibvi.so.0"
    fail=1
else
    echo "ok: SONAME $soname"
fi
[ $fail -eq 0 ] && echo "ok: exports"
exit $fail

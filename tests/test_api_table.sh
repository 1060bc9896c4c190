#!/bin/sh
# libibvi tests - every exported function has a row in the argument-sweep
# table of test_robust.c (and every row names an exported function), so a
# new function cannot be added to the API without its argument checks.
#
# usage: test_api_table.sh LIBRARY_PATH TEST_ROBUST_EXECUTABLE
# SPDX-License-Identifier: MIT
set -u
lib=${1:?path of libibvi.so}
exe=${2:?path of test_robust}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

nm -D --defined-only "$lib" | awk '$(NF-1) == "T" && $NF ~ /^ibvi_/ { print $NF }' |
    sort -u > "$tmp/exported"
"$exe" --list-api | sort > "$tmp/table.all" || { echo "FAIL: $exe --list-api"; exit 1; }
sort -u "$tmp/table.all" > "$tmp/table"
fail=0
if ! cmp -s "$tmp/table.all" "$tmp/table"; then
    echo "FAIL: rows listed twice:"; uniq -d "$tmp/table.all"; fail=1
fi
missing=$(comm -23 "$tmp/exported" "$tmp/table")
extra=$(comm -13 "$tmp/exported" "$tmp/table")
if [ -n "$missing" ]; then
    echo "FAIL: exported functions without a row in api_table (tests/test_robust.c):"
    echo "$missing"
    fail=1
fi
if [ -n "$extra" ]; then
    echo "FAIL: rows of api_table that the library does not export:"
    echo "$extra"
    fail=1
fi
echo "$(wc -l < "$tmp/exported") exported functions, $(wc -l < "$tmp/table") table rows"
[ $fail -eq 0 ] && echo "ok: api_table"
exit $fail

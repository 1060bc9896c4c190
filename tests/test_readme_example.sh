#!/bin/sh
# libibvi tests - the README's examples really run.
#
# Extracts the first ```c block of README.md, compiles it against the build
# tree (-I include, -L the library's directory, an rpath to it) with
# -Wall -Wextra -Werror, runs it and requires exit status 0. If the README has
# a ```python block, runs the first one too, with the ibvi package of the
# source tree on the build tree's library.
#
# usage: test_readme_example.sh SOURCE_ROOT LIBRARY_PATH
# SPDX-License-Identifier: MIT
set -u
root=${1:?source root}
lib=${2:?path of libibvi.so}
CC=${CC:-cc}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
libdir=$(cd "$(dirname "$lib")" && pwd)
fail=0

# The first block opened by a line that is exactly ```LANG, up to the next ```.
extract() {
    awk -v lang="$1" '
        !found && $0 == "```" lang { inside = 1; found = 1; next }
        inside && /^```/ { inside = 0; exit }
        inside { print }' "$root/README.md"
}

extract c > "$tmp/first.c"
if [ ! -s "$tmp/first.c" ]; then
    echo "FAIL: no \`\`\`c block in README.md"
    exit 1
fi
echo "README's C example: $(wc -l < "$tmp/first.c") lines"
if ! $CC -std=c11 -Wall -Wextra -Werror -I"$root/include" "$tmp/first.c" \
        -L"$libdir" -libvi -Wl,-rpath,"$libdir" -o "$tmp/first" 2> "$tmp/err"; then
    cat "$tmp/err"
    echo "FAIL: the README's C example does not compile"
    fail=1
elif ! "$tmp/first" > "$tmp/out" 2>&1; then
    cat "$tmp/out"
    echo "FAIL: the README's C example exited with an error"
    fail=1
else
    cat "$tmp/out"
    echo "ok: the README's C example compiles and runs"
fi

extract python > "$tmp/first.py"
if [ -s "$tmp/first.py" ]; then
    echo "README's Python example: $(wc -l < "$tmp/first.py") lines"
    if (cd "$tmp" && IBVI_LIBRARY="$lib" PYTHONPATH="$root/python" \
            "$PYTHON" first.py > "$tmp/out" 2>&1); then
        cat "$tmp/out"
        echo "ok: the README's Python example runs"
    else
        cat "$tmp/out"
        echo "FAIL: the README's Python example exited with an error"
        fail=1
    fi
fi
exit $fail

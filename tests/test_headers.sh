#!/bin/sh
# libibvi tests - every public header compiles alone (and twice, for the
# include guard) as C99 with -pedantic -Werror and as C++17, and a C++
# program calling functions of every header links against the library and
# runs (which needs the headers' extern "C").
#
# usage: test_headers.sh SOURCE_ROOT LIBRARY_PATH
# SPDX-License-Identifier: MIT
set -u
root=${1:?source root}
lib=${2:?path of libibvi.so}
inc="$root/include"
CC=${CC:-cc}
CXX=${CXX:-c++}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0

headers=$(cd "$inc/ibvi" && ls *.h)
[ -n "$headers" ] || { echo "no headers under $inc/ibvi"; exit 1; }

compilers_c="$CC"
command -v clang >/dev/null 2>&1 && [ "$CC" != clang ] && compilers_c="$compilers_c clang"
compilers_cxx="$CXX"
command -v clang++ >/dev/null 2>&1 && [ "$CXX" != clang++ ] && compilers_cxx="$compilers_cxx clang++"

for h in $headers; do
    hfail=0
    printf '#include <ibvi/%s>\n#include <ibvi/%s>\ntypedef int tu_nonempty;\n' \
        "$h" "$h" > "$tmp/h.c"
    for c in $compilers_c; do
        for std in c99 c11; do
            if ! $c -std=$std -pedantic -Wall -Wextra -Wstrict-prototypes \
                    -Wmissing-prototypes -Werror -fsyntax-only -I"$inc" \
                    -x c "$tmp/h.c" 2> "$tmp/err"; then
                echo "FAIL: ibvi/$h as C ($c -std=$std -pedantic -Werror):"
                cat "$tmp/err"
                hfail=1
            fi
        done
    done
    for c in $compilers_cxx; do
        for std in c++11 c++17; do
            if ! $c -std=$std -pedantic -Wall -Wextra -Werror -fsyntax-only \
                    -I"$inc" -x c++ "$tmp/h.c" 2> "$tmp/err"; then
                echo "FAIL: ibvi/$h as C++ ($c -std=$std -Werror):"
                cat "$tmp/err"
                hfail=1
            fi
        done
    done
    if [ $hfail -eq 0 ]; then echo "ok: ibvi/$h"; else fail=1; fi
done

# extern "C": a C++ program using each header links against the library.
cat > "$tmp/link.cpp" <<'CPP'
#include <ibvi/ibvi.h>
#include <cstdio>
#include <cstring>
int main()
{
    if (ibvi_version_number() != IBVI_VERSION_NUMBER) return 1;
    if (std::strcmp(ibvi_version_string(), IBVI_VERSION_STRING) != 0) return 2;
    ibvi_net *net = nullptr;
    if (ibvi_net_create(&net, 3, nullptr) != IBVI_OK) return 3;
    if (ibvi_net_add_dense(net, 2, 1) != IBVI_OK) return 4;
    if (ibvi_net_init(net, IBVI_PARAM_MUP, 1) != IBVI_OK) return 5;
    ibvi_optimizer *opt = nullptr;
    if (ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f) != IBVI_OK) return 6;
    const float out[2] = {0.5f, -0.5f}, t[2] = {0.0f, 0.0f};
    float loss = 0.0f;
    if (ibvi_loss_squared(out, 1, 2, t, 1, &loss, nullptr) != IBVI_OK) return 7;
    if (loss != 0.5f) return 8;
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    std::puts(ibvi_status_string(IBVI_ERR_SHAPE));
    return 0;
}
CPP
libdir=$(dirname "$lib")
if ! $CXX -std=c++17 -Wall -Wextra -Werror -I"$inc" "$tmp/link.cpp" "$lib" \
        -o "$tmp/link" 2> "$tmp/err"; then
    echo "FAIL: C++ program does not build/link against $lib:"
    cat "$tmp/err"
    fail=1
elif ! LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/link"; then
    echo "FAIL: C++ program exited with status $?"
    fail=1
else
    echo "ok: C++ program links and runs"
fi
exit $fail

#!/bin/sh
# libibvi tests - a downstream consumer of an installed libibvi.
#
# Installs the build tree into a temporary DESTDIR (meson install --destdir,
# which leaves the source and build trees alone), then, as a downstream
# project would, builds programs with nothing but
# `pkg-config --cflags --libs ibvi`:
#   - a C consumer written by this script (C99, -Wall -Wextra -Werror),
#   - examples/cpp_example.cpp as C++17, if a C++ compiler exists,
# runs them with LD_LIBRARY_PATH pointing into the DESTDIR, and checks that
# they loaded the installed libibvi.so.0 and not the build tree's (ldd, the
# program's own /proc/self/maps, LD_DEBUG=libs). It also checks the install
# (every public header, the SONAME symlink chain, the .pc file) and that the
# Python package finds the installed library through the system's search
# (ctypes.util.find_library + the SONAME) when nothing else points at it.
#
# usage: test_consumer.sh BUILD_DIR SOURCE_ROOT
# SPDX-License-Identifier: MIT
set -u
build=${1:?build dir}
root=${2:?source root}
CC=${CC:-cc}
CXX=${CXX:-c++}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
dest="$tmp/dest"
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# ---- install ------------------------------------------------------------------
if ! meson install -C "$build" --destdir "$dest" --no-rebuild > "$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL: meson install --destdir"
    exit 1
fi
pc=$(find "$dest" -name ibvi.pc | head -n 1)
[ -n "$pc" ] || { echo "FAIL: no ibvi.pc under $dest"; find "$dest"; exit 1; }
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
prefix=$(sed -n 's/^prefix=//p' "$pc")
ok "installed; ibvi.pc in ${pcdir#$dest}, prefix=$prefix"

# The SONAME chain and the headers.
[ -L "$libdir/libibvi.so" ] && [ -L "$libdir/libibvi.so.0" ] && [ -f "$libdir/libibvi.so.0" ] \
    && ok "libibvi.so -> libibvi.so.0 -> $(readlink "$libdir/libibvi.so.0")" \
    || bad "symlink chain libibvi.so -> libibvi.so.0 -> real file missing"
soname=$(readelf -d "$libdir/libibvi.so.0" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = libibvi.so.0 ] && ok "SONAME $soname" || bad "SONAME is '$soname'"
for h in "$root"/include/ibvi/*.h; do
    [ -f "$dest$prefix/include/ibvi/$(basename "$h")" ] \
        || bad "header ibvi/$(basename "$h") is not installed"
done

# ---- pkg-config, pointed into the DESTDIR ---------------------------------------
pkgconf() {
    PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_LIBDIR="$pcdir" \
        pkg-config --define-variable=prefix="$dest$prefix" "$@" ibvi
}
flags=$(pkgconf --cflags --libs) || { echo "FAIL: pkg-config --cflags --libs ibvi"; exit 1; }
[ "$(pkgconf --modversion)" = "$(sed -n 's/^Version: //p' "$pc")" ] || bad "pkg-config --modversion"
case "$flags" in
    *"$dest"*) ok "pkg-config flags: $flags" ;;
    *) bad "pkg-config flags do not point into the DESTDIR: $flags" ;;
esac
case "$flags" in
    *"$build"*) bad "pkg-config flags mention the build tree: $flags" ;;
esac

# ---- a C consumer ----------------------------------------------------------------
cat > "$tmp/consumer.c" <<'EOF'
/* An out-of-tree program: trains a rank-2 Gaussian linear layer, predicts,
 * and prints which libibvi it runs on (from /proc/self/maps). */
#include <stdio.h>
#include <string.h>
#include <ibvi/ibvi.h>

#define CHECK(e) do { if ((e) < 0) { fprintf(stderr, "%s: %s\n", #e, \
    ibvi_last_error()); return 1; } } while (0)

int main(void)
{
    float x[8] = {0, 1, 1, 0, 1, 1, 2, 1}, y[4] = {-1, 2, 1, 3}, loss = 0;
    float probs[4 * 2];
    ibvi_net *net, *cls;
    ibvi_optimizer *opt;
    ibvi_predictor *pred;
    if (ibvi_version_number() != IBVI_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %d\n", IBVI_VERSION_NUMBER,
                (int)ibvi_version_number());
        return 1;
    }
    CHECK(ibvi_net_create(&net, 2, NULL));
    CHECK(ibvi_net_add_dense(net, 1, 2));
    CHECK(ibvi_net_init(net, IBVI_PARAM_SP, 42));
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.01f));
    for (int step = 0; step < 2000; step++)
        CHECK(ibvi_train_step(net, opt, x, 4, 1, IBVI_LOSS_SQUARED, NULL, y, &loss));
    if (!(loss < 1e-6f)) {
        fprintf(stderr, "loss %g\n", (double)loss);
        return 1;
    }
    CHECK(ibvi_net_create(&cls, 2, NULL));
    CHECK(ibvi_net_add_dense(cls, 2, 1));
    CHECK(ibvi_net_init(cls, IBVI_PARAM_MUP, 1));
    CHECK(ibvi_predictor_create(&pred, cls, 4, 1));
    CHECK(ibvi_predictor_run(pred, x, 4, probs, NULL, NULL, NULL));
    ibvi_predictor_free(pred);
    ibvi_net_free(cls);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    printf("libibvi %s, loss %.1e\n", ibvi_version_string(), (double)loss);

    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "libibvi.so")) {
            printf("mapped: %s", strchr(line, '/'));
            break;
        }
    if (maps)
        fclose(maps);
    return 0;
}
EOF
# shellcheck disable=SC2086
if $CC -std=c99 -Wall -Wextra -Werror "$tmp/consumer.c" -o "$tmp/consumer" $flags \
        2> "$tmp/cc.err"; then
    ok "C consumer built with: $CC -std=c99 consumer.c \$(pkg-config --cflags --libs ibvi)"
else
    cat "$tmp/cc.err"
    bad "C consumer does not build"
fi

# Runs a program with the DESTDIR's libdir first and checks where libibvi
# came from: ldd, the program's own report, and the loader's trace.
check_loaded() {
    prog=$1
    name=$2
    resolved=$(LD_LIBRARY_PATH="$libdir" ldd "$prog" | sed -n 's/.*libibvi\.so\.0 => \([^ ]*\).*/\1/p')
    case "$resolved" in
        "$libdir/libibvi.so.0") ok "$name: ldd resolves libibvi.so.0 to the DESTDIR" ;;
        *) bad "$name: ldd resolves libibvi.so.0 to '$resolved', expected $libdir/libibvi.so.0" ;;
    esac
    if ! LD_LIBRARY_PATH="$libdir" LD_DEBUG=libs LD_DEBUG_OUTPUT="$tmp/lddebug" \
            "$prog" > "$tmp/out" 2> "$tmp/err"; then
        cat "$tmp/out" "$tmp/err"
        bad "$name exited with an error"
        return
    fi
    cat "$tmp/out"
    if grep -h "calling init: .*libibvi" "$tmp"/lddebug.* | grep -q "$libdir/libibvi.so.0"; then
        ok "$name: the loader initialised $libdir/libibvi.so.0"
    else
        grep -h libibvi "$tmp"/lddebug.* | head -5
        bad "$name: LD_DEBUG=libs does not show the DESTDIR's libibvi.so.0"
    fi
    if grep -h "libibvi" "$tmp"/lddebug.* | grep -q "$build"; then
        bad "$name: the loader looked at the build tree"
    fi
    rm -f "$tmp"/lddebug.*
}
if [ -x "$tmp/consumer" ]; then
    check_loaded "$tmp/consumer" "C consumer"
    grep -q "^mapped: $libdir/libibvi.so.0" "$tmp/out" \
        && ok "C consumer reports $(sed -n 's/^mapped: //p' "$tmp/out")" \
        || bad "C consumer's /proc/self/maps does not show the DESTDIR's library"
fi

# ---- the C++ example, built the same way ------------------------------------------
if command -v "$CXX" > /dev/null 2>&1; then
    # shellcheck disable=SC2086
    if $CXX -std=c++17 -Wall -Wextra -Werror "$root/examples/cpp_example.cpp" \
            -o "$tmp/cpp_example" $flags 2> "$tmp/cxx.err"; then
        ok "C++ example built with: $CXX -std=c++17 cpp_example.cpp \$(pkg-config --cflags --libs ibvi)"
        check_loaded "$tmp/cpp_example" "C++ example"
    else
        cat "$tmp/cxx.err"
        bad "examples/cpp_example.cpp does not build against the installed library"
    fi
else
    echo "skip: no C++ compiler ($CXX)"
fi

# ---- the Python package on the installed library ------------------------------------
# A copy of the package outside the source tree (so its build-tree lookup
# finds nothing), no IBVI_LIBRARY or IBVI_BUILD_DIR: the system search must
# find the DESTDIR's library through LD_LIBRARY_PATH.
if [ -x "$PYTHON" ] && "$PYTHON" -c "import numpy" 2> /dev/null; then
    mkdir -p "$tmp/site"
    cp -r "$root/python/ibvi" "$tmp/site/"
    if (unset IBVI_LIBRARY IBVI_BUILD_DIR; cd "$tmp" && \
        LD_LIBRARY_PATH="$libdir" PYTHONPATH="$tmp/site" "$PYTHON" - "$libdir" > "$tmp/py.out" 2>&1 <<'EOF'
import os, sys
import numpy as np
import ibvi
net = ibvi.Net(2).add_dense(1, rank=2).init("sp", seed=42)
opt = ibvi.Optimizer(net, "sgd", lr=0.01)
x = np.array([[0, 1], [1, 0], [1, 1], [2, 1]], np.float32)
y = np.array([[-1], [2], [1], [3]], np.float32)
for _ in range(2000):
    loss = opt.train_step(x, targets=y)
assert loss < 1e-6, loss
mapped = [l.split()[-1] for l in open("/proc/self/maps") if "libibvi.so" in l]
print("python: found", ibvi.library_path, "mapped", mapped[0])
assert os.path.realpath(mapped[0]) == os.path.realpath(os.path.join(sys.argv[1], "libibvi.so.0")), mapped
EOF
    ); then
        cat "$tmp/py.out"
        ok "the Python package finds and uses the installed library"
    else
        cat "$tmp/py.out"
        bad "the Python package on the installed library"
    fi
else
    echo "skip: no $PYTHON with numpy"
fi

[ $fail -eq 0 ] && echo "ok: consumer"
exit $fail

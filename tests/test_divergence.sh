#!/usr/bin/env bash
# The divergence check of mnist_train (docs/concepts.md, "Learning rates and
# divergence"): at lr 2.0 every network diverges and is reported as such
# (table, JSON, exit status 0); at lr 0.02 none does and the metrics are
# numbers. Real Fashion-MNIST (Debian's dataset-fashion-mnist), small budget.
# Usage: test_divergence.sh MNIST_TRAIN
set -euo pipefail
train=$1
data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for lr in 2.0 0.02; do
    "$train" --data "$data" --train-limit 2000 --validation 200 --epochs 2 \
        --batch 64 --width 64,64 --rank 3 --methods standard,ibvi,temp,ensemble \
        --ensemble 2 --test-samples 4 --test-limit 500 --no-corruptions \
        --no-progress --lr $lr --json "$work/lr$lr.json" --svg "$work/lr$lr.svg" \
        > "$work/lr$lr.txt" 2> "$work/lr$lr.err"
    cat "$work/lr$lr.txt"
done
grep -q "standard diverged (epoch 1: " "$work/lr2.0.err"
grep -q "ibvi diverged (epoch 1: " "$work/lr2.0.err"
grep -q "^ibvi  *diverged (epoch 1: .*not evaluated" "$work/lr2.0.txt"
grep -q "ibvi: diverged, not evaluated" "$work/lr2.0.svg"
if grep -q diverged "$work/lr0.02.err" "$work/lr0.02.txt"; then
    echo "lr 0.02 was called diverged" >&2
    exit 1
fi
/usr/bin/python3 - "$work/lr2.0.json" "$work/lr0.02.json" <<'PY'
import json, math, sys
high, low = (json.load(open(p)) for p in sys.argv[1:])
names = ["standard", "temp-scaled", "ensemble-2", "ibvi"]
assert [m["name"] for m in high["methods"]] == names, high["methods"]
for m in high["methods"]:
    assert m["diverged"] is True, m
    assert m["divergence"].startswith("member 0, epoch 1: " if m["name"] == "ensemble-2"
                                      else "epoch 1: "), m["divergence"]
    for key in ("accuracy", "nll", "ece", "brier", "aurc", "temperature"):
        assert m[key] is None, (m["name"], key, m[key])
    assert m["reliability"] is None and m["corruptions"] == {}, m
for m in low["methods"]:
    assert m["diverged"] is False and "divergence" not in m, m
    # chance is 0.1; 2 short epochs leave IBVI at about 0.4
    assert math.isfinite(m["nll"]) and m["accuracy"] > 0.3, (m["name"], m["accuracy"])
print("divergence ok")
PY

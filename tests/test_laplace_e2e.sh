#!/usr/bin/env bash
# End to end: mnist_train's last-layer Laplace methods (docs/laplace.md) on
# a slice of Fashion-MNIST: the MLP with the full Hessian and with KFAC,
# and LeNet-5 with the validation prior. The posterior must predict about
# as well as the network it came from (the same means; a Laplace posterior
# moves little mass on a network trained this briefly), every metric must
# be present and finite, and the table must name the methods.
# Usage: test_laplace_e2e.sh MNIST_TRAIN
set -euo pipefail
train=$1
data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() { # check JSON STRUCTURE-NOTE
/usr/bin/python3 - "$1" "$2" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
names = [m["name"] for m in r["methods"]]
assert names == ["standard", "laplace", "laplace-probit"], names
by = {m["name"]: m for m in r["methods"]}
for m in r["methods"]:
    for key in ("accuracy", "nll", "ece", "brier", "ood_auroc", "aurc"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), (m["name"], key)
    assert m["model_floats"] > 0, m
for name in ("laplace", "laplace-probit"):
    d = abs(by[name]["accuracy"] - by["standard"]["accuracy"])
    assert d < 0.03, (name, by[name]["accuracy"], by["standard"]["accuracy"])
    assert by[name]["nll"] < 1.5 * by["standard"]["nll"], (name, by[name]["nll"])
    assert by[name]["train_seconds"] >= by["standard"]["train_seconds"]
# the sampled posterior carries the P x P factor, the probit does not
assert by["laplace"]["model_floats"] > by["laplace-probit"]["model_floats"]
print(sys.argv[2], "ok:", {n: (round(m["accuracy"], 4), round(m["nll"], 4))
                           for n, m in by.items()})
PY
}

for structure in full kfac; do
    "$train" --data "$data" --ood "$data" --train-limit 3000 --epochs 2 \
        --width 64,64 --methods standard,laplace,laplace-probit \
        --laplace "$structure" --test-samples 16 --test-limit 1000 \
        --no-corruptions --no-progress --json "$work/$structure.json" \
        > "$work/$structure.txt" 2> "$work/$structure.err"
    cat "$work/$structure.txt"
    grep "laplace:" "$work/$structure.err"
    grep -q "^laplace-probit " "$work/$structure.txt"
    check "$work/$structure.json" "mlp $structure"
done
grep -q "laplace: full, P = 650" "$work/full.err"
grep -q "laplace: KFAC, P = 650" "$work/kfac.err"

"$train" --model lenet5 --data "$data" --ood "$data" --train-limit 1000 \
    --validation 200 --epochs 2 --batch 16 --lr 0.05 \
    --methods standard,laplace,laplace-probit --laplace-prior validation \
    --test-samples 8 --test-limit 500 --no-corruptions --no-progress \
    --json "$work/lenet.json" > "$work/lenet.txt" 2> "$work/lenet.err"
cat "$work/lenet.txt"
grep "laplace:" "$work/lenet.err"
grep -q "laplace: full, P = 850, prior precision .* (validation NLL)" "$work/lenet.err"
check "$work/lenet.json" "lenet5 validation"

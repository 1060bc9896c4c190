#!/usr/bin/env bash
# End to end on real data: mnist_train trains a standard and an IBVI network
# for one epoch on a slice of Fashion-MNIST (Debian's dataset-fashion-mnist),
# writes JSON, SVG and a saved model; mnist_predict reloads the model. Then
# the same for a short LeNet-5 run.
# Usage: test_mnist_e2e.sh MNIST_TRAIN MNIST_PREDICT
set -euo pipefail
train=$1 predict=$2
data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# IBVI's covariance factors learn at lr / R, so it needs a few hundred steps
# before its accuracy approaches the standard network's: 3 epochs, batch 64.
"$train" --data "$data" --ood "$data" --train-limit 6000 --epochs 3 \
    --batch 64 --width 64,64 --methods standard,ibvi,temp --test-samples 8 \
    --test-limit 2000 \
    --no-progress --json "$work/r.json" --svg "$work/r.svg" \
    --save "$work/model.ibvi" > "$work/table.txt"
cat "$work/table.txt"

# Accuracy well above chance (10%) for both networks; every metric present.
/usr/bin/python3 - "$work/r.json" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
names = [m["name"] for m in r["methods"]]
assert names == ["standard", "temp-scaled", "ibvi"], names
for m in r["methods"]:
    for key in ("accuracy", "nll", "ece", "brier", "ood_auroc", "aupr_in",
                "aupr_out", "fpr95", "aurc", "ece_adaptive"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), (m["name"], key)
    assert m["accuracy"] > 0.6, (m["name"], m["accuracy"])
    assert len(m["corruptions"]) >= 8, m["corruptions"].keys()
    assert sum(m["reliability"]["counts"]) == 2000
# The same images as in- and out-of-distribution: AUROC must be 1/2.
    assert abs(m["ood_auroc"] - 0.5) < 1e-9, m["ood_auroc"]
# ... and every threshold holds as many in- as out-of-distribution points:
# precision 1/2 throughout, and the FPR equals the TPR reached (>= 95%).
    assert abs(m["aupr_in"] - 0.5) < 1e-6 and abs(m["aupr_out"] - 0.5) < 1e-6, m
    assert m["fpr95"] >= 0.95, m["fpr95"]
    assert 0 <= m["aurc"] <= 1 - m["accuracy"] + 1e-6, (m["aurc"], m["accuracy"])
print("json ok:", {m["name"]: round(m["accuracy"], 4) for m in r["methods"]})
PY
grep -q "<svg" "$work/r.svg" && grep -q "ECE = " "$work/r.svg" &&
    grep -q "risk-coverage" "$work/r.svg" && grep -q "AUPR-out" "$work/table.txt"

"$predict" --model "$work/model.ibvi" --data "$data" --count 5 --samples 8 | tee "$work/pred.txt"
test "$(grep -c '^[0-9]' "$work/pred.txt")" -eq 5

# LeNet-5 (convolutions, pooling), short: 900 images for 2 epochs at batch
# 16 (112 steps, 3 s; fewer steps leave the rank-2 IBVI network near chance).
"$train" --model lenet5 --data "$data" --train-limit 1000 --validation 100 \
    --epochs 2 --batch 16 --lr 0.05 --rank 2 --methods standard,ibvi \
    --test-samples 4 --test-limit 500 --no-corruptions --no-progress \
    --json "$work/lenet.json" --save "$work/lenet.ibvi" > "$work/lenet.txt"
cat "$work/lenet.txt"
/usr/bin/python3 - "$work/lenet.json" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["config"]["model"] == "lenet5", r["config"]
assert [m["name"] for m in r["methods"]] == ["standard", "ibvi"]
for m in r["methods"]:
    assert math.isfinite(m["nll"]) and sum(m["reliability"]["counts"]) == 500, m
    assert m["accuracy"] > 0.3, (m["name"], m["accuracy"])  # chance: 0.1
print("lenet5 ok:", {m["name"]: round(m["accuracy"], 4) for m in r["methods"]})
PY
"$predict" --model "$work/lenet.ibvi" --data "$data" --count 5 --samples 4 | tee "$work/lpred.txt"
test "$(grep -c '^[0-9]' "$work/lpred.txt")" -eq 5
echo "e2e ok"

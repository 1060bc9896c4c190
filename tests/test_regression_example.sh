#!/usr/bin/env bash
# The regression example on real data and on the 1-D toy (docs/results.md,
# "Regression and binary"). diabetes (Debian's python3-sklearn): every
# method's metrics are finite, the homoscedastic methods' 95% intervals cover
# 70-100% of the 100 test patients and their RMSE beats predicting the mean
# (the target's std is about 77). toy: IBVI's and the ensemble's epistemic
# std is larger in the gap between the clusters (x = 0) and far out
# (|x| = 2) than at the training points, the standard network's is 0, and
# the SVG draws bands and points for all three. At lr 3 every method is
# reported diverged.
# Usage: test_regression_example.sh REGRESSION
set -euo pipefail
regression=$1
data=/usr/lib/python3/dist-packages/sklearn/datasets/data
if [ ! -f "$data/diabetes_data_raw.csv.gz" ]; then
    echo "python3-sklearn is not installed: apt-get install python3-sklearn" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$regression" --json "$work/d.json" | tee "$work/d.txt"
"$regression" --dataset toy --epochs 1000 --json "$work/t.json" --svg "$work/t.svg" |
    tee "$work/t.txt"
/usr/bin/python3 - "$work/d.json" "$work/t.json" <<'PY'
import json, math, sys
d, t = (json.load(open(p)) for p in sys.argv[1:])
assert d["schema"] == "libibvi-regression/1" and d["config"]["test_points"] == 100, d
names = [m["name"] for m in d["methods"]]
assert names == ["standard", "ibvi", "ensemble-5", "standard-het", "ibvi-het",
                 "ensemble-5-het"], names
for m in d["methods"]:
    assert m["diverged"] is False, m
    for key in ("rmse", "nll", "coverage_50", "coverage_90", "coverage_95",
                "calibration_error", "crps"):
        assert math.isfinite(m[key]), (m["name"], key)
    assert m["rmse"] < 70, (m["name"], m["rmse"])
    assert 0 <= m["coverage_50"] <= m["coverage_90"] <= m["coverage_95"] <= 1, m
    if not m["name"].endswith("-het"):
        assert 0.7 <= m["coverage_95"] <= 1.0, (m["name"], m["coverage_95"])
        assert m["noise_std"] > 0, m
    else:
        assert m["noise_std"] is None, m
by = {m["name"]: m for m in t["methods"]}
assert by["standard"]["epistemic_std_data"] == 0 and by["standard"]["epistemic_std_far"] == 0
for name in ("ibvi", "ensemble-5"):
    m = by[name]
    assert m["epistemic_std_gap"] > 1.5 * m["epistemic_std_data"], m
    assert m["epistemic_std_far"] > 1.5 * m["epistemic_std_data"], m
    assert 0.7 <= m["coverage_95"] <= 1.0, m
print("regression ok:", {n: round(m["rmse"], 2) for n, m in zip(names, d["methods"])},
      {n: (round(m["epistemic_std_data"], 3), round(m["epistemic_std_gap"], 3),
           round(m["epistemic_std_far"], 3)) for n, m in by.items()})
PY
# At lr 3 every method diverges and is reported with null metrics.
"$regression" --lr 3 --epochs 5 --json "$work/div.json" > "$work/div.txt" 2>&1
/usr/bin/python3 - "$work/div.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r["methods"]) == 6, r
for m in r["methods"]:
    assert m["diverged"] is True and m["rmse"] is None and m["nll"] is None, m
    assert m["divergence"].startswith("member 0, " if "ensemble" in m["name"]
                                      else "epochs 1-"), m
PY
test "$(grep -c '<polygon' "$work/t.svg")" -eq 3
test "$(grep -c '<circle' "$work/t.svg")" -eq 120
test "$(grep -c "stroke-dasharray='4,3'" "$work/t.svg")" -eq 3
grep -q "ibvi</text>" "$work/t.svg"
echo "regression example ok"

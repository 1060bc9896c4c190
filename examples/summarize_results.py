#!/usr/bin/python3
"""Averages mnist_train --json files (one per seed) into a Markdown table.

    examples/summarize_results.py run_seed1.json run_seed2.json ...

Prints, per method, the mean (and, with several files, the spread as
min..max) of accuracy, NLL, ECE, Brier, OOD AUROC and the corrupted-set means.
"""
import json
import sys


def load(paths):
    runs = [json.load(open(p)) for p in paths]
    names = [m["name"] for m in runs[0]["methods"]]
    return runs, names


def cell(values, scale, digits):
    values = [v * scale for v in values if v is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def main(paths):
    runs, names = load(paths)
    first = runs[0]
    print(f"{first['dataset']} (OOD: {first['ood_dataset']}), "
          f"{len(runs)} seed(s), {first['config']['epochs']} epochs; "
          "mean (min..max over seeds)\n")
    print("| method | accuracy % | NLL | ECE % | Brier | OOD AUROC "
          "| corrupted accuracy % | corrupted NLL | corrupted ECE % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        rows = [next(m for m in r["methods"] if m["name"] == name) for r in runs]
        corr = [m["corruption_mean"] for m in rows]
        print("| " + " | ".join([
            name,
            cell([m["accuracy"] for m in rows], 100, 2),
            cell([m["nll"] for m in rows], 1, 4),
            cell([m["ece"] for m in rows], 100, 2),
            cell([m["brier"] for m in rows], 1, 4),
            cell([m["ood_auroc"] for m in rows], 1, 4),
            cell([c["accuracy"] for c in corr], 100, 2),
            cell([c["nll"] for c in corr], 1, 4),
            cell([c["ece"] for c in corr], 100, 2),
        ]) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

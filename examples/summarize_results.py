#!/usr/bin/python3
"""Averages mnist_train --json files over seeds into Markdown tables.

    examples/summarize_results.py run_seed1.json run_seed2.json ...

Files with the same seed (config.seed) are one run: their methods are merged
(the first file that has a method wins), so methods trained by separate
invocations can be reported together. Prints, per method, the mean over
seeds (and, with several seeds, the spread as min..max) of two tables:

1. accuracy, NLL, ECE, Brier, OOD AUROC and the corrupted-set means;
2. the OOD metrics (AUROC, AUPR with OOD positive, FPR at 95% TPR), the
   corrupted NLL, and training time and model memory relative to the
   standard network of the same file (train_seconds and model_floats, when
   the file has both).

A method that diverged in some seed counts only its other seeds and is
marked "diverged in N of M".
"""
import json
import sys


def load(paths):
    """{seed: {method name: (method, its file's standard method or None)}}
    and the method names in first-seen order."""
    runs, names, first = {}, [], None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        first = first or data
        seed = data["config"]["seed"]
        run = runs.setdefault(seed, {})
        standard = next((m for m in data["methods"] if m["name"] == "standard"),
                        None)
        for m in data["methods"]:
            if m["name"] not in run:
                run[m["name"]] = (m, standard)
            if m["name"] not in names:
                names.append(m["name"])
    return first, runs, names


def cell(values, scale, digits):
    values = [v * scale for v in values if v is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def ratio(m, standard, key):
    if m.get("diverged") or standard is None or m.get(key) is None or not standard.get(key):
        return None
    return m[key] / standard[key]


def label(name, rows):
    diverged = sum(1 for m, _ in rows if m.get("diverged"))
    return name + (f" (diverged in {diverged} of {len(rows)})" if diverged else "")


def main(paths):
    first, runs, names = load(paths)
    print(f"{first['dataset']} (OOD: {first['ood_dataset']}), model "
          f"{first['config'].get('model', 'mlp')}, {len(runs)} seed(s), "
          f"{first['config']['epochs']} epochs; mean (min..max over seeds)\n")
    print("| method | accuracy % | NLL | ECE % | Brier | OOD AUROC "
          "| corrupted accuracy % | corrupted NLL | corrupted ECE % |")
    print("|---|---|---|---|---|---|---|---|---|")
    table = []
    for name in names:
        rows = [run[name] for run in runs.values() if name in run]
        table.append((name, rows))
        ms = [m for m, _ in rows]
        corr = [m["corruption_mean"] for m in ms]
        print("| " + " | ".join([
            label(name, rows),
            cell([m["accuracy"] for m in ms], 100, 2),
            cell([m["nll"] for m in ms], 1, 4),
            cell([m["ece"] for m in ms], 100, 2),
            cell([m["brier"] for m in ms], 1, 4),
            cell([m["ood_auroc"] for m in ms], 1, 4),
            cell([c["accuracy"] for c in corr], 100, 2),
            cell([c["nll"] for c in corr], 1, 4),
            cell([c["ece"] for c in corr], 100, 2),
        ]) + " |")
    print("\n| method | OOD AUROC | OOD AUPR-out | FPR95 % | corrupted NLL "
          "| training time / standard | model memory / standard |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in table:
        ms = [m for m, _ in rows]
        print("| " + " | ".join([
            label(name, rows),
            cell([m["ood_auroc"] for m in ms], 1, 4),
            cell([m.get("aupr_out") for m in ms], 1, 4),
            cell([m.get("fpr95") for m in ms], 100, 1),
            cell([m["corruption_mean"]["nll"] for m in ms], 1, 4),
            cell([ratio(m, s, "train_seconds") for m, s in rows], 1, 2),
            cell([ratio(m, s, "model_floats") for m, s in rows], 1, 2),
        ]) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

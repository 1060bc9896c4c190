#!/usr/bin/python3
"""mnist_train.py - the Python twin of examples/mnist_train.c.

Trains a standard network and an IBVI network (and, on request, a deep
ensemble and temperature scaling) on an MNIST-style data set through the
ibvi package, then compares them on the test set, on a second data set as
out-of-distribution inputs and on seeded MNIST-C-style corruptions, and
prints the same table as the C program. With the same options both print
the same numbers (everything but the training time): the library computes
them, and the host code here (shuffling, learning-rate schedule, data,
corruptions) does what the C host code does.

    PYTHONPATH=python python3 python/examples/mnist_train.py \\
        --data data/fashion --ood data/mnist \\
        --train-limit 6000 --epochs 3 --batch 64 --test-limit 2000

SPDX-License-Identifier: MIT
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

import ibvi
import mnist_data
from mnist_data import Dataset

CHUNK = 1000
# The corruptions evaluated, in the C program's order (docs/results.md).
EVALUATED_CORRUPTIONS = [mnist_data.ROTATE, mnist_data.SHEAR, mnist_data.SCALE,
                         mnist_data.TRANSLATE, mnist_data.BRIGHTNESS,
                         mnist_data.STRIPE, mnist_data.SHOT_NOISE,
                         mnist_data.IMPULSE_NOISE]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A network whose training diverges (docs/concepts.md, \"Learning "
               "rates and divergence\") stops training and is reported as diverged.")
    p.add_argument("--data", required=True, help="training/test IDX files (e.g. data/fashion)")
    p.add_argument("--ood", help="out-of-distribution test set (e.g. data/mnist)")
    p.add_argument("--methods", default="standard,ibvi,temp",
                   help="comma list of standard, ibvi, ensemble, temp, mfvi "
                        "(mean-field VI: every layer diagonal, on the ELBO), "
                        "swag, laplace, laplace-probit (docs/swag.md, "
                        "docs/laplace.md)")
    p.add_argument("--swag-epochs", type=int, default=3,
                   help="SWAG's epochs of constant-lr SGD")
    p.add_argument("--swag-rank", type=int, default=ibvi.SWAG_DEFAULT_RANK,
                   help="SWAG's snapshots and deviation columns")
    p.add_argument("--swag-lr", type=float, default=0.0,
                   help="SWAG's constant lr (default --lr / 2)")
    p.add_argument("--laplace", choices=("full", "kfac"), default=None,
                   help="the Hessian's structure (default: full when its "
                        "P^2 doubles fit in 1 GiB)")
    p.add_argument("--laplace-prior", choices=("marglik", "validation"),
                   default="marglik")
    p.add_argument("--ensemble", type=int, default=3, help="members of the deep ensemble")
    p.add_argument("--kl-weight", type=float, default=1.0,
                   help="mfvi's KL term times this / N_train (1: the ELBO)")
    p.add_argument("--model", choices=("mlp", "lenet5", "resnet"), default="mlp",
                   help="the architecture (docs/tutorial.md)")
    p.add_argument("--width", default="256,256", help="hidden widths of mlp")
    p.add_argument("--rank", type=int, default=10, help="rank of first and last layer")
    p.add_argument("--param", choices=("mup", "sp"), default="mup")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.02, help="base lr, cosine decay")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--train-samples", type=int, default=1, help="M per training step")
    p.add_argument("--test-samples", type=int, default=32, help="K at test time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="BLIS threads per network")
    p.add_argument("--train-limit", type=int, default=0, help="use the first N images")
    p.add_argument("--test-limit", type=int, default=0,
                   help="evaluate only the first N test (and OOD) images")
    p.add_argument("--validation", type=int, default=-1,
                   help="held-out images for temperature scaling (default count/12)")
    p.add_argument("--no-corruptions", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--save", help="save the trained IBVI network")
    a = p.parse_args(argv)
    a.methods = a.methods.split(",")
    if not set(a.methods) <= {"standard", "ibvi", "ensemble", "temp", "mfvi",
                              "swag", "laplace", "laplace-probit"}:
        p.error("unknown method in --methods")
    if (a.swag_epochs < 1 or not 2 <= a.swag_rank <= ibvi.DIAG_LOWRANK_MAX_RANK
            or not a.swag_lr >= 0):
        p.error("bad --swag-epochs, --swag-rank or --swag-lr")
    a.hidden = [int(w) for w in a.width.split(",")]
    # The C program keeps lr and momentum as float: use the same values.
    a.lr = float(np.float32(a.lr))
    a.momentum = float(np.float32(a.momentum))
    return a


# ---- the host's training loop ------------------------------------------------

def add_lenet5(net, classes, rank):
    """conv 6@5x5 pad 2 - relu - maxpool 2 - conv 16@5x5 - relu - maxpool 2 -
    dense 120 - relu - dense 84 - relu - dense classes."""
    (net.add_conv2d(6, 5, padding=2, rank=rank).add_activation("relu")
     .add_maxpool(2).add_conv2d(16, 5).add_activation("relu").add_maxpool(2)
     .add_dense(120).add_activation("relu").add_dense(84).add_activation("relu")
     .add_dense(classes, rank))


#: Group-norm groups of the ResNet: a divisor of every width (16, 32, 64).
RESNET_GROUPS = 4


def add_basic_block(net, channels, stride, projection):
    """conv3x3 - GN - relu - conv3x3 - GN - residual - relu; no conv or
    projection has a bias (as in mnist_train.c)."""
    block_input = net.layer_count - 1
    (net.add_conv2d(channels, 3, stride=stride, padding=1, bias=False)
     .add_groupnorm(RESNET_GROUPS, 1e-5).add_activation("relu")
     .add_conv2d(channels, 3, padding=1, bias=False)
     .add_groupnorm(RESNET_GROUPS, 1e-5)
     .add_residual(block_input, stride if projection else 0, bias=False)
     .add_activation("relu"))


def add_resnet(net, classes, rank):
    """Stem conv 16@3x3 - GN - relu, blocks of 16, 32 (stride 2), 64 (stride 2)
    channels, global average pool, dense classes (the only bias)."""
    (net.add_conv2d(16, 3, padding=1, rank=rank, bias=False)
     .add_groupnorm(RESNET_GROUPS, 1e-5).add_activation("relu"))
    add_basic_block(net, 16, 1, False)
    add_basic_block(net, 32, 2, True)
    add_basic_block(net, 64, 2, True)
    net.add_global_avgpool().add_dense(classes, rank)


def build_network(args, data, rank, seed, mean_field=False):
    """The network of --model, `rank` on the first and last layers with
    weights; mlp: 784-W-...-W-10 with ReLU. mean_field: every layer with
    weights diagonal (a residual's projection stays deterministic)."""
    if args.model == "mlp":
        net = ibvi.Net(data.dim)
        for i, width in enumerate(args.hidden):
            net.add_dense(width, rank if i == 0 else 0).add_activation("relu")
        net.add_dense(data.classes, rank)
    else:
        net = ibvi.Net.image(1, data.rows, data.cols)
        (add_lenet5 if args.model == "lenet5" else add_resnet)(net, data.classes, rank)
    if mean_field:
        for layer in net.layers:
            if layer.param_count > 0 and layer.kind != ibvi.LayerKind.RESIDUAL:
                net.set_covariance(layer.index, ibvi.Covariance.DIAGONAL)
    net.init(args.param, seed)
    net.threads = args.threads
    return net


#: The divergence rule of the C program (docs/concepts.md, "Learning rates and
#: divergence"): a non-finite step loss, an epoch's mean training loss above
#: DIVERGENCE_FACTOR times the first step's loss, or the mean of an epoch
#: after the first above the first step's loss.
DIVERGENCE_FACTOR = 1.5


def train_network(net, args, train, name, seed, kl_weight=0.0, epochs=None,
                  constant_lr=0.0, swag=None, snapshots=0, reference_loss=0.0,
                  first_loss_out=None):
    """SGD + momentum with a cosine learning-rate schedule (or constant_lr),
    on the expected loss + kl_weight x KL (mean-field VI: 1 / N_train);
    returns the seconds and why the run diverged (None if it did not). A
    diverged run stops training there. swag: collect `snapshots` snapshots
    spread evenly over the steps. reference_loss > 0: the loss the
    divergence rule compares with instead of the first step's (a run that
    continues a trained network, as the C program's train_plan).
    first_loss_out: a list that receives the first step's loss."""
    epochs = args.epochs if epochs is None else epochs
    opt = ibvi.Optimizer.sgd(net, args.lr, momentum=args.momentum)
    opt.kl_weight = kl_weight
    net.reserve(args.batch, args.train_samples)
    order = list(range(train.count))
    state = seed
    steps_per_epoch = (train.count + args.batch - 1) // args.batch
    total_steps = steps_per_epoch * epochs
    progress = sys.stderr.isatty() and not args.no_progress
    start, step = time.monotonic(), 0
    first_loss, divergence = 0.0, None
    collected = 0
    for epoch in range(1, epochs + 1):
        state = mnist_data.shuffle(order, state)
        index = np.array(order)
        loss_sum, seen, epoch_start = 0.0, 0, time.monotonic()
        for b in range(0, train.count, args.batch):
            batch = index[b:b + args.batch]
            opt.lr = constant_lr if constant_lr > 0 else \
                args.lr * 0.5 * (1.0 + math.cos(3.14159265358979 * (step / total_steps)))
            step += 1
            try:
                loss = opt.train_step(train.images[batch], labels=train.labels[batch],
                                      samples=args.train_samples)
            except ibvi.NonFiniteError:
                divergence = "epoch %d: non-finite training loss" % epoch
                break
            if step == 1:
                first_loss = reference_loss if reference_loss > 0 else loss
                if first_loss_out is not None:
                    first_loss_out.append(loss)
            # Snapshot j (0-based) after step ceil((j + 1) T / snapshots).
            while swag is not None and collected < snapshots and \
                    step * snapshots >= (collected + 1) * total_steps:
                swag.collect(net)
                collected += 1
            loss_sum += loss * len(batch)
            seen += len(batch)
            if progress and (b // args.batch) % 20 == 0:
                print("\r%-12s epoch %2d/%-2d  %3d%%  loss %.4f" % (
                    name, epoch, epochs, 100 * seen // train.count,
                    loss_sum / seen), end="", file=sys.stderr)
        if divergence:
            if progress:
                print(file=sys.stderr)
            break
        rate = seen / (time.monotonic() - epoch_start)
        if loss_sum / seen > DIVERGENCE_FACTOR * first_loss:
            divergence = ("epoch %d: mean training loss %.4g > %.1f x the first "
                          "step's %.4g" % (epoch, loss_sum / seen, DIVERGENCE_FACTOR,
                                           first_loss))
        elif epoch > 1 and loss_sum / seen > first_loss:
            divergence = ("epoch %d: mean training loss %.4g > the first step's %.4g"
                          % (epoch, loss_sum / seen, first_loss))
        print("%s%-12s epoch %2d/%-2d loss %.4f  %6.0f img/s" % (
            "\r" if progress else "", name, epoch, epochs, loss_sum / seen, rate),
            file=sys.stderr)
        if divergence:
            break
    seconds = time.monotonic() - start
    if divergence:
        print("mnist_train.py: %s diverged (%s): training stopped, not evaluated; "
              "try a lower --lr (docs/concepts.md)" % (name, divergence), file=sys.stderr)
    opt.close()
    return seconds, divergence


def fit_temperature(net, validation):
    """T fitted on the validation logits of the mean network."""
    logits = np.concatenate([net.forward_mean(validation.images[s:s + CHUNK])
                             for s in range(0, validation.count, CHUNK)])
    return ibvi.temperature_fit(logits, validation.labels)


# ---- evaluation --------------------------------------------------------------

class Method:
    def __init__(self, name, predictor, seconds, temperature=1.0, divergence=None,
                 nets=()):
        self.name, self.predictor = name, predictor
        #: floats the trained model holds (param_count over its networks)
        self.model_floats = sum(n.param_count for n in nets)
        self.train_seconds, self.temperature = seconds, temperature
        self.corruptions = []
        #: why the training diverged (then nothing is evaluated), or None
        self.divergence = divergence


class Probit:
    """The probit predictive of a fitted Laplace approximation, with the
    interface predict_set uses: run(x, uncertainty) -> probs and, asked for,
    their entropy (the C program's laplace_probit_predict)."""

    class Result:
        def __init__(self, probs, entropy):
            self.probs, self.predictive_entropy = probs, entropy

    def __init__(self, laplace, net):
        self.laplace, self.net = laplace, net

    def run(self, x, uncertainty=False):
        probs = self.laplace.probit(self.net, x)
        return self.Result(probs, ibvi.entropy(probs) if uncertainty else None)


def scores(metrics):
    return {"accuracy": metrics.accuracy, "nll": metrics.nll, "ece": metrics.ece,
            "mce": metrics.mce, "brier": metrics.brier}


def predict_set(methods, data, corruption=mnist_data.IDENTITY, seed=0,
                want_entropy=False):
    """Runs every method's predictor over a data set (corrupted unless
    IDENTITY); returns per method a Metrics and the predictive entropies.
    Each chunk is corrupted once and given to all predictors."""
    metrics = [ibvi.Metrics(data.classes) for _ in methods]
    entropy = [np.empty(data.count, np.float32) for _ in methods] if want_entropy else None
    for start in range(0, data.count, CHUNK):
        x = data.images[start:start + CHUNK]
        if corruption != mnist_data.IDENTITY:
            x = mnist_data.corrupt(corruption, x, data.rows, data.cols, seed, start)
        for k, m in enumerate(methods):
            p = m.predictor.run(x, uncertainty=want_entropy)
            if want_entropy:
                entropy[k][start:start + len(x)] = p.predictive_entropy
            metrics[k].add(p.probs, data.labels[start:start + len(x)])
    return metrics, entropy


def evaluate(methods, args, test, ood):
    methods = [m for m in methods if m.divergence is None]
    in_metrics, in_entropy = predict_set(methods, test, want_entropy=True)
    for k, m in enumerate(methods):
        m.test = scores(in_metrics[k])
        m.bins = in_metrics[k].bins()
        m.ece_adaptive = in_metrics[k].ece_adaptive(ibvi.METRICS_BINS)
        m.aurc = in_metrics[k].aurc
        m.ood_auroc = m.ood_aupr_in = m.ood_aupr_out = m.ood_fpr95 = float("nan")
    if ood is not None:
        # Predictive entropy is the OOD score of all four metrics.
        _, out_entropy = predict_set(methods, ood, want_entropy=True)
        for k, m in enumerate(methods):
            m.ood_auroc = ibvi.auroc(in_entropy[k], out_entropy[k])
            m.ood_aupr_in = ibvi.aupr_in(in_entropy[k], out_entropy[k])
            m.ood_aupr_out = ibvi.aupr_out(in_entropy[k], out_entropy[k])
            m.ood_fpr95 = ibvi.fpr_at_tpr(in_entropy[k], out_entropy[k], 0.95)
    for k, which in enumerate(EVALUATED_CORRUPTIONS if not args.no_corruptions else []):
        metrics, _ = predict_set(methods, test, which, args.seed + 1000 + k)
        for i, m in enumerate(methods):
            m.corruptions.append(scores(metrics[i]))


def corruption_mean(m):
    if not m.corruptions:
        return {key: 0.0 for key in ("accuracy", "nll", "ece", "mce", "brier")}
    return {key: sum(c[key] for c in m.corruptions) / len(m.corruptions)
            for key in m.corruptions[0]}


def print_table(methods, dataset, ood_name, corruption_names):
    """The table of examples/report.c, character for character."""
    print("\n%s test set (OOD: %s); NLL in nats, ECE with 15 bins" % (dataset, ood_name))
    print("%-14s %8s %8s %8s %8s %9s %8s %8s %8s | %9s %9s %9s | %8s" % (
        "method", "acc %", "NLL", "ECE %", "Brier", "OOD AUROC", "AUPR-in",
        "AUPR-out", "FPR95 %", "corr acc%", "corr NLL", "corr ECE%", "train s"))
    for m in methods:
        if m.divergence:
            print("%-14s diverged (%s): not evaluated" % (m.name, m.divergence))
            continue
        c = corruption_mean(m)
        print("%-14s %8.2f %8.4f %8.2f %8.4f %9.4f %8.4f %8.4f %8.2f "
              "| %9.2f %9.4f %9.2f | %8.1f" % (
                  m.name, 100 * m.test["accuracy"], m.test["nll"], 100 * m.test["ece"],
                  m.test["brier"], m.ood_auroc, m.ood_aupr_in, m.ood_aupr_out,
                  100 * m.ood_fpr95, 100 * c["accuracy"], c["nll"],
                  100 * c["ece"], m.train_seconds))
    if not corruption_names or not methods:
        return
    print("\nPer corruption, NLL (accuracy %%):\n%-14s" % "corruption", end="")
    for m in methods:
        print(" %18s" % m.name, end="")
    print()
    for k, name in enumerate(corruption_names):
        print("%-14s" % name, end="")
        for m in methods:
            if m.divergence:
                print(" %18s" % "diverged", end="")
                continue
            print("   %7.4f (%6.2f)" % (m.corruptions[k]["nll"],
                                        100 * m.corruptions[k]["accuracy"]), end="")
        print()


def write_json(path, methods, args, dataset, ood_name, corruption_names, counts):
    def method(m):
        def number(v):
            return None if math.isnan(v) else v
        if m.divergence:
            none = dict.fromkeys(("accuracy", "nll", "ece", "mce", "brier"))
            return {"name": m.name, "diverged": True, "divergence": m.divergence,
                    **none, **dict.fromkeys(("ece_adaptive", "aurc", "ood_auroc",
                                             "aupr_in", "aupr_out", "fpr95",
                                             "temperature")),
                    "train_seconds": m.train_seconds,
                    "model_floats": m.model_floats, "reliability": None,
                    "corruptions": {}, "corruption_mean": none}
        d = {"name": m.name, "diverged": False, **m.test,
             "ece_adaptive": m.ece_adaptive, "aurc": m.aurc,
             "ood_auroc": number(m.ood_auroc), "aupr_in": number(m.ood_aupr_in),
             "aupr_out": number(m.ood_aupr_out), "fpr95": number(m.ood_fpr95),
             "temperature": m.temperature, "train_seconds": m.train_seconds,
             "model_floats": m.model_floats,
             "reliability": {"counts": m.bins.counts.tolist(),
                             "accuracy": m.bins.accuracy.tolist(),
                             "confidence": m.bins.confidence.tolist()},
             "corruptions": dict(zip(corruption_names, m.corruptions)),
             "corruption_mean": corruption_mean(m)}
        return d
    config = {"model": args.model, "hidden": "%d x %d" % (len(args.hidden), args.hidden[0]),
              "rank": args.rank, "parameterization": args.param,
              "epochs": args.epochs, "lr": float("%g" % args.lr),
              "momentum": float("%g" % args.momentum),
              "batch": args.batch, "train_samples": args.train_samples,
              "test_samples": args.test_samples, "seed": args.seed,
              "threads": args.threads, "train_images": counts[0],
              "validation_images": counts[1], "ensemble": args.ensemble,
              "kl_weight": float("%g" % args.kl_weight),
              "blis_kernel": ibvi.kernel_name()}
    with open(path, "w") as f:
        json.dump({"schema": "libibvi-mnist-train/1", "dataset": dataset,
                   "ood_dataset": ood_name, "config": config,
                   "methods": [method(m) for m in methods]}, f, indent=2)
        f.write("\n")


def main(argv=None):
    args = parse_args(argv)
    print("libibvi %s (Python binding, %s)" % (ibvi.version(), ibvi.library_path),
          file=sys.stderr)
    try:
        train = Dataset.load(args.data, "train")
        test = Dataset.load(args.data, "t10k")
        ood = Dataset.load(args.ood, "t10k") if args.ood else None
    except (OSError, ValueError) as e:
        sys.exit("mnist_train.py: %s\n(run examples/prepare_data.sh data first)" % e)
    if ood is not None and ood.dim != train.dim:
        sys.exit("mnist_train.py: OOD images have %d pixels, training images %d"
                 % (ood.dim, train.dim))
    if 0 < args.train_limit < train.count:
        train.limit(args.train_limit)
    if 0 < args.test_limit < test.count:
        test.limit(args.test_limit)
    if ood is not None and 0 < args.test_limit < ood.count:
        ood.limit(args.test_limit)
    if args.validation < 0:
        args.validation = train.count // 12
    validation = train.take_tail(args.validation) if args.validation > 0 else None
    test.classes = train.classes
    dataset = os.path.basename(os.path.normpath(args.data))
    ood_name = os.path.basename(os.path.normpath(args.ood)) if args.ood else "none"
    if args.model == "mlp":
        arch = "MLP %d-%s-%d" % (train.dim, "-".join(map(str, args.hidden)),
                                 train.classes)
    else:
        arch = "%s on 1x%dx%d, %d classes" % (
            "LeNet-5" if args.model == "lenet5" else "ResNet (GroupNorm)",
            train.rows, train.cols, train.classes)
    print("%s: %d train, %d validation, %d test images; %s, %s, %d epochs, "
          "lr %g, batch %d, %d threads" % (
              dataset, train.count, validation.count if validation else 0, test.count,
              arch, "muP" if args.param == "mup" else "SP", args.epochs, args.lr,
              args.batch, args.threads), file=sys.stderr)
    print("BLIS kernel: %s" % ibvi.kernel_description(), file=sys.stderr)

    methods = []
    nets = []
    laplaces = []
    # Standard networks: member 0 is "standard", all of them the ensemble.
    members = args.ensemble if "ensemble" in args.methods else 1
    standard, seconds, diverged = [], [], []
    laplace = {"laplace", "laplace-probit"} & set(args.methods)
    first_loss = []  # member 0's first-step loss, for SWAG's phase
    if {"standard", "temp", "ensemble", "swag"} & set(args.methods) or laplace:
        for i in range(members):
            net = build_network(args, train, 0, args.seed + 100 * i)
            s, why = train_network(net, args, train, "member %d" % i if i else "standard",
                                   args.seed + 100 * i + 7,
                                   first_loss_out=None if i else first_loss)
            seconds.append(s)
            diverged.append(why)
            standard.append(net)
    nets += standard
    # The ensemble diverged if a member did: the first such member's reason.
    ensemble_divergence = next(("member %d, %s" % (i, why)
                                for i, why in enumerate(diverged) if why), None)
    if "standard" in args.methods:
        methods.append(Method("standard", ibvi.Predictor(standard[0], 1, args.seed),
                              seconds[0], divergence=diverged[0], nets=standard[:1]))
    if "temp" in args.methods:
        if validation is None:
            sys.exit("mnist_train.py: temp needs --validation > 0")
        pred = ibvi.Predictor(standard[0], 1, args.seed)
        t = None
        if diverged[0] is None:
            t = fit_temperature(standard[0], validation)
            pred.set_temperature(t)
        methods.append(Method("temp-scaled", pred, seconds[0], t, diverged[0],
                              nets=standard[:1]))
    if "ensemble" in args.methods:
        methods.append(Method("ensemble-%d" % members,
                              ibvi.Predictor.ensemble(standard, 1, args.seed),
                              sum(seconds), divergence=ensemble_divergence,
                              nets=standard))
    if "ibvi" in args.methods:
        net = build_network(args, train, args.rank, args.seed)
        s, why = train_network(net, args, train, "ibvi", args.seed + 7)
        methods.append(Method("ibvi", ibvi.Predictor(net, args.test_samples, args.seed),
                              s, divergence=why, nets=[net]))
        nets.append(net)
        if args.save and why:
            print("mnist_train.py: not saving the diverged IBVI network", file=sys.stderr)
        elif args.save:
            net.save(args.save)
            print("saved the IBVI network to %s" % args.save, file=sys.stderr)
    if "mfvi" in args.methods:
        net = build_network(args, train, 0, args.seed, mean_field=True)
        s, why = train_network(net, args, train, "mfvi", args.seed + 11,
                               kl_weight=float(np.float32(args.kl_weight) /
                                               np.float32(train.count)))
        methods.append(Method("mfvi", ibvi.Predictor(net, args.test_samples, args.seed),
                              s, divergence=why, nets=[net]))
        nets.append(net)
    if "swag" in args.methods:
        # SWAG (docs/swag.md): from the trained standard network's means,
        # --swag-epochs more epochs at the constant --swag-lr with
        # --swag-rank snapshots; K = --test-samples samples of its Gaussian.
        s, why, post = seconds[0], diverged[0], None
        if why is None:
            work = standard[0].like()
            work.init(args.param, args.seed + 13)
            for to, frm in zip(work.param_layers, standard[0].param_layers):
                to.mean = frm.mean
            swag = ibvi.Swag(work, rank=args.swag_rank)
            start = time.monotonic()
            lr = args.swag_lr if args.swag_lr > 0 else float(np.float32(args.lr) / 2)
            _, why = train_network(work, args, train, "swag", args.seed + 13,
                                   epochs=args.swag_epochs, constant_lr=lr,
                                   swag=swag, snapshots=args.swag_rank,
                                   reference_loss=first_loss[0] if first_loss else 0.0)
            if why is None:
                post = swag.build()
                s += time.monotonic() - start
                nets.append(post)
            swag.close()
            work.close()
        methods.append(Method("swag", post and ibvi.Predictor(post, args.test_samples,
                                                              args.seed),
                              s, divergence=why, nets=[post] if post else []))
    if laplace:
        # The last-layer Laplace approximation (docs/laplace.md) of the
        # trained standard network, as the C program fits it.
        if args.laplace_prior == "validation" and validation is None:
            sys.exit("mnist_train.py: --laplace-prior validation needs --validation > 0")
        P = standard[0].layers[-1].param_count
        structure = args.laplace or ("full" if 8.0 * P * P <= float(1 << 30) else "kfac")
        la, fit_seconds = None, 0.0
        if diverged[0] is None:
            start = time.monotonic()
            la = ibvi.Laplace.fit(
                standard[0], train.images, train.labels, structure=structure,
                prior=args.laplace_prior,
                x_val=validation.images if validation else None,
                labels_val=validation.labels if validation else None)
            fit_seconds = time.monotonic() - start
            print("laplace: %s, P = %d, prior precision %g (%s), log marginal "
                  "likelihood %.1f, fitted in %.1f s" % (
                      "full" if structure == "full" else "KFAC", P,
                      la.prior_precision, "marginal likelihood"
                      if args.laplace_prior == "marglik" else "validation NLL",
                      la.log_marglik, fit_seconds), file=sys.stderr)
        if "laplace" in args.methods:
            post, s = None, seconds[0] + fit_seconds
            if la is not None:
                start = time.monotonic()
                post = la.build(standard[0])
                s += time.monotonic() - start
                nets.append(post)
            methods.append(Method("laplace", post and ibvi.Predictor(
                post, args.test_samples, args.seed), s, divergence=diverged[0],
                nets=[post] if post else []))
        if "laplace-probit" in args.methods:
            m = Method("laplace-probit", la and Probit(la, standard[0]),
                       seconds[0] + fit_seconds, divergence=diverged[0])
            if la is not None:
                # The means and what the probit reads beyond them (as the
                # C program counts them).
                C = standard[0].output_dim
                aug = P / C
                extra = C * aug * aug if structure == "full" else \
                    aug * aug + aug + 2 * C * C + C
                m.model_floats = standard[0].param_count + int(2.0 * extra)
            methods.append(m)
        laplaces.append(la)

    evaluate(methods, args, test, ood)
    corruption_names = [] if args.no_corruptions else \
        [mnist_data.NAMES[c] for c in EVALUATED_CORRUPTIONS]
    print_table(methods, dataset, ood_name, corruption_names)
    if args.json:
        write_json(args.json, methods, args, dataset, ood_name, corruption_names,
                   (train.count, validation.count if validation else 0))
    for la in laplaces:
        if la is not None:
            la.close()
    for net in nets:
        net.close()  # also closes the predictors
    return 0


if __name__ == "__main__":
    sys.exit(main())

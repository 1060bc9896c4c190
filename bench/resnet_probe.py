#!/usr/bin/python3
"""resnet_probe.py - diagnose IBVI training of the mnist_train ResNet (issue 11).

Trains the ResNet of examples/mnist_train.c (add_resnet) on the first N
Fashion-MNIST training images with the example's loop (SGD, momentum 0.9,
batch 128, cosine schedule, per-epoch splitmix64 shuffle) and prints, per
epoch, the mean training loss, then the test accuracy of the mean network
(z = 0) next to the K-sample predictive accuracy. Optionally logs, for the
first steps, the gradient norms of every layer's mean and factor and the
scale of the first conv's sampled output against its mean's.

Not a test and not part of the library: a probe for docs/results.md.

    PYTHONPATH=python /usr/bin/python3 bench/resnet_probe.py --data data/fashion \
        --n 5000 --epochs 3 --rank-first 10 --rank-last 10
"""

import argparse
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "python", "examples"))

import ibvi  # noqa: E402
from mnist_data import Dataset, shuffle  # noqa: E402

GROUPS = 4
#: --conv-bias: the convolutions and projections with biases, as mnist_train
#: built them before libibvi 0.6.0 (docs/results.md's first probe tables).
BIAS = False


def add_block(net, channels, stride, projection):
    start = net.layer_count - 1
    (net.add_conv2d(channels, 3, stride=stride, padding=1, bias=BIAS)
     .add_groupnorm(GROUPS, 1e-5).add_activation("relu")
     .add_conv2d(channels, 3, padding=1, bias=BIAS)
     .add_groupnorm(GROUPS, 1e-5)
     .add_residual(start, stride if projection else 0, bias=BIAS)
     .add_activation("relu"))


def build(args, rows, cols, rank_first, rank_last, seed):
    net = ibvi.Net.image(1, rows, cols)
    (net.add_conv2d(16, 3, padding=1, rank=rank_first, bias=BIAS)
     .add_groupnorm(GROUPS, 1e-5).add_activation("relu"))
    add_block(net, 16, 1, False)
    add_block(net, 32, 2, True)
    add_block(net, 64, 2, True)
    net.add_global_avgpool().add_dense(10, rank_last)
    net.init(args.param, seed)
    net.threads = 1
    return net


def var_layers(net):
    return [l for l in net.layers if l.kind in (ibvi.LayerKind.DENSE,
                                                 ibvi.LayerKind.CONV2D)
            and l.rank > 0]


def apply_overrides(args, net):
    """--factor-scale / --zero-bias-factor: edit the prior's factor."""
    if args.zero_hidden_bias and BIAS:
        for l in net.layers:
            if l.kind in (ibvi.LayerKind.CONV2D, ibvi.LayerKind.RESIDUAL) \
                    and l.index > 0 and l.param_count:
                theta = l.get_mean()
                theta[theta.size - l.output_shape.channels:] = 0
                l.set_mean(theta)
    for l in var_layers(net):
        s = l.get_factor()
        s *= args.factor_scale
        if args.zero_bias_factor and l.has_bias:
            c = l.output_shape.channels
            s[s.shape[0] - c:] = 0
        l.set_factor(s)


def norms(net):
    out = []
    for i, l in enumerate(net.layers):
        if l.param_count == 0:
            continue
        gm = float(np.linalg.norm(l.get_grad_mean()))
        gf = float(np.linalg.norm(l.get_grad_factor())) if l.rank else 0.0
        out.append((i, l.kind.name.lower(), gm, gf))
    return out


def stem_scale(net, x):
    """||S z|| conv output / ||mu|| conv output for the first conv over x,
    with 8 draws of z: runs a 1-layer copy of the stem."""
    first = net.layer(0)
    if first.rank == 0:
        return float("nan")
    stem = ibvi.Net.image(1, 28, 28).add_conv2d(16, 3, padding=1,
                                               rank=first.rank, bias=BIAS)
    stem.init("sp", 0)
    stem.layer(0).set_mean(first.get_mean())
    stem.layer(0).set_factor(first.get_factor())
    mean = stem.forward_mean(x)
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(8):
        z = rng.standard_normal((1, first.rank)).astype(np.float32)
        ratios.append(np.linalg.norm(stem.forward_noise(x, z) - mean) /
                      np.linalg.norm(mean))
    stem.close()
    return float(np.mean(ratios))


def factor_norms(net):
    """RMS of the weight rows and the bias rows of each variational layer's
    factor (the prior's: weight std / sqrt(R) and bias std / sqrt(R))."""
    parts = []
    for l in var_layers(net):
        s = l.get_factor()
        c = l.output_shape.channels if l.has_bias else 0
        parts.append("L%d S_w %.3g S_b %.3g" % (
            l.index, np.sqrt(np.mean(s[:s.shape[0] - c] ** 2)),
            np.sqrt(np.mean(s[s.shape[0] - c:] ** 2)) if c else 0.0))
    return " ".join(parts)


def pooled_features(net, x):
    """The global-average-pooled features (the last dense layer's input) of
    the mean network: a copy of the body ending in an identity dense."""
    body = ibvi.Net.image(1, 28, 28)
    (body.add_conv2d(16, 3, padding=1, bias=BIAS).add_groupnorm(GROUPS, 1e-5)
     .add_activation("relu"))
    add_block(body, 16, 1, False)
    add_block(body, 32, 2, True)
    add_block(body, 64, 2, True)
    body.add_global_avgpool().add_dense(64)
    body.init("sp", 0)
    last = body.layer_count - 1
    for i, l in enumerate(body.layers):
        if l.param_count and i < last:
            l.set_mean(net.layer(i).get_mean())
    body.layer(last).set_mean(np.concatenate(
        [np.eye(64).ravel(), np.zeros(64)]).astype(np.float32))
    f = body.forward_mean(x)
    body.close()
    return f


def feature_stats(net, x):
    f = pooled_features(net, x)
    m = np.abs(f.mean(0)).mean()
    s = f.std(0).mean()
    return ("pooled features: mean |.| %.3f, std across inputs %.3f (%.3f of "
            "the mean), dead %d/64" % (m, s, s / m, int((f.max(0) <= 0).sum())))


def consistency_check(net, x, y):
    """train_step's loss and gradients against forward_noise with the step's
    own noise, loss and backward; the applied SGD multipliers against
    lr_multipliers (factor: / R). Plain SGD at a tiny lr (x, y: a batch)."""
    lr = 1e-30
    for m in (1, 3):
        opt = ibvi.Optimizer.sgd(net, lr, momentum=0.0)
        loss = opt.train_step(x, labels=y, samples=m)
        z = net.last_noise(m)
        got = [(l.get_grad_mean(), l.get_grad_factor() if l.rank else None)
               for l in net.layers if l.param_count]
        r = ibvi.loss("softmax_xent", net.forward_noise(x, z),
                      labels=np.tile(y, m))
        net.backward(r.grad)
        worst = 0.0
        for (a, af), l in zip(got, [l for l in net.layers if l.param_count]):
            b = l.get_grad_mean()
            worst = max(worst, np.abs(a - b).max() / (np.abs(b).max() + 1e-30))
            if af is not None:
                bf = l.get_grad_factor()
                worst = max(worst, np.abs(af - bf).max() /
                            (np.abs(bf).max() + 1e-30))
        print("check M=%d: train_step loss %.6f, forward_noise + loss %.6f; "
              "gradients: max relative difference %.2e" % (m, loss, r.loss, worst))
        opt.close()
    lr = 1e-3
    opt = ibvi.Optimizer.sgd(net, lr, momentum=0.0)
    layers = [l for l in net.layers if l.param_count]
    before = [(l.get_mean(), l.get_factor() if l.rank else None) for l in layers]
    opt.train_step(x, labels=y)
    def med(d, g, part):
        d, g = d[part].ravel(), g[part].ravel()
        if g.size == 0:  # a layer without a bias
            return float("nan")
        ok = np.abs(g) > 1e-2 * np.abs(g).max()
        return float(np.median(d[ok] / g[ok]))
    for l, (m0, f0) in zip(layers, before):
        c = (l.output_shape.channels
             if l.has_bias or l.kind == ibvi.LayerKind.GROUPNORM else 0)
        w, b = slice(0, l.param_count - c), slice(l.param_count - c, None)
        g, d = l.get_grad_mean(), (m0 - l.get_mean()) / lr
        line = ("check layer %2d %-9s sgd multipliers (w, b) %.4g %.4g: applied "
                "(median) %.4g %.4g" % ((l.index, l.kind.name.lower())
                                        + l.lr_multipliers("sgd")
                                        + (med(d, g, w), med(d, g, b))))
        if f0 is not None:
            gf, df = l.get_grad_factor(), (f0 - l.get_factor()) / lr
            line += "; factor %.4g %.4g" % (med(df, gf, w), med(df, gf, b))
        print(line)
    opt.close()


def evaluate(net, test, k, seed):
    pm = net.predictor(1, seed)
    pm.set_mean_network(True)
    mean_acc = float(np.mean(np.argmax(pm.predict_proba(test.images), 1)
                             == test.labels))
    pm.close()
    if not var_layers(net):
        return mean_acc, mean_acc, float("nan")
    pk = net.predictor(k, seed)
    probs = pk.predict_proba(test.images)
    pk.close()
    acc = float(np.mean(np.argmax(probs, 1) == test.labels))
    nll = float(np.mean(-np.log(np.maximum(probs[np.arange(test.count),
                                                 test.labels], 1e-12))))
    return mean_acc, acc, nll


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=5000,
                   help="training images (mnist_train --train-limit L trains "
                        "on L - L/12: give 18334 for L = 20000)")
    p.add_argument("--test", type=int, default=1000, help="test images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--samples", type=int, default=1, help="M per step")
    p.add_argument("--k", type=int, default=8, help="K at test time")
    p.add_argument("--rank-first", type=int, default=10)
    p.add_argument("--rank-last", type=int, default=10)
    p.add_argument("--param", choices=("mup", "sp"), default="mup")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--factor-scale", type=float, default=1.0,
                   help="multiply the prior factor of every variational layer")
    p.add_argument("--zero-bias-factor", action="store_true",
                   help="zero the bias rows of every factor at init")
    p.add_argument("--conv-bias", action="store_true",
                   help="convolutions and projections with biases (mnist_train "
                        "before libibvi 0.6.0)")
    p.add_argument("--zero-hidden-bias", action="store_true",
                   help="zero the mean biases of the convs and projections "
                        "after the stem at init")
    p.add_argument("--feature-stats", type=int, default=-1,
                   help="print the pooled features' statistics every 10 steps "
                        "(256 training images, mean network) up to step N "
                        "(a multiple of 10), then exit")
    p.add_argument("--check", action="store_true",
                   help="check train_step against forward_noise/loss/backward "
                        "and the applied multipliers on one batch, then exit")
    p.add_argument("--log-steps", type=int, default=0,
                   help="print per-layer gradient norms for the first N steps")
    p.add_argument("--log-every", type=int, default=0,
                   help="print the running loss every N steps")
    args = p.parse_args()
    global BIAS
    BIAS = args.conv_bias

    train = Dataset.load(args.data, "train")
    train.limit(args.n)
    test = Dataset.load(args.data, "t10k")
    test.limit(args.test)
    net = build(args, train.rows, train.cols, args.rank_first, args.rank_last,
                args.seed)
    apply_overrides(args, net)
    if args.check:
        consistency_check(net, train.images[:64], train.labels[:64])
        return
    opt = ibvi.Optimizer.sgd(net, args.lr, momentum=args.momentum)
    net.reserve(args.batch, args.samples)
    print("# n %d epochs %d lr %g M %d ranks %d/%d %s seed %d factor-scale %g%s"
          % (args.n, args.epochs, args.lr, args.samples, args.rank_first,
             args.rank_last, args.param, args.seed, args.factor_scale,
             " zero-bias-factor" if args.zero_bias_factor else "")
          + (" zero-hidden-bias" if args.zero_hidden_bias else "")
          + (" conv-bias" if args.conv_bias else ""))
    if var_layers(net):
        print("# stem |S z x| / |mu x| at init: %.3f"
              % stem_scale(net, train.images[:256]))
    order = list(range(train.count))
    state = args.seed + 7  # mnist_train.c shuffles with seed + 7
    steps_per_epoch = (train.count + args.batch - 1) // args.batch
    total = steps_per_epoch * args.epochs
    step = 0
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        state = shuffle(order, state)
        idx = np.array(order)
        loss_sum, seen, window = 0.0, 0, []
        for b in range(0, train.count, args.batch):
            rows = idx[b:b + args.batch]
            x, y = train.images[rows], train.labels[rows]
            opt.lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = opt.train_step(x, labels=y, samples=args.samples)
            if 0 <= step <= args.feature_stats and step % 10 == 0:
                print("step %3d loss %.4f %s" % (step, loss, feature_stats(
                    net, train.images[:256])))
                if step == args.feature_stats:
                    return
            if step < args.log_steps:
                # train_step leaves the gradients of this step's backward.
                parts = " ".join("%d:%s %.3g/%.3g" % t for t in norms(net))
                print("step %3d loss %.4f | grad |mean|/|factor| %s"
                      % (step, loss, parts))
            step += 1
            loss_sum += loss * len(rows)
            seen += len(rows)
            window.append(loss)
            if args.log_every and step % args.log_every == 0:
                print("  step %d loss(last %d) %.4f %s" % (
                    step, len(window), np.mean(window), factor_norms(net)))
                window = []
        mean_acc, acc, nll = evaluate(net, test, args.k, args.seed)
        extra = ""
        if var_layers(net):
            extra = " stem-ratio %.3f %s" % (stem_scale(net, train.images[:256]),
                                              factor_norms(net))
        print("epoch %d loss %.4f mean-net acc %.4f K=%d acc %.4f nll %.4f%s "
              "(%.0f s)" % (epoch, loss_sum / seen, mean_acc, args.k, acc, nll,
                             extra, time.time() - start))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The Python API reproduces a C program bit for bit.

tests/python/train_reference.c trains two networks (SGD + Nesterov through
ibvi_train_step; Adam through forward / loss / backward / step), predicts,
computes metrics and fits a temperature, and prints every number as its bit
pattern. This test does the same through the ibvi package and compares each
line. The C program's path comes from IBVI_TRAIN_REFERENCE (set by meson).
"""
import os
import subprocess
import unittest

import numpy as np

import ibvi

N, IN, CLASSES, OUT_B = 32, 6, 4, 3


def bits(a):
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        return " ".join("%08x" % v for v in a.ravel().view(np.uint32))
    if a.dtype == np.float64:
        return " ".join("%016x" % v for v in a.ravel().view(np.uint64))
    return " ".join("%d" % v for v in a.ravel())


def data():
    i = np.arange(N)[:, None]
    j = np.arange(IN)[None, :]
    x = (((i * 131 + j * 71) % 97) - 48).astype(np.float32) / np.float32(32)
    k = np.arange(OUT_B)[None, :]
    t = (((i * 17 + k * 5) % 23) - 11).astype(np.float32) / np.float32(8)
    labels = ((np.arange(N) * 7 + 3) % CLASSES).astype(np.int32)
    return x, t, labels


def params(prefix, net, out):
    for layer in net.layers:
        if layer.kind != ibvi.LayerKind.DENSE:
            continue
        out["%s.layer%d.mean" % (prefix, layer.index)] = bits(layer.mean)
        if layer.rank > 0:
            out["%s.layer%d.factor" % (prefix, layer.index)] = bits(layer.factor)


def python_results():
    x, t, labels = data()
    r = {}
    a = (ibvi.Net(IN).add_dense(16, rank=3).add_activation("tanh")
         .add_dense(12).add_activation(ibvi.Activation.RELU)
         .add_dense(CLASSES, rank=2).init(ibvi.Param.MUP, seed=1234))
    opt_a = ibvi.Optimizer.sgd(a, 0.1, momentum=0.9, nesterov=True)
    losses = np.empty(25, np.float32)
    for step in range(25):
        first = (step * 8) % N
        opt_a.lr = np.float32(0.1) / np.float32(1 + step % 3)
        losses[step] = ibvi.train_step(a, opt_a, x[first:first + 8], samples=2,
                                       labels=labels[first:first + 8])
    r["a.losses"] = bits(losses)
    params("a", a, r)
    r["a.position_steps"] = "%d %d" % (a.rng_position, opt_a.step_count)

    b = (ibvi.Net(IN).add_dense(8, rank=2).add_activation("silu")
         .add_dense(OUT_B, rank=1).init("sp", seed=99))
    opt_b = ibvi.Optimizer.adam(b, 0.01, beta1=0.8, beta2=0.99, eps=1e-7)
    losses = np.empty(10, np.float32)
    for step in range(10):
        out = b.forward(x, samples=3)
        noise = b.last_noise()
        loss, grad = ibvi.loss_squared(out, t)
        b.backward(grad)
        opt_b.step()
        losses[step] = loss
    r["b.losses"] = bits(losses)
    r["b.out"] = bits(out)
    r["b.noise"] = bits(noise)
    r["b.layer0.grad_factor"] = bits(b.layer(0).grad_factor)
    params("b", b, r)

    pred = ibvi.Predictor(a, samples=5, seed=7)
    pred.set_batch_size(10)
    p = pred.run(x)
    r["c.probs"] = bits(p.probs)
    r["c.pe"] = bits(p.predictive_entropy)
    r["c.ee"] = bits(p.expected_entropy)
    r["c.mi"] = bits(p.mutual_information)
    r["c.noise"] = bits(pred.noise())
    m = ibvi.Metrics(CLASSES)
    m.add(p.probs, labels)
    r["c.metrics"] = bits(np.array([m.accuracy, m.nll, m.brier, m.ece, m.mce]))
    bins = m.bins()
    r["c.bin_counts"] = bits(bins.counts)
    r["c.bin_conf"] = bits(bins.confidence)
    pe = p.predictive_entropy
    r["c.auroc"] = bits(np.array([ibvi.auroc(pe[:N // 2], pe[N // 2:])]))
    pred.set_mean_network(True)
    pred.set_temperature(1.5)
    r["c.mean_probs_t15"] = bits(pred.predict_proba(x))
    logits = a.forward_mean(x)
    temperature = ibvi.temperature_fit(logits, labels)
    r["c.temperature"] = bits(np.array([temperature], np.float32))
    calibrated = ibvi.temperature_apply(logits, temperature)
    r["c.calibrated"] = bits(calibrated)
    r["c.entropy"] = bits(ibvi.entropy(calibrated))
    blob = a.to_bytes(opt_a)
    crc = int.from_bytes(blob[-4:], "little")
    r["c.file_size_crc"] = "%d %d" % (len(blob), crc)
    for h in (m, pred, opt_b, b, opt_a, a):
        h.close()
    return r


def c_results():
    exe = os.environ.get("IBVI_TRAIN_REFERENCE")
    if not exe:
        raise unittest.SkipTest("IBVI_TRAIN_REFERENCE is not set")
    text = subprocess.run([exe], check=True, capture_output=True,
                          text=True).stdout
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


class MatchC(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = c_results()
        cls.py = python_results()

    def test_same_keys(self):
        self.assertEqual(sorted(self.c), sorted(self.py))
        self.assertGreater(len(self.c), 20)

    def test_bit_for_bit(self):
        for key in sorted(self.c):
            with self.subTest(key=key):
                self.assertEqual(self.py.get(key), self.c[key],
                                 "%s differs between C and Python" % key)

    def test_training_did_something(self):
        first = int(self.c["a.losses"].split()[0], 16)
        last = int(self.c["a.losses"].split()[-1], 16)
        f = np.array([first, last], np.uint32).view(np.float32)
        self.assertTrue(np.all(np.isfinite(f)))
        self.assertNotEqual(first, last)


if __name__ == "__main__":
    unittest.main()

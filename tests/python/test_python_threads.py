"""Two Python threads training two different networks at once get exactly
the results of training them one after the other: ctypes releases the GIL
during each call, the library keeps no global mutable state, and each
network draws from its own seeded stream."""
import threading
import time
import unittest

import numpy as np

import ibvi

STEPS = 40


def make(seed):
    net = (ibvi.Net(64).add_dense(128, 4).add_activation("relu")
           .add_dense(128).add_activation("tanh").add_dense(10, 4)
           .init("mup", seed))
    opt = ibvi.Optimizer.sgd(net, 0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS, 32, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=(STEPS, 32)).astype(np.int32)
    return net, opt, x, y


def train(net, opt, x, y, losses, barrier=None):
    if barrier is not None:
        barrier.wait()
    for step in range(STEPS):
        losses.append(opt.train_step(x[step], labels=y[step], samples=2))
    pred = ibvi.Predictor(net, 8, 1)
    losses.append(pred.run(x[0]).probs)


def snapshot(net):
    return [l.mean for l in net.dense_layers] + \
        [l.factor for l in net.dense_layers if l.rank]


class Threads(unittest.TestCase):
    def test_concurrent_equals_sequential(self):
        seq = {}
        for seed in (1, 2):
            net, opt, x, y = make(seed)
            losses = []
            train(net, opt, x, y, losses)
            seq[seed] = (snapshot(net), losses)
        for _ in range(3):
            runs = {seed: make(seed) for seed in (1, 2)}
            out = {1: [], 2: []}
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=train, args=runs[s][:4] + (out[s], barrier))
                       for s in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for seed in (1, 2):
                params, losses = seq[seed]
                self.assertEqual(len(out[seed]), STEPS + 1)
                self.assertEqual(out[seed][:STEPS], losses[:STEPS])
                np.testing.assert_array_equal(out[seed][STEPS], losses[STEPS])
                for a, b in zip(snapshot(runs[seed][0]), params):
                    np.testing.assert_array_equal(a, b)
        self.assertNotEqual(seq[1][1][:STEPS], seq[2][1][:STEPS])

    def test_gil_is_released_during_calls(self):
        """While one thread is inside a long C call, another keeps running
        Python code (were the GIL held, no tick could happen during the call)."""
        net = ibvi.Net(1024).add_dense(1024).add_activation("relu").add_dense(1024)
        net.init("sp", 0)
        x = np.ones((1024, 1024), np.float32)
        net.forward_mean(x)  # warm up
        t0 = time.perf_counter()
        net.forward_mean(x)
        # one call of about 0.15 s (or more on a slow machine)
        rows = 1024 * min(16, max(1, int(0.15 / (time.perf_counter() - t0)) + 1))
        big = np.ones((rows, 1024), np.float32)
        ticks = ticks_inside_call(net.forward_mean, big)
        self.assertGreater(ticks, 100)


def ticks_inside_call(call, *args):
    """Runs call(*args) in a thread; returns how many iterations of a Python
    loop in this thread fell strictly inside the call."""
    started, done = threading.Event(), threading.Event()
    span = []

    def worker():
        started.set()
        time.sleep(0.01)
        t0 = time.perf_counter()
        call(*args)
        span.extend((t0, time.perf_counter()))
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    stamps = []
    while not done.is_set():
        stamps.append(time.perf_counter())
    t.join()
    t0, t1 = span
    # trim 20 ms at both ends: around the call, a switch interval (5 ms) may
    # let this thread run between taking a timestamp and entering or after
    # leaving the call
    return sum(1 for s in stamps if t0 + 0.02 < s < t1 - 0.02)

if __name__ == "__main__":
    unittest.main()

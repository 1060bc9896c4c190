"""Handles are freed: 10,000 create/free cycles of every kind of handle do
not grow the process (resident set from /proc/self/statm), and a counting
allocator sees every byte the library took given back, whether the handles
are closed explicitly, by context managers, by the network's close(), or by
the garbage collector."""
import gc
import os
import unittest
import weakref

import numpy as np

import ibvi

PAGE = os.sysconf("SC_PAGE_SIZE")
X = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
Y = np.arange(8, dtype=np.int32) % 3


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cycle(allocator=None, explicit=True):
    """One round of every handle kind; returns weak references to them."""
    net = ibvi.Net(6, allocator=allocator).add_dense(16, 2).add_activation("relu")
    net.add_dense(3, 2).init("mup", 1)
    opt = ibvi.Optimizer.sgd(net, 0.05, momentum=0.9)
    opt.train_step(X, labels=Y)
    pred = ibvi.Predictor(net, 4, 2)
    probs = pred.run(X).probs
    m = ibvi.Metrics(3, allocator=allocator)
    m.add(probs, Y)
    m.accuracy
    blob = net.to_bytes(opt)
    net2, opt2 = ibvi.Net.from_bytes_with_optimizer(blob, allocator=allocator)
    try:
        ibvi.load_bytes(blob[:-3], allocator=allocator)  # failing load
    except ibvi.FormatError:
        pass
    try:
        ibvi.Net(6, allocator=allocator).add_dense(0)   # failing call
    except ibvi.InvalidArgument:
        pass
    refs = [weakref.ref(o) for o in (net, opt, pred, m, net2, opt2)]
    if explicit:
        with m:
            pass
        pred.close()
        opt.close()
        net.close()
        net2.close()  # closes opt2 first
    return refs


class Leaks(unittest.TestCase):
    def run_cycles(self, count, **kw):
        for _ in range(count):
            cycle(**kw)

    def test_rss_stays_flat_over_10000_cycles(self):
        self.run_cycles(500)          # warm up: caches, arenas, BLIS
        self.run_cycles(500, explicit=False)
        gc.collect()
        before = rss_bytes()
        self.run_cycles(5000)
        self.run_cycles(5000, explicit=False)
        gc.collect()
        grown = rss_bytes() - before
        # one leaked network of this size per cycle would be > 10 MB
        self.assertLess(grown, 3 * 1024 * 1024, "RSS grew by %d bytes" % grown)

    def test_counting_allocator_gets_everything_back(self):
        a = ibvi.CountingAllocator()
        for explicit in (True, False):
            for _ in range(200):
                refs = cycle(allocator=a, explicit=explicit)
            gc.collect()
            self.assertTrue(all(r() is None for r in refs))
            self.assertEqual(a.live, 0, "explicit=%s" % explicit)
            self.assertEqual(a.live_bytes, 0)
        self.assertEqual(a.unknown_frees, 0)
        self.assertEqual(a.allocations, a.frees)
        self.assertGreater(a.allocations, 200 * 8)

    def test_net_closed_before_its_dependents(self):
        a = ibvi.CountingAllocator()
        net = ibvi.Net(6, allocator=a).add_dense(3, 2).init("sp", 0)
        opt = ibvi.Optimizer(net, "adam", 0.01)
        pred = ibvi.Predictor(net, 3, 0)
        net.close()  # frees the optimizer and predictor first, then the network
        self.assertEqual(a.live, 0)
        self.assertTrue(opt.closed and pred.closed)
        opt.close()
        pred.close()
        del opt, pred, net
        gc.collect()
        self.assertEqual(a.unknown_frees, 0)

    def test_reference_cycles_free_in_any_order(self):
        """Objects in a garbage cycle are finalised in an arbitrary order; a
        network finalised before its optimizer must not be freed first."""
        a = ibvi.CountingAllocator()
        for _ in range(100):
            net = ibvi.Net(6, allocator=a).add_dense(3, 2).init("sp", 0)
            holder = {"net": net, "opt": ibvi.Optimizer(net, "sgd", 0.1),
                      "pred": ibvi.Predictor(net, 2, 0)}
            holder["self"] = holder  # a cycle through all three
            del net, holder
        gc.collect()
        self.assertEqual((a.live, a.unknown_frees), (0, 0))


if __name__ == "__main__":
    unittest.main()

"""Saving and loading from Python: files and bytes, with and without the
optimizer; a loaded network predicts bit for bit like the original and
training resumed from a file matches an uninterrupted run bit for bit."""
import os
import pathlib
import struct
import tempfile
import unittest
import zlib

import numpy as np

import ibvi

rng = np.random.default_rng(0)
X = rng.normal(size=(20, 16, 10)).astype(np.float32)
Y = rng.integers(0, 4, size=(20, 16)).astype(np.int32)


def build(seed=5):
    net = (ibvi.Net(10).add_dense(24, 3).add_activation("silu").add_dense(12)
           .add_activation("relu").add_dense(4, 2).init("mup", seed))
    net.threads = 2
    return net


def params(net):
    out = []
    for l in net.dense_layers:
        out.append(l.mean)
        if l.rank:
            out.append(l.factor)
    return out


def train(net, opt, steps):
    return [opt.train_step(X[s], labels=Y[s], samples=2) for s in steps]


class SaveLoad(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def assertSameParams(self, a, b):
        pa, pb = params(a), params(b)
        self.assertEqual(len(pa), len(pb))
        for u, v in zip(pa, pb):
            np.testing.assert_array_equal(u, v)

    def test_roundtrip_file_and_bytes(self):
        net = build()
        opt = ibvi.Optimizer.sgd(net, 0.05, momentum=0.9)
        train(net, opt, range(5))
        path = self.dir / "model \u00e9.ibvi"  # pathlib and a non-ASCII name
        net.save(path)
        blob = net.to_bytes()
        self.assertEqual(path.read_bytes(), blob)
        self.assertEqual(len(blob), net.save_size())
        self.assertEqual(os.listdir(self.dir), [path.name])  # no temporary left
        for loaded in (ibvi.load(path), ibvi.Net.load(str(path)),
                       ibvi.load_bytes(blob), ibvi.Net.from_bytes(bytearray(blob)),
                       ibvi.Net.from_bytes(memoryview(blob))):
            with loaded:
                self.assertSameParams(loaded, net)
                self.assertEqual((loaded.seed, loaded.rng_position, loaded.threads,
                                  loaded.parameterization, loaded.input_dim,
                                  loaded.layer_count, loaded.param_count),
                                 (net.seed, net.rng_position, net.threads,
                                  net.parameterization, net.input_dim,
                                  net.layer_count, net.param_count))
                self.assertEqual([l.kind for l in loaded.layers],
                                 [l.kind for l in net.layers])
                self.assertEqual([l.activation for l in loaded.layers],
                                 [l.activation for l in net.layers])
                p1 = ibvi.Predictor(net, 16, 3).run(X[0])
                p2 = ibvi.Predictor(loaded, 16, 3).run(X[0])
                for a, b in zip(p1, p2):
                    np.testing.assert_array_equal(a, b)
                position = net.rng_position
                np.testing.assert_array_equal(loaded.forward(X[1], 3), net.forward(X[1], 3))
                net.rng_position = position
        # the file without optimizer: load_with_optimizer gives None
        n2, o2 = ibvi.Net.load_with_optimizer(path)
        self.assertIsNone(o2)
        n2.close()

    def test_file_layout_is_the_documented_one(self):
        net = build()
        blob = net.to_bytes()
        magic, version, size = struct.unpack_from("<4sIQ", blob)
        self.assertEqual((magic, version, size), (b"IBVI", ibvi.FORMAT_VERSION, len(blob)))
        crc, = struct.unpack_from("<I", blob, len(blob) - 4)
        self.assertEqual(crc, zlib.crc32(blob[:-4]))
        self.assertEqual(blob[16:20], b"HEAD")

    def test_resumed_training_is_bit_exact(self):
        for kind in ("sgd", "adam"):
            with self.subTest(kind=kind):
                ref = build()
                ref_opt = (ibvi.Optimizer.sgd(ref, 0.05, momentum=0.9, nesterov=True)
                           if kind == "sgd" else ibvi.Optimizer.adam(ref, 1e-3, 0.8, 0.99))
                train(ref, ref_opt, range(8))
                path = self.dir / ("resume-%s.ibvi" % kind)
                ref.save(path, ref_opt)
                blob = ref.to_bytes(ref_opt)
                self.assertEqual(path.read_bytes(), blob)
                ref_losses = train(ref, ref_opt, range(8, 20))
                for loader in (lambda: ibvi.Net.load_with_optimizer(path),
                               lambda: ibvi.Net.from_bytes_with_optimizer(blob)):
                    net, opt = loader()
                    self.assertIsInstance(opt, ibvi.Optimizer)
                    self.assertIs(opt.net, net)
                    self.assertIsNone(opt.kind)  # not queryable through the C API
                    self.assertEqual(opt.step_count, 8)
                    self.assertEqual(opt.lr, ref_opt.lr)
                    with self.assertRaises(ibvi.StateError):
                        opt.step()  # gradients are not saved
                    losses = train(net, opt, range(8, 20))
                    self.assertEqual(losses, ref_losses)
                    self.assertSameParams(net, ref)
                    self.assertEqual(opt.step_count, 20)
                    net.close()
                    self.assertTrue(opt.closed)

    def test_save_replaces_and_load_uses_the_allocator(self):
        path = self.dir / "m.ibvi"
        a = build(1)
        a.save(path)
        b = build(2)
        b.save(path)  # replaces atomically
        alloc = ibvi.CountingAllocator()
        loaded = ibvi.Net.load(path, allocator=alloc)
        self.assertSameParams(loaded, b)
        self.assertGreater(alloc.live, 0)
        loaded.close()
        self.assertEqual(alloc.live, 0)
        path.write_bytes(b"IBVI" + b"\0" * 12)
        with self.assertRaises(ibvi.FormatError):
            ibvi.Net.load(path, allocator=alloc)
        self.assertEqual(alloc.live, 0)


if __name__ == "__main__":
    unittest.main()

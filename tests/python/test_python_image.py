"""Image networks from Python: Net.image / Net(shape=), input_shape and
output_shape, NCHW batches (n, c, h, w) accepted wherever x is, giving the
results of the same data flat (n, c*h*w) bit for bit."""
import unittest

import numpy as np

import ibvi
from ibvi import _util

rng = np.random.default_rng(11)


def image_mlp(seed=3, shape=(2, 3, 4)):
    """Dense layers on an image input: they read each example flat."""
    return (ibvi.Net.image(*shape).add_dense(10, 2).add_activation("relu")
            .add_dense(3, 1).init("mup", seed))


class ImageShapes(unittest.TestCase):
    def test_image_constructor_and_shapes(self):
        for net in (ibvi.Net.image(2, 3, 4), ibvi.Net(shape=(2, 3, 4)),
                    ibvi.Net(shape=np.array([2, 3, 4]))):
            with net:
                self.assertEqual(net.input_shape, (2, 3, 4))
                self.assertEqual(net.input_shape.channels, 2)
                self.assertIsInstance(net.input_shape, ibvi.ImageShape)
                self.assertEqual(net.input_dim, 24)
                net.add_dense(5).add_activation("tanh")
                self.assertEqual(net.layer(0).output_shape, (5, 1, 1))
                self.assertEqual(net.layer(1).output_shape, (5, 1, 1))
                self.assertEqual(net.layer(0).inputs, 24)
                self.assertIn("2x3x4", repr(net))
        flat = ibvi.Net(7)
        self.assertEqual(flat.input_shape, (7, 1, 1))
        self.assertEqual(repr(flat), "<ibvi.Net 7 (not initialised)>")

    def test_constructor_argument_checks(self):
        with self.assertRaises(ibvi.InvalidArgument) as cm:
            ibvi.Net()
        self.assertIn("give input_dim or shape", cm.exception.message)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Net(24, shape=(2, 3, 4))
        for bad in ((2, 3), (2, 3, 4, 5), 24, "abc"):
            with self.assertRaises(ibvi.InvalidArgument, msg=repr(bad)):
                ibvi.Net(shape=bad)
        for args in ((2.0, 3, 4), (2, 3, True), (2, 2**31, 4), (2, 3, -2**31 - 1),
                     ("2", 3, 4)):
            with self.assertRaises(ibvi.InvalidArgument, msg=repr(args)):
                ibvi.Net.image(*args)
        # values the library refuses: its own message
        for args in ((0, 3, 4), (2, -1, 4), (2, 3, 0), (10**4, 10**4, 10**4)):
            with self.assertRaises(ibvi.InvalidArgument, msg=repr(args)) as cm:
                ibvi.Net.image(*args)
            self.assertTrue(cm.exception.message.startswith(
                "ibvi_net_create_image"), cm.exception.message)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Net.image(2, 3, 4, allocator=object())

    def test_nchw_reshape_shares_memory(self):
        x = rng.normal(size=(5, 2, 3, 4)).astype(np.float32)
        flat = _util.images(x, (2, 3, 4), "t", "x")
        self.assertEqual(flat.shape, (5, 24))
        self.assertTrue(np.shares_memory(flat, x))
        self.assertIs(_util.images(flat, (2, 3, 4), "t", "x"), flat)
        # not C-contiguous / float64: converted once, same values
        xt = np.asfortranarray(x)
        np.testing.assert_array_equal(_util.images(xt, (2, 3, 4), "t", "x"), flat)
        np.testing.assert_array_equal(
            _util.images(x.astype(np.float64), (2, 3, 4), "t", "x"), flat)


class NchwInputs(unittest.TestCase):
    def setUp(self):
        self.x4 = rng.normal(size=(6, 2, 3, 4)).astype(np.float32)
        self.x2 = self.x4.reshape(6, 24).copy()
        self.labels = np.array([0, 1, 2, 0, 1, 2], np.int32)

    def test_forward_paths_agree(self):
        a, b = image_mlp(), image_mlp()
        np.testing.assert_array_equal(a.forward(self.x4, 3), b.forward(self.x2, 3))
        np.testing.assert_array_equal(a.forward_mean(self.x4), b.forward_mean(self.x2))
        z = rng.normal(size=(2, a.noise_size)).astype(np.float32)
        np.testing.assert_array_equal(a.forward_noise(self.x4, z),
                                      b.forward_noise(self.x2, z))
        with a.predictor(8, 4) as pa, b.predictor(8, 4) as pb:
            for u, v in zip(pa.run(self.x4), pb.run(self.x2)):
                np.testing.assert_array_equal(u, v)

    def test_training_agrees(self):
        a, b = image_mlp(), image_mlp()
        oa, ob = a.optimizer("sgd", 0.05), b.optimizer("sgd", 0.05)
        for _ in range(4):
            la = oa.train_step(self.x4, labels=self.labels, samples=2)
            lb = ob.train_step(self.x2, labels=self.labels, samples=2)
            self.assertEqual(la, lb)
            la = ibvi.train_step(a, oa, self.x4, labels=self.labels)
            lb = ibvi.train_step(b, ob, self.x2, labels=self.labels)
            self.assertEqual(la, lb)
        for la, lb in zip(a.param_layers, b.param_layers):
            np.testing.assert_array_equal(la.mean, lb.mean)
            np.testing.assert_array_equal(la.factor, lb.factor)

    def test_wrong_shapes_raise_shape_error(self):
        net = image_mlp()
        cases = {
            "x has shape (6, 3, 2, 4), expected (n, 2, 3, 4) or (n, 24)":
                self.x4.reshape(6, 3, 2, 4),
            "x has 23 columns, expected 24 (= 2 x 3 x 4)": self.x2[:, :23],
            "x must be (n, 2, 3, 4) or (n, 24), got shape (6, 2, 12)":
                self.x4.reshape(6, 2, 12),
            "x must be (n, 2, 3, 4) or (n, 24), got shape (144,)":
                self.x2.ravel(),
        }
        for msg, x in cases.items():
            for call in (lambda: net.forward(x), lambda: net.forward_mean(x),
                         lambda: net.predictor(2).run(x),
                         lambda: net.optimizer().train_step(x, labels=self.labels)):
                with self.assertRaises(ibvi.ShapeError) as cm:
                    call()
                self.assertTrue(cm.exception.message.endswith(msg),
                                cm.exception.message)
        # a flat network keeps its message and takes (n, d, 1, 1)
        flat = ibvi.Net(4).add_dense(2).init("sp", 1)
        with self.assertRaises(ibvi.ShapeError) as cm:
            flat.forward(np.zeros((2, 3), np.float32))
        self.assertEqual(cm.exception.message, "Net.forward: x has 3 columns, expected 4")
        x = rng.normal(size=(3, 4)).astype(np.float32)
        np.testing.assert_array_equal(flat.forward_mean(x.reshape(3, 4, 1, 1)),
                                      flat.forward_mean(x))

    def test_save_load_keeps_values(self):
        net = image_mlp()
        loaded = ibvi.Net.from_bytes(net.to_bytes())
        np.testing.assert_array_equal(loaded.forward_mean(self.x2),
                                      net.forward_mean(self.x4))


if __name__ == "__main__":
    unittest.main()

"""Image networks from Python: Net.image / Net(shape=), input_shape and
output_shape, NCHW batches (n, c, h, w) accepted wherever x is, giving the
results of the same data flat (n, c*h*w) bit for bit."""
import json
import os
import subprocess
import sys
import tempfile
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


# ---- networks of the image layers, against a numpy reference ----------------
#
# An architecture is a list of (method, args, kwargs); build() adds it to a
# network, reference() computes the same forward pass in float64 numpy from
# the layers' parameters read back through the binding, so the binding's
# layouts (NCHW, theta of each kind, the order of the noise) are checked end
# to end against the definitions of docs/image-layers.md.

SHAPE = (2, 6, 6)
SPEC_A = [("add_conv2d", (4, 3), dict(padding=1, rank=2)),              # 0: 4x6x6
          ("add_groupnorm", (2,), dict(eps=1e-4)),                       # 1
          ("add_activation", ("relu",), {}),                             # 2
          ("add_conv2d", (4, 3), dict(padding=1, kernel_w=1, padding_w=0)),  # 3
          ("add_residual", (2,), {}),                                    # 4: identity
          ("add_maxpool", (2,), {}),                                     # 5: 4x3x3
          ("add_conv2d", (6, 3), dict(stride=2, padding=1)),             # 6: 6x2x2
          ("add_groupnorm", (3,), {}),                                   # 7
          ("add_residual", (5,), dict(projection_stride=2)),             # 8: 1x1 s2
          ("add_activation", ("tanh",), {}),                             # 9
          ("add_avgpool", (2,), dict(stride=1)),                         # 10: 6x1x1
          ("add_flatten", (), {}),                                       # 11
          ("add_dense", (3,), dict(rank=1))]                             # 12
SPEC_B = [("add_conv2d", (3, 3), dict(rank=1)),                        # 0: 3x4x4
          ("add_activation", ("silu",), {}),                             # 1
          ("add_conv2d", (3, 1), {}),                                    # 2: 3x4x4
          ("add_residual", (0,), {}),                                    # 3: + layer 0
          ("add_global_avgpool", (), {}),                                # 4: 3x1x1
          ("add_dense", (4,), dict(rank=2))]                             # 5
OUT_SHAPES_A = [(4, 6, 6)] * 5 + [(4, 3, 3)] + [(6, 2, 2)] * 4 + [(6, 1, 1)] * 2 \
    + [(3, 1, 1)]
KINDS_A = ["CONV2D", "GROUPNORM", "ACTIVATION", "CONV2D", "RESIDUAL", "MAXPOOL",
           "CONV2D", "GROUPNORM", "RESIDUAL", "ACTIVATION", "AVGPOOL", "FLATTEN",
           "DENSE"]


def build(spec, seed=7, shape=SHAPE, param="mup"):
    net = ibvi.Net.image(*shape)
    for method, args, kwargs in spec:
        getattr(net, method)(*args, **kwargs)
    return net.init(param, seed)


def conv_ref(x, w, b, stride, pad):
    """x (n, c, h, w); w (o, c, kh, kw); zero padding (ph, pw)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho = (h + 2 * pad[0] - kh) // stride[0] + 1
    wo = (wd + 2 * pad[1] - kw) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    for p in range(ho):
        for q in range(wo):
            patch = xp[:, :, p * stride[0]:p * stride[0] + kh,
                       q * stride[1]:q * stride[1] + kw]
            y[:, :, p, q] = np.einsum("ncij,ocij->no", patch, w) + b
    return y


def pool_ref(x, k, s, op):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n, c, ho, wo))
    for p in range(ho):
        for q in range(wo):
            y[:, :, p, q] = op(x[:, :, p * s:p * s + k, q * s:q * s + k], axis=(2, 3))
    return y


ACT = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
       "silu": lambda v: v / (1 + np.exp(-v))}


def reference(net, spec, x, z=None):
    """The forward pass of `net` (built from `spec`) on NCHW x in float64,
    with theta = mu + S z_layer for the variational layers (z: one noise
    sample, or None for the mean network)."""
    outs, h, zpos = [], x.astype(np.float64), 0
    for i, (method, args, kw) in enumerate(spec):
        layer = net.layer(i)
        theta = None
        if layer.param_count:
            theta = layer.mean.astype(np.float64)
            if layer.rank and z is not None:
                theta = theta + layer.factor.astype(np.float64) @ z[zpos:zpos + layer.rank]
                zpos += layer.rank
        c_out = layer.output_shape.channels
        if method == "add_conv2d":
            c_in = h.shape[1]
            kh = args[1]
            kwd = kw.get("kernel_w") or kh
            s = kw.get("stride", 1)
            sw = kw.get("stride_w") or s
            p = kw.get("padding", 0)
            pw = kw.get("padding_w", p)
            w = theta[:c_out * c_in * kh * kwd].reshape(c_out, c_in, kh, kwd)
            h = conv_ref(h, w, theta[c_out * c_in * kh * kwd:], (s, sw), (p, pw))
        elif method == "add_groupnorm":
            g = args[0]
            eps = kw.get("eps", 1e-5)
            n, c, hh, ww = h.shape
            v = h.reshape(n, g, -1)
            v = (v - v.mean(2, keepdims=True)) / np.sqrt(v.var(2, keepdims=True) + np.float32(eps))
            h = v.reshape(n, c, hh, ww) * theta[:c, None, None] + theta[c:, None, None]
        elif method == "add_activation":
            h = ACT[args[0]](h)
        elif method == "add_residual":
            f = args[0]
            skip = x.astype(np.float64) if f == -1 else outs[f]
            ps = kw.get("projection_stride", 0)
            if ps:
                skip = skip[:, :, ::ps, ::ps]
                c_in = skip.shape[1]
                w = theta[:c_out * c_in].reshape(c_out, c_in)
                skip = np.einsum("nchw,oc->nohw", skip, w) + theta[c_out * c_in:, None, None]
            h = h + skip
        elif method == "add_maxpool":
            h = pool_ref(h, args[0], kw.get("stride", args[0]), np.max)
        elif method == "add_avgpool":
            h = pool_ref(h, args[0], kw.get("stride", args[0]), np.mean)
        elif method == "add_global_avgpool":
            h = h.mean(axis=(2, 3), keepdims=True)
        elif method == "add_flatten":
            h = h.reshape(h.shape[0], -1, 1, 1)
        elif method == "add_dense":
            flat = h.reshape(h.shape[0], -1)
            w = theta[:c_out * flat.shape[1]].reshape(c_out, flat.shape[1])
            h = (flat @ w.T + theta[c_out * flat.shape[1]:]).reshape(h.shape[0], -1, 1, 1)
        outs.append(h)
    return h.reshape(h.shape[0], -1)


class ImageLayers(unittest.TestCase):
    def setUp(self):
        self.x = rng.normal(size=(5,) + SHAPE).astype(np.float32)
        self.labels = np.array([0, 1, 2, 1, 0], np.int32)

    def test_shapes_and_kinds(self):
        net = build(SPEC_A)
        self.assertEqual([tuple(l.output_shape) for l in net.layers], OUT_SHAPES_A)
        self.assertEqual([l.kind.name for l in net.layers], KINDS_A)
        self.assertEqual(net.noise_size, 3)
        self.assertEqual(net.output_dim, 3)
        self.assertEqual([l.index for l in net.param_layers], [0, 1, 3, 6, 7, 8, 12])
        conv = net.layer(0)
        self.assertEqual(conv.shape, (72, 144, 2))
        self.assertEqual(conv.param_count, 4 * 2 * 9 + 4)
        self.assertEqual(conv.weight.shape, (4, 18))
        self.assertEqual(conv.factor.shape, (76, 2))
        self.assertEqual(net.layer(8).weight.shape, (6, 4))     # projection
        self.assertEqual(net.layer(8).param_count, 6 * 4 + 6)
        np.testing.assert_array_equal(net.layer(1).mean, [1, 1, 1, 1, 0, 0, 0, 0])
        for i in (2, 4, 5, 10, 11):
            self.assertEqual(net.layer(i).param_count, 0)
            with self.assertRaises(ibvi.InvalidArgument):
                net.layer(i).mean
        self.assertIn("conv2d[4x6x6](R=2)", repr(net))
        self.assertIn("maxpool[4x3x3]", repr(net.layer(5)))

    def test_forward_matches_numpy(self):
        for spec in (SPEC_A, SPEC_B):
            with self.subTest(spec=len(spec)):
                net = build(spec)
                # train a few steps so gamma, beta and the biases are not at init
                opt = net.optimizer("sgd", 0.05)
                labels = self.labels % net.output_dim
                for _ in range(3):
                    opt.train_step(self.x, labels=labels, samples=2)
                np.testing.assert_allclose(net.forward_mean(self.x),
                                           reference(net, spec, self.x),
                                           rtol=2e-4, atol=2e-5)
                z = rng.normal(size=(2, net.noise_size)).astype(np.float32)
                got = net.forward_noise(self.x, z).reshape(2, 5, -1)
                for m in range(2):
                    np.testing.assert_allclose(got[m], reference(net, spec, self.x, z[m]),
                                               rtol=2e-4, atol=2e-5)

    def test_nchw_and_flat_train_identically(self):
        a, b = build(SPEC_A), build(SPEC_A)
        oa, ob = a.optimizer("adam", 1e-3), b.optimizer("adam", 1e-3)
        flat = self.x.reshape(5, -1).copy()
        for _ in range(3):
            self.assertEqual(oa.train_step(self.x, labels=self.labels, samples=2),
                             ob.train_step(flat, labels=self.labels, samples=2))
        for la, lb in zip(a.param_layers, b.param_layers):
            np.testing.assert_array_equal(la.mean, lb.mean)
        with a.predictor(4, 1) as pa, b.predictor(4, 1) as pb:
            np.testing.assert_array_equal(pa.run(self.x).probs, pb.run(flat).probs)

    def test_like_copies_layers_not_parameters(self):
        net = build(SPEC_A)
        like = net.like()
        self.assertFalse(like.initialized)
        self.assertEqual([l.kind for l in like.layers], [l.kind for l in net.layers])
        self.assertEqual([tuple(l.output_shape) for l in like.layers], OUT_SHAPES_A)
        self.assertEqual(like.noise_size, 0)          # every layer deterministic
        like.init("mup", 3)
        for la, lb in zip(like.param_layers, net.param_layers):
            la.mean = lb.mean
        np.testing.assert_array_equal(like.forward_mean(self.x), net.forward_mean(self.x))

    def test_save_load_image_network(self):
        net = build(SPEC_A)
        opt = net.optimizer("sgd", 0.05)
        opt.train_step(self.x, labels=self.labels)
        loaded, lopt = ibvi.Net.from_bytes_with_optimizer(net.to_bytes(opt))
        self.assertEqual(loaded.input_shape, SHAPE)
        self.assertEqual([tuple(l.output_shape) for l in loaded.layers], OUT_SHAPES_A)
        self.assertEqual([l.kind for l in loaded.layers], [l.kind for l in net.layers])
        np.testing.assert_array_equal(loaded.forward_mean(self.x), net.forward_mean(self.x))
        self.assertEqual(lopt.train_step(self.x, labels=self.labels),
                         opt.train_step(self.x, labels=self.labels))

    def test_layers_without_bias(self):
        """bias=False: theta is the weights alone (has_bias False, an empty
        bias, the factor without bias rows); it saves and loads and equals
        the same network whose biases are held at 0."""
        def make(bias):
            net = ibvi.Net.image(*SHAPE)
            (net.add_conv2d(4, 3, padding=1, rank=2, bias=bias)
             .add_groupnorm(2, 1e-3).add_activation("relu")
             .add_residual(-1, 1, bias=bias).add_global_avgpool().add_dense(3))
            net.init("mup", 5)
            return net
        bare, full = make(False), make(True)
        conv, proj = bare.layer(0), bare.layer(3)
        self.assertFalse(conv.has_bias)
        self.assertFalse(proj.has_bias)
        self.assertTrue(full.layer(0).has_bias)
        self.assertTrue(bare.layer(5).has_bias)
        self.assertEqual(conv.param_count, 4 * SHAPE[0] * 9)
        self.assertEqual(conv.factor.shape, (4 * SHAPE[0] * 9, 2))
        self.assertEqual(conv.weight.shape, (4, SHAPE[0] * 9))
        self.assertEqual(conv.bias.size, 0)
        self.assertEqual(proj.param_count, 4 * SHAPE[0])
        for i in (0, 3, 5):
            a, b = full.layer(i), bare.layer(i)
            theta = np.zeros(a.param_count, np.float32)
            theta[:b.param_count] = b.get_mean()
            a.set_mean(theta)
            if b.rank:
                s = np.zeros((a.param_count, a.rank), np.float32)
                s[:b.param_count] = b.get_factor()
                a.set_factor(s)
        z = rng.normal(size=(1, bare.noise_size)).astype(np.float32)
        np.testing.assert_array_equal(full.forward_noise(self.x, z),
                                      bare.forward_noise(self.x, z))
        loaded = ibvi.Net.from_bytes(bare.to_bytes())
        self.assertFalse(loaded.layer(0).has_bias)
        np.testing.assert_array_equal(loaded.forward_mean(self.x),
                                      bare.forward_mean(self.x))

    def test_builder_argument_checks(self):
        """Every new method: arguments that are not ints (floats, bools,
        strings, out of int32) raise InvalidArgument before the library is
        called; values the library refuses raise with its message."""
        def fresh():
            return ibvi.Net.image(2, 6, 6)
        bad_ints = (1.0, True, "3", None, 2**31, -2**31 - 1)
        calls = {
            "add_conv2d": [lambda n, v: n.add_conv2d(v, 3),
                           lambda n, v: n.add_conv2d(4, v),
                           lambda n, v: n.add_conv2d(4, 3, stride=v),
                           lambda n, v: n.add_conv2d(4, 3, padding=v),
                           lambda n, v: n.add_conv2d(4, 3, rank=v),
                           lambda n, v: n.add_conv2d(4, 3, kernel_w=v),
                           lambda n, v: n.add_conv2d(4, 3, stride_w=v),
                           lambda n, v: n.add_conv2d(4, 3, padding_w=v)],
            "add_maxpool": [lambda n, v: n.add_maxpool(v),
                            lambda n, v: n.add_maxpool(2, v)],
            "add_avgpool": [lambda n, v: n.add_avgpool(v),
                            lambda n, v: n.add_avgpool(2, v)],
            "add_groupnorm": [lambda n, v: n.add_groupnorm(v)],
            "add_residual": [lambda n, v: n.add_residual(v),
                             lambda n, v: n.add_residual(-1, v)],
        }
        for name, fns in calls.items():
            for fn in fns:
                for v in bad_ints:
                    if v is None and name in ("add_conv2d", "add_maxpool",
                                              "add_avgpool"):
                        continue  # None means "the default" for the optional ones
                    net = fresh()
                    with self.assertRaises(ibvi.InvalidArgument, msg=(name, v)) as cm:
                        fn(net, v)
                    self.assertTrue(cm.exception.message.startswith("Net." + name),
                                    cm.exception.message)
                    self.assertEqual(net.layer_count, 0)
        for v in ("x", None, float("nan"), object()):
            with self.assertRaises(ibvi.InvalidArgument):
                fresh().add_groupnorm(2, eps=v)
        # the library's own checks, under the C function's name
        refused = [
            (lambda n: n.add_conv2d(0, 3), "ibvi_net_add_conv2d_ex"),
            (lambda n: n.add_conv2d(4, 7), "ibvi_net_add_conv2d_ex"),
            (lambda n: n.add_conv2d(4, 3, stride=0), "ibvi_net_add_conv2d_ex"),
            (lambda n: n.add_conv2d(4, 3, padding=3), "ibvi_net_add_conv2d_ex"),
            (lambda n: n.add_conv2d(4, 3, rank=-1), "ibvi_net_add_conv2d_ex"),
            (lambda n: n.add_maxpool(7), "ibvi_net_add_maxpool"),
            (lambda n: n.add_maxpool(2, 0), "ibvi_net_add_maxpool"),
            (lambda n: n.add_avgpool(0), "ibvi_net_add_avgpool"),
            (lambda n: n.add_groupnorm(3), "ibvi_net_add_groupnorm"),
            (lambda n: n.add_groupnorm(0), "ibvi_net_add_groupnorm"),
            (lambda n: n.add_groupnorm(2, eps=0.0), "ibvi_net_add_groupnorm"),
            (lambda n: n.add_groupnorm(2, eps=float("inf")), "ibvi_net_add_groupnorm"),
            (lambda n: n.add_residual(0), "ibvi_net_add_residual"),
            (lambda n: n.add_residual(-2), "ibvi_net_add_residual"),
            (lambda n: n.add_conv2d(4, 3).add_residual(-1), "ibvi_net_add_residual"),
            (lambda n: n.add_conv2d(4, 3).add_residual(-1, -1), "ibvi_net_add_residual"),
        ]
        for fn, cname in refused:
            net = fresh()
            count = net.layer_count
            with self.assertRaises(ibvi.Error) as cm:
                fn(net)
            self.assertIsInstance(cm.exception, (ibvi.InvalidArgument, ibvi.ShapeError))
            self.assertTrue(cm.exception.message.startswith(cname), cm.exception.message)
        # after init nothing can be added
        net = build(SPEC_B)
        for fn in (lambda: net.add_conv2d(2, 1), lambda: net.add_maxpool(1),
                   lambda: net.add_avgpool(1), lambda: net.add_groupnorm(1),
                   lambda: net.add_residual(5), net.add_global_avgpool,
                   net.add_flatten):
            with self.assertRaises(ibvi.StateError):
                fn()
        # a closed network
        net.close()
        with self.assertRaises(ibvi.StateError):
            net.add_flatten()


class ExampleMatchesC(unittest.TestCase):
    """python/examples/mnist_train.py --model lenet5|resnet trains the same
    networks as examples/mnist_train (path in IBVI_MNIST_TRAIN) and reports
    the same numbers: the binding drives the image layers exactly as C does."""

    def test_lenet5_and_resnet(self):
        exe = os.environ.get("IBVI_MNIST_TRAIN")
        if not exe:
            self.skipTest("IBVI_MNIST_TRAIN is not set (examples disabled)")
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        data = os.path.join(root, "data", "fashion")
        if not os.path.exists(os.path.join(data, "t10k-images-idx3-ubyte.gz")):
            data = "/usr/share/datasets/fashion-mnist"
        if not os.path.exists(os.path.join(data, "t10k-images-idx3-ubyte.gz")):
            self.skipTest("no Fashion-MNIST")
        example = os.path.join(root, "python", "examples", "mnist_train.py")
        for model, limit in (("lenet5", 256), ("resnet", 64)):
            options = ["--model", model, "--data", data, "--ood", data,
                       "--train-limit", str(limit), "--validation", str(limit // 4),
                       "--test-limit", "200", "--epochs", "1", "--batch", "32",
                       "--lr", "0.05", "--rank", "2", "--test-samples", "2",
                       "--methods", "standard,temp,ibvi", "--no-corruptions",
                       "--threads", "1", "--no-progress"]
            with self.subTest(model=model), tempfile.TemporaryDirectory() as tmp:
                cj_path, pj_path = os.path.join(tmp, "c.json"), os.path.join(tmp, "p.json")
                c = subprocess.run([exe] + options + ["--json", cj_path],
                                   capture_output=True, text=True)
                self.assertEqual(c.returncode, 0, c.stderr)
                p = subprocess.run([sys.executable, example] + options +
                                   ["--json", pj_path], capture_output=True, text=True)
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(cj_path) as f:
                    cj = json.load(f)
                with open(pj_path) as f:
                    pj = json.load(f)
                self.assertEqual(cj["config"]["model"], model)
                self.assertEqual(pj["config"], cj["config"])
                self.assertEqual([m["name"] for m in pj["methods"]],
                                 ["standard", "temp-scaled", "ibvi"])
                for pm, cm in zip(pj["methods"], cj["methods"]):
                    for key in ("accuracy", "nll", "ece", "brier", "ood_auroc",
                                "temperature"):
                        self.assertAlmostEqual(pm[key], cm[key], places=6,
                                               msg=(model, pm["name"], key))


if __name__ == "__main__":
    unittest.main()

"""The ibvi package covers the whole C API, with the right prototypes, and
each wrapper does what the header says.

IBVI_SOURCE_ROOT (set by meson) locates include/ibvi/ for the prototype
check; it defaults to the source tree this file is in.
"""
import ctypes
import math
import os
import re
import subprocess
import sys
import tempfile
import unittest
import weakref

import numpy as np

import ibvi
from ibvi import _lib

ROOT = os.environ.get("IBVI_SOURCE_ROOT",
                      os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "..", ".."))
INCLUDE = os.path.join(ROOT, "include", "ibvi")


def header_prototypes():
    """{name: (return type, [parameter types])} of every IBVI_API function."""
    protos = {}
    for fname in sorted(os.listdir(INCLUDE)):
        if not fname.endswith(".h"):
            continue
        with open(os.path.join(INCLUDE, fname)) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        for m in re.finditer(r"IBVI_API\s+([^;]*?)\b(ibvi_\w+)\s*\(([^)]*)\)\s*;", text):
            ret, name, params = m.group(1), m.group(2), m.group(3)
            params = [p.strip() for p in params.split(",")]
            if params == ["void"]:
                params = []
            # drop parameter names: the last identifier after the type
            types = [re.sub(r"\b\w+$", "", p).strip() or p for p in params]
            protos[name] = (ret.strip(), types)
    return protos


def ctype_of(c):
    """The ctypes type the binding must use for a C type string."""
    c = " ".join(c.replace("*", " * ").split())
    stars = c.count("*")
    base = " ".join(w for w in c.replace("*", " ").split() if w != "const")
    scalars = {"int": ctypes.c_int, "int32_t": ctypes.c_int32,
               "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
               "uint8_t": ctypes.c_uint8, "float": ctypes.c_float,
               "double": ctypes.c_double, "size_t": ctypes.c_size_t}
    if stars == 0:
        return None if base == "void" else scalars[base]
    if base == "char" and stars == 1:
        return ctypes.c_char_p
    if base == "ibvi_allocator" and stars == 1:
        return ctypes.POINTER(_lib.ibvi_allocator)
    if base.startswith("ibvi_"):  # opaque handles
        return ctypes.c_void_p if stars == 1 else ctypes.POINTER(ctypes.c_void_p)
    assert stars == 1, c
    return ctypes.POINTER(scalars[base])


class Prototypes(unittest.TestCase):
    def test_every_header_function_is_declared_exactly(self):
        protos = header_prototypes()
        self.assertGreater(len(protos), 80)
        self.assertEqual(sorted(protos), sorted(_lib.PROTOTYPES),
                         "the binding and the headers list different functions")
        marker = {_lib.STATUS: ctypes.c_int, _lib.VALUE32: ctypes.c_int32,
                  _lib.VALUE64: ctypes.c_int64}
        for name, (ret, params) in protos.items():
            with self.subTest(function=name):
                restype, argtypes = _lib.PROTOTYPES[name]
                self.assertEqual(marker.get(restype, restype), ctype_of(ret))
                self.assertEqual(argtypes, [ctype_of(p) for p in params])
                fn = getattr(_lib.lib, name)
                self.assertEqual(fn.argtypes, argtypes)
                self.assertIsNotNone(fn.restype if ret != "void" else 0)
                if isinstance(restype, str):  # a status or value: errcheck
                    self.assertIsNotNone(fn.errcheck)
                    self.assertTrue(ret in ("int", "int32_t", "int64_t"))

    def test_pointer_returns_are_not_int(self):
        for name, (restype, _) in _lib.PROTOTYPES.items():
            fn = getattr(_lib.lib, name)
            if restype is ctypes.c_char_p:
                self.assertIs(fn.restype, ctypes.c_char_p)

    def test_exported_symbols_all_wrapped(self):
        try:
            nm = subprocess.run(["nm", "-D", "--defined-only", _lib.path],
                                capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            self.skipTest("nm not available")
        exported = {l.split()[-1] for l in nm.splitlines() if " ibvi_" in l}
        self.assertEqual(exported - set(_lib.PROTOTYPES), set())


class Kernel(unittest.TestCase):
    def test_kernel_queries(self):
        name = ibvi.kernel_name()
        self.assertTrue(name)
        self.assertIn(ibvi.kernel_origin(), ibvi.KERNEL_ORIGINS)
        self.assertTrue(ibvi.kernel_description().startswith(name + " ("))
        # The selection leaves the environment as it found it.
        if "BLIS_ARCH_TYPE" not in os.environ:
            self.assertIsNone(os.getenv("BLIS_ARCH_TYPE"))
            self.assertNotEqual(ibvi.kernel_origin(), "user")


class Versions(unittest.TestCase):
    def test_versions(self):
        n = ibvi.version_number()
        self.assertEqual(n // 10000, _lib.EXPECTED_MAJOR)
        self.assertEqual(ibvi.version(), "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100))
        self.assertEqual(ibvi.version(), ibvi.__version__)

    def test_header_constants(self):
        """Every #define IBVI_X constant of the headers has its ibvi.X twin."""
        found = {}
        for fname in os.listdir(INCLUDE):
            with open(os.path.join(INCLUDE, fname)) as f:
                for m in re.finditer(r"^#define IBVI_(\w+) +([0-9.]+)f?$", f.read(), re.M):
                    found[m.group(1)] = float(m.group(2))
        self.assertIn("MAX_SAMPLES", found)
        for name, value in found.items():
            with self.subTest(constant=name):
                self.assertAlmostEqual(getattr(ibvi, name), value, places=6)
        self.assertEqual(ibvi.version_number(), ibvi.VERSION_MAJOR * 10000
                         + ibvi.VERSION_MINOR * 100 + ibvi.VERSION_PATCH)

    def test_status_strings_pinned(self):
        self.assertEqual([int(s) for s in ibvi.Status], list(range(0, -11, -1)))
        self.assertEqual(ibvi.status_string(ibvi.Status.SHAPE), "shape mismatch")
        self.assertEqual(ibvi.status_string(-1000), "unknown status")
        for s in ibvi.Status:
            if s != 0:
                self.assertTrue(issubclass(ibvi.error_class(s), ibvi.Error))

    def test_library_search(self):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(ibvi.__file__)))
        code = "import ibvi; print(ibvi.library_path)"
        env["IBVI_LIBRARY"] = "/nonexistent/libibvi.so.0"
        r = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("IBVI_LIBRARY=/nonexistent/libibvi.so.0 cannot be loaded", r.stderr)
        del env["IBVI_LIBRARY"]
        env["IBVI_BUILD_DIR"] = os.path.dirname(os.path.dirname(os.path.realpath(_lib.path)))
        r = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True)
        if os.path.basename(_lib.path) == "libibvi.so.0":
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(os.path.realpath(r.stdout.strip()),
                             os.path.realpath(os.path.join(env["IBVI_BUILD_DIR"],
                                                           "lib", "libibvi.so.0")))

    def test_version_mismatch_refused(self):
        cc = next((c for c in ("cc", "gcc", "clang") if any(
            os.access(os.path.join(d, c), os.X_OK)
            for d in os.environ.get("PATH", "").split(os.pathsep))), None)
        if cc is None:
            self.skipTest("no C compiler")
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "fake.c")
            so = os.path.join(tmp, "libibvi.so.1")
            with open(src, "w") as f:
                f.write("int ibvi_version_number(void) { return 10203; }\n")
            subprocess.run([cc, "-shared", "-fPIC", "-o", so, src], check=True)
            env = dict(os.environ, IBVI_LIBRARY=so,
                       PYTHONPATH=os.path.dirname(os.path.dirname(ibvi.__file__)))
            r = subprocess.run([sys.executable, "-c", "import ibvi"], env=env,
                               capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("ImportError", r.stderr)
            self.assertIn("is version 1.2.3; this package needs 0.x", r.stderr)


def mlp(rank=2, seed=3, param="mup", hidden=(8,)):
    net = ibvi.Net(5)
    for i, w in enumerate(hidden):
        net.add_dense(w, rank if i == 0 else 0).add_activation("relu")
    return net.add_dense(3, rank).init(param, seed)


class NetAndLayers(unittest.TestCase):
    def test_building_and_queries(self):
        net = ibvi.Net(5)
        self.assertFalse(net.initialized)
        net.add_dense(8, 2).add_activation(ibvi.Activation.TANH).add_dense(4, 0)
        net.add_activation("silu").add_dense(3, 1)
        self.assertEqual(net.output_dim, 3)
        with self.assertRaises(ibvi.StateError):
            net.parameterization
        net.init(ibvi.Param.SP, seed=11)
        self.assertTrue(net.initialized)
        self.assertEqual((net.input_dim, net.output_dim, net.layer_count, len(net)),
                         (5, 3, 5, 5))
        self.assertIs(net.parameterization, ibvi.Param.SP)
        self.assertEqual(net.noise_size, 3)
        p0, p2, p4 = 8 * 5 + 8, 4 * 8 + 4, 3 * 4 + 3
        self.assertEqual(net.param_count, p0 * 3 + p2 + p4 * 2)
        self.assertEqual(net.seed, 11)
        self.assertEqual(net.rng_position, 0)
        net.threads = 2
        self.assertEqual(net.threads, 2)
        net.set_threads(1)
        self.assertEqual(net.threads, 1)
        net.reserve(64, 4)
        kinds = [l.kind for l in net.layers]
        self.assertEqual(kinds, [ibvi.LayerKind.DENSE, ibvi.LayerKind.ACTIVATION] * 2
                         + [ibvi.LayerKind.DENSE])
        roles = [l.role for l in net.layers]
        self.assertEqual(roles, [ibvi.Role.INPUT, ibvi.Role.NONE, ibvi.Role.HIDDEN,
                                 ibvi.Role.NONE, ibvi.Role.OUTPUT])
        self.assertEqual(net.layer(1).activation, ibvi.Activation.TANH)
        self.assertIsNone(net.layer(0).activation)
        self.assertEqual(net.layer(-1).shape, (4, 3, 1))
        self.assertEqual(net.layer(0).shape, ibvi.LayerShape(5, 8, 2))
        self.assertEqual(net.layer(0).param_count, p0)
        self.assertEqual(net.layer(1).param_count, 0)
        self.assertEqual(len(net.dense_layers), 3)
        self.assertIn("5-8(R=2)-tanh-4-silu-3(R=1)", repr(net))
        with self.assertRaises(ibvi.InvalidArgument):
            net.layer(5)
        with self.assertRaises(ibvi.InvalidArgument):
            net.add_activation("softplus")
        net.close()

    def test_init_std_and_lr_multipliers_follow_the_spec_table(self):
        net = mlp(rank=2, hidden=(16, 32))
        inp, hid, out = net.layer(0), net.layer(2), net.layer(4)
        self.assertAlmostEqual(inp.init_std[0], 1 / math.sqrt(5), places=6)
        self.assertAlmostEqual(hid.init_std[0], 1 / math.sqrt(16), places=6)
        self.assertAlmostEqual(out.init_std[0], 1 / 32, places=6)
        self.assertEqual(out.init_std[1], 1.0)
        self.assertEqual(inp.lr_multipliers("sgd"), (16.0, 16.0))
        self.assertEqual(hid.lr_multipliers(ibvi.OptimizerKind.SGD), (1.0, 32.0))
        self.assertAlmostEqual(out.lr_multipliers("sgd")[0], 1 / 32)
        self.assertEqual(out.lr_multipliers("sgd")[1], 3.0)
        self.assertAlmostEqual(hid.lr_multipliers("adam")[0], 1 / 16)
        sp = mlp(param="sp")
        self.assertEqual(sp.layer(2).lr_multipliers("adam"), (1.0, 1.0))

    def test_mean_factor_roundtrip_and_layout(self):
        net = mlp()
        layer = net.layer(0)
        theta = layer.mean
        self.assertEqual(theta.shape, (layer.param_count,))
        self.assertEqual(theta.dtype, np.float32)
        np.testing.assert_array_equal(layer.weight, theta[:40].reshape(8, 5))
        np.testing.assert_array_equal(layer.bias, theta[40:])
        new = np.arange(theta.size, dtype=np.float64) / 100  # converted to float32
        layer.mean = new
        np.testing.assert_array_equal(layer.get_mean(), new.astype(np.float32))
        s = np.linspace(-1, 1, layer.param_count * 2, dtype=np.float32).reshape(-1, 2)
        layer.set_factor(s)
        np.testing.assert_array_equal(layer.factor, s)
        out = np.empty((layer.param_count, 2), np.float32)
        self.assertIs(layer.get_factor(out=out), out)
        np.testing.assert_array_equal(layer.grad_mean, 0)
        # forward: y = x W^T + b with z = 0
        x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
        single = ibvi.Net(5).add_dense(3, 1).init("sp", 1)
        l0 = single.layer(0)
        expect = x @ l0.weight.T + l0.bias
        np.testing.assert_allclose(single.forward_mean(x), expect, rtol=1e-5, atol=1e-6)
        with self.assertRaises(ibvi.ShapeError):
            layer.set_mean(new[:-1])
        det = mlp(hidden=(8, 16)).layer(2)
        self.assertEqual(det.rank, 0)
        with self.assertRaises(ibvi.InvalidArgument):
            det.get_factor()  # deterministic layer

    def test_forward_noise_and_last_noise_reproduce_forward(self):
        net = mlp(rank=3)
        x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
        y = net.forward(x, samples=4)
        self.assertEqual(y.shape, (24, 3))
        z = net.last_noise()
        self.assertEqual(z.shape, (4, net.noise_size))
        np.testing.assert_array_equal(net.forward_noise(x, z), y)
        np.testing.assert_array_equal(net.forward_noise(x, z.ravel()), y)
        np.testing.assert_array_equal(net.forward_noise(x, np.zeros((1, 6))),
                                      net.forward_mean(x))
        self.assertGreater(net.rng_position, 0)
        net.rng_position = 0
        np.testing.assert_array_equal(net.forward(x, samples=4), y)
        # the noise of a training step stays readable after the update
        opt = ibvi.Optimizer(net, "sgd", 0.01)
        position = net.rng_position
        opt.train_step(x, labels=np.arange(6) % 3, samples=2)
        z2 = net.last_noise()
        self.assertEqual(z2.shape, (2, net.noise_size))
        net.rng_position = position
        net.forward(x, samples=2)
        np.testing.assert_array_equal(net.last_noise(), z2)
        net.forward_mean(x)
        np.testing.assert_array_equal(net.last_noise(), 0)  # zeros after forward_mean
        with self.assertRaises(ibvi.InvalidArgument):
            net.forward(x, samples=ibvi.MAX_SAMPLES + 1)

    def test_backward_matches_finite_differences(self):
        net = ibvi.Net(4).add_dense(6, 2).add_activation("tanh").add_dense(2, 2).init("sp", 5)
        x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
        t = np.random.default_rng(3).normal(size=(3, 2)).astype(np.float32)
        z = np.random.default_rng(4).normal(size=(1, net.noise_size)).astype(np.float32)
        out = net.forward_noise(x, z)
        loss, grad = ibvi.loss_squared(out, t)
        net.backward(grad)
        layer = net.layer(2)
        g = layer.grad_mean
        theta = layer.mean.astype(np.float64)
        for k in (0, 5, theta.size - 1):
            h = 1e-2
            vals = []
            for sign in (1, -1):
                tt = theta.copy()
                tt[k] += sign * h
                layer.mean = tt
                vals.append(ibvi.loss_squared(net.forward_noise(x, z), t, grad=False).loss)
            layer.mean = theta
            self.assertAlmostEqual(g[k], (vals[0] - vals[1]) / (2 * h), delta=2e-3)
        gs = layer.grad_factor
        self.assertEqual(gs.shape, (layer.param_count, 2))
        np.testing.assert_allclose(gs, np.outer(g, z[0, -2:]), rtol=1e-5, atol=1e-6)


class Losses(unittest.TestCase):
    def test_losses_against_numpy(self):
        rng = np.random.default_rng(7)
        logits = rng.normal(size=(6, 4)).astype(np.float32)
        labels = np.array([0, 3, 1], np.int64)  # rows = 2 n, converted
        loss, grad = ibvi.loss_softmax_xent(logits, labels)
        l64 = logits.astype(np.float64)
        p = np.exp(l64 - l64.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = np.tile(labels, 2)
        self.assertAlmostEqual(loss, -np.mean(np.log(p[np.arange(6), y])), places=5)
        onehot = np.eye(4)[y]
        np.testing.assert_allclose(grad, (p - onehot) / 6, atol=1e-6)
        t = rng.normal(size=(3, 4)).astype(np.float32)
        loss, grad = ibvi.loss_squared(logits, t)
        tt = np.tile(t, (2, 1))
        self.assertAlmostEqual(loss, np.mean(np.sum((l64 - tt) ** 2, 1)), places=4)
        np.testing.assert_allclose(grad, 2 * (logits - tt) / 6, rtol=1e-5, atol=1e-6)
        tb = rng.uniform(size=(3, 4)).astype(np.float32)
        loss, _ = ibvi.loss_binary_xent(logits, tb, grad=False)
        ref = np.mean(np.sum(np.log1p(np.exp(l64)) - np.tile(tb, (2, 1)) * l64, 1))
        self.assertAlmostEqual(loss, ref, places=5)
        for kind, kw in ((ibvi.LossKind.SOFTMAX_XENT, {"labels": labels}),
                         ("squared", {"targets": t}), ("binary_xent", {"targets": tb})):
            r = ibvi.loss(kind, logits, **kw)
            self.assertIsInstance(r, ibvi.LossResult)
            self.assertEqual(r.grad.shape, logits.shape)
        # one output column: 1-D targets are accepted
        self.assertEqual(ibvi.loss_squared(np.ones((2, 1)), np.ones(2)).loss, 0.0)

    def test_nonfinite_loss_carries_value(self):
        logits = np.array([[np.inf, 0.0]], np.float32)
        with self.assertRaises(ibvi.NonFiniteError) as cm:
            ibvi.loss_squared(logits, np.zeros((1, 2)))
        self.assertTrue(math.isinf(cm.exception.loss) or math.isnan(cm.exception.loss))


class OptimizersAndTraining(unittest.TestCase):
    def test_sgd_step_by_hand(self):
        net = ibvi.Net(3).add_dense(2, 0).init("sp", 1)
        opt = ibvi.Optimizer(net, "sgd", lr=0.5)
        self.assertIs(opt.kind, ibvi.OptimizerKind.SGD)
        self.assertIs(opt.net, net)
        self.assertEqual(opt.lr, 0.5)
        with self.assertRaises(ibvi.StateError):
            opt.step()  # no backward yet
        x = np.ones((1, 3), np.float32)
        theta0 = net.layer(0).mean
        out = net.forward(x)
        net.backward(np.ones_like(out))
        opt.step()
        np.testing.assert_allclose(net.layer(0).mean,
                                   theta0 - 0.5 * net.layer(0).grad_mean, rtol=1e-6)
        self.assertEqual(opt.step_count, 1)
        opt.reset()
        self.assertEqual(opt.step_count, 0)
        opt.set_lr(0.25)
        self.assertEqual(opt.get_lr(), 0.25)
        opt.set_momentum(0.9, nesterov=True)
        with self.assertRaises(ibvi.InvalidArgument):
            opt.set_adam(0.9, 0.999, 1e-8)  # SGD only takes momentum
        with self.assertRaises(ibvi.InvalidArgument):
            opt.set_momentum(1.5)
        with self.assertRaises(TypeError):
            ibvi.Optimizer(net, "sgd", 0.1, beta1=0.5)
        adam = ibvi.Optimizer.adam(net, 1e-3)
        self.assertIs(adam.kind, ibvi.OptimizerKind.ADAM)
        with self.assertRaises(ibvi.InvalidArgument):
            adam.set_momentum(0.5)

    def test_train_step_classification_learns(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
        net = mlp(rank=2, hidden=(32,))
        opt = net.optimizer("sgd", lr=0.05, momentum=0.9)
        first = opt.train_step(x, labels=y)
        for _ in range(200):
            last = ibvi.train_step(net, opt, x, labels=y, samples=1)
        self.assertLess(last, first / 3)
        pred = net.predictor(samples=16, seed=1)
        acc = np.mean(pred.predict_proba(x).argmax(1) == y)
        self.assertGreater(acc, 0.9)

    def test_train_step_binary_and_shapes(self):
        net = ibvi.Net(2).add_dense(3, 1).init("sp", 1)
        opt = ibvi.Optimizer(net, "adam", 0.01)
        x = np.zeros((4, 2), np.float32)
        t = np.full((4, 3), 0.5, np.float32)
        loss = opt.train_step(x, targets=t, loss="binary_xent")
        self.assertTrue(math.isfinite(loss))
        with self.assertRaises(ibvi.ShapeError):
            opt.train_step(x, targets=t[:3])
        with self.assertRaises(ibvi.ShapeError):
            opt.train_step(x[:, :1], targets=t)
        with self.assertRaises(ibvi.InvalidArgument):
            opt.train_step(x)
        with self.assertRaises(ibvi.InvalidArgument):
            opt.train_step(x, labels=np.zeros(4, np.float32))  # float labels


class PredictorTests(unittest.TestCase):
    def test_predictor_matches_forward_noise(self):
        net = mlp(rank=3)
        x = np.random.default_rng(5).normal(size=(7, 5)).astype(np.float32)
        pred = ibvi.Predictor(net, samples=6, seed=9)
        self.assertEqual(pred.samples, 6)
        self.assertEqual(pred.nets, (net,))
        p = pred.run(x)
        z = pred.noise()
        self.assertEqual(z.shape, (1, 6, net.noise_size))
        logits = net.forward_noise(x, z[0]).astype(np.float64).reshape(6, 7, 3)
        sm = np.exp(logits - logits.max(-1, keepdims=True))
        sm /= sm.sum(-1, keepdims=True)
        np.testing.assert_allclose(p.probs, sm.mean(0), atol=2e-6)
        h = lambda q: -np.sum(np.where(q > 0, q * np.log(np.maximum(q, 1e-300)), 0), -1)
        np.testing.assert_allclose(p.predictive_entropy, h(sm.mean(0)), atol=1e-5)
        np.testing.assert_allclose(p.expected_entropy, h(sm).mean(0), atol=1e-5)
        np.testing.assert_allclose(p.mutual_information,
                                   np.maximum(h(sm.mean(0)) - h(sm).mean(0), 0), atol=1e-5)
        # same predictor, same result; chunking does not matter
        pred.set_batch_size(2)
        np.testing.assert_allclose(pred.run(x).probs, p.probs, atol=1e-7)
        out = np.empty((7, 3), np.float32)
        self.assertIs(pred.predict_proba(x, out=out), out)
        r = pred.run(x, uncertainty=False)
        self.assertIsNone(r.predictive_entropy)
        pred.set_mean_network(True)
        self.assertEqual(pred.samples, 1)
        self.assertEqual(pred.noise().shape, (1, 6, net.noise_size))
        lm = net.forward_mean(x).astype(np.float64)
        pm = np.exp(lm - lm.max(1, keepdims=True))
        np.testing.assert_allclose(pred.predict_proba(x), pm / pm.sum(1, keepdims=True),
                                   atol=2e-6)
        pred.set_temperature(2.0)
        pm = np.exp((lm - lm.max(1, keepdims=True)) / 2)
        np.testing.assert_allclose(pred.predict_proba(x), pm / pm.sum(1, keepdims=True),
                                   atol=2e-6)
        with self.assertRaises(ibvi.InvalidArgument):
            pred.set_temperature(0)
        with self.assertRaises(ibvi.ShapeError):
            pred.run(x[:, :4])

    def test_ensemble(self):
        nets = [ibvi.Net(5).add_dense(3).init("sp", s) for s in range(3)]
        x = np.random.default_rng(6).normal(size=(4, 5)).astype(np.float32)
        ens = ibvi.Predictor.ensemble(nets, samples=1, seed=0)
        self.assertEqual(len(ens.nets), 3)
        ps = [ibvi.Predictor(n).predict_proba(x) for n in nets]
        np.testing.assert_allclose(ens.predict_proba(x), np.mean(ps, 0), atol=1e-6)
        other = ibvi.Net(5).add_dense(4).init("sp", 0)
        with self.assertRaises(ibvi.Error):
            ibvi.Predictor([nets[0], other])
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Predictor([])
        nets[1].close()  # closes the ensemble predictor first
        self.assertTrue(ens.closed)
        with self.assertRaises(ibvi.StateError):
            ens.run(x)


class MetricsTests(unittest.TestCase):
    def test_metrics_against_numpy(self):
        rng = np.random.default_rng(8)
        logits = rng.normal(size=(500, 5)) * 2
        p = np.exp(logits)
        p = (p / p.sum(1, keepdims=True)).astype(np.float32)
        y = rng.integers(0, 5, 500).astype(np.int32)
        m = ibvi.Metrics(5)
        self.assertEqual(m.count, 0)
        with self.assertRaises(ibvi.StateError):
            m.accuracy
        m.add(p[:123], y[:123])
        m2 = ibvi.Metrics(5)
        m2.add(p[123:], y[123:])
        m.merge(m2)
        whole = ibvi.Metrics(5)
        whole.add(p, y)
        self.assertEqual(m.summary(), whole.summary())  # exact sums
        self.assertEqual(len(m), 500)
        pd = p.astype(np.float64)
        self.assertAlmostEqual(m.accuracy, np.mean(pd.argmax(1) == y))
        self.assertAlmostEqual(m.nll, np.mean(-np.log(np.maximum(pd[np.arange(500), y], 1e-12))), places=9)
        self.assertAlmostEqual(m.brier, np.mean(np.sum((pd - np.eye(5)[y]) ** 2, 1)), places=9)
        conf = pd.max(1)
        correct = pd.argmax(1) == y
        b = np.minimum((p.max(1).astype(np.float64) * 15).astype(int), 14)
        ece, mce = 0.0, 0.0
        for k in range(15):
            sel = b == k
            if sel.any():
                gap = abs(correct[sel].mean() - conf[sel].mean())
                ece += sel.mean() * gap
                mce = max(mce, gap)
        self.assertAlmostEqual(m.ece, ece, places=9)
        self.assertAlmostEqual(m.mce, mce, places=9)
        bins = m.bins()
        np.testing.assert_array_equal(bins.counts, np.bincount(b, minlength=15))
        self.assertEqual(bins.accuracy.dtype, np.float64)
        m.reset()
        self.assertEqual(m.count, 0)
        with self.assertRaises(ibvi.ShapeError):
            m.merge(ibvi.Metrics(4))
        with self.assertRaises(ibvi.InvalidArgument):
            m.add(p[:2], np.array([0, 7]))  # label out of range: the C check
        with self.assertRaises(ibvi.ShapeError):
            m.add(p[:2], y[:3])

    def test_auroc_and_entropy(self):
        self.assertEqual(ibvi.auroc([0.1, 0.2], [0.3, 0.4]), 1.0)
        self.assertEqual(ibvi.auroc([0.5, 0.5], [0.5]), 0.5)
        rng = np.random.default_rng(9)
        a, b = rng.normal(size=50), rng.normal(size=70) + 0.5
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        ref = np.mean((b32[None, :] > a32[:, None]) + 0.5 * (b32[None, :] == a32[:, None]))
        self.assertAlmostEqual(ibvi.auroc(a, b), ref, places=12)
        p = np.array([[0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0]], np.float32)
        np.testing.assert_allclose(ibvi.entropy(p), [math.log(4), 0], atol=1e-7)
        with self.assertRaises(ibvi.NonFiniteError):
            ibvi.auroc([np.nan], [1.0])

    def test_temperature(self):
        rng = np.random.default_rng(10)
        logits = (rng.normal(size=(300, 4)) * 4).astype(np.float32)
        # labels drawn from softmax(logits / 2): the best temperature is near 2
        q = np.exp(logits / 2.0)
        q /= q.sum(1, keepdims=True)
        y = np.array([rng.choice(4, p=row) for row in q], np.int32)
        t = ibvi.temperature_fit(logits, y)
        self.assertTrue(ibvi.TEMPERATURE_MIN <= t <= ibvi.TEMPERATURE_MAX)
        l64 = logits.astype(np.float64)

        def nll(T):
            z = l64 / T
            z = z - z.max(1, keepdims=True)
            return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(300), y])
        self.assertLessEqual(nll(t), nll(t * 1.01) + 1e-12)
        self.assertLessEqual(nll(t), nll(t / 1.01) + 1e-12)
        probs = ibvi.temperature_apply(logits, t)
        z = l64 / np.float32(t)
        ref = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(probs, ref / ref.sum(1, keepdims=True), atol=1e-6)
        inplace = logits.copy()
        self.assertIs(ibvi.temperature_apply(inplace, t, out=inplace), inplace)
        np.testing.assert_array_equal(inplace, probs)
        self.assertGreater(t, 1.2)
        self.assertLess(t, 3.5)
        buf = np.zeros((301, 4), np.float32)
        buf[:300] = logits
        with self.assertRaises(ibvi.InvalidArgument):  # partial overlap
            ibvi.temperature_apply(buf[:300], t, out=buf[1:])


class Ownership(unittest.TestCase):
    def test_context_managers_and_closed_handles(self):
        with ibvi.Net(3) as net:
            net.add_dense(2, 1).init("sp", 0)
            layer = net.layer(0)
            with net.optimizer("sgd", 0.1) as opt:
                pass
            self.assertTrue(opt.closed)
            opt2 = ibvi.Optimizer(net, "sgd", 0.1)
            pred = ibvi.Predictor(net, 2, 0)
        self.assertTrue(net.closed)
        self.assertTrue(opt2.closed and pred.closed)  # closed with the network
        for call in (lambda: net.forward(np.zeros((1, 3))), lambda: layer.mean,
                     opt2.step, lambda: pred.run(np.zeros((1, 3))),
                     lambda: net.input_dim):
            with self.assertRaises(ibvi.StateError) as cm:
                call()
            self.assertIn("closed", str(cm.exception))
        net.close()  # idempotent
        opt2.close()
        self.assertIn("closed", repr(net) + repr(opt2) + repr(pred))

    def test_dependents_keep_the_network_alive(self):
        net = ibvi.Net(3).add_dense(2, 1).init("sp", 0)
        ref = weakref.ref(net)
        opt = ibvi.Optimizer(net, "sgd", 0.1)
        pred = ibvi.Predictor(net, 2, 0)
        layer = net.layer(0)
        del net
        self.assertIsNotNone(ref())
        opt.train_step(np.ones((2, 3)), targets=np.zeros((2, 2)))
        del opt, pred
        self.assertIsNotNone(ref())  # the layer still holds it
        self.assertEqual(layer.shape, (3, 2, 1))
        del layer
        self.assertIsNone(ref())

    def test_copy_and_pickle(self):
        import copy
        import pickle
        net = mlp()
        for clone in (copy.deepcopy(net), copy.copy(net),
                      pickle.loads(pickle.dumps(net))):
            self.assertIsNot(clone, net)
            self.assertNotEqual(clone._h(), net._h())
            np.testing.assert_array_equal(clone.layer(0).factor, net.layer(0).factor)
            clone.close()
        self.assertFalse(net.closed)
        for handle in (ibvi.Optimizer(net, "sgd", 0.1), ibvi.Predictor(net),
                       ibvi.Metrics(3), net.layer(0)):
            with self.assertRaises(TypeError):
                copy.copy(handle)
            with self.assertRaises(TypeError):
                pickle.dumps(handle)
        with self.assertRaises(TypeError):
            copy.copy(ibvi.Net(3))  # not initialised

    def test_allocator_sees_every_byte(self):
        a = ibvi.CountingAllocator()
        net = ibvi.Net(4, allocator=a).add_dense(8, 2).add_activation("relu")
        net.add_dense(3, 2).init("mup", 1)
        opt = ibvi.Optimizer(net, "adam", 1e-3)
        opt.train_step(np.ones((5, 4)), labels=[0, 1, 2, 0, 1])
        pred = ibvi.Predictor(net, 4, 1)
        pred.run(np.ones((3, 4)))
        m = ibvi.Metrics(3, allocator=a)
        self.assertGreater(a.live, 5)
        blob = net.to_bytes(opt)
        net2, opt2 = ibvi.Net.from_bytes_with_optimizer(blob, allocator=a)
        m.close()
        net.close()  # closes opt and pred first
        net2.close()
        self.assertEqual((a.live, a.live_bytes, a.unknown_frees), (0, 0, 0))
        self.assertEqual(a.allocations, a.frees)

    def test_out_of_memory_is_an_exception_and_leaks_nothing(self):
        a = ibvi.CountingAllocator(limit=20000)
        net = ibvi.Net(100, allocator=a)
        net.add_dense(100, 5)
        with self.assertRaises(ibvi.OutOfMemory) as cm:
            net.init("mup", 0)  # 10100 * 6 floats > 20000 bytes
        self.assertIsInstance(cm.exception, MemoryError)
        self.assertFalse(net.initialized)
        a.limit = None
        net.init("mup", 0)
        net.close()
        self.assertEqual(a.live, 0)


class MeanField(unittest.TestCase):
    """The diagonal family through the binding: building, KL, rho and its
    gradient, the KL weight, save/load."""

    def test_mean_field(self):
        net = ibvi.Net(4).add_dense(6).add_activation("relu").add_dense(3)
        net.set_covariance(0).set_covariance(2, "diagonal", init_sigma=0.01)
        with self.assertRaises(ibvi.InvalidArgument):
            net.set_covariance(1)  # the activation has no parameters
        net.init(seed=1)
        self.assertEqual(net.layer(0).covariance, ibvi.Covariance.DIAGONAL)
        self.assertEqual(net.noise_size, 30 + 21)
        rho = net.layer(2).rho
        sigma0 = 0.01 * net.layer(2).init_std[0]
        self.assertAlmostEqual(float(np.log1p(np.exp(rho[0]))), sigma0, places=6)
        with self.assertRaises(ibvi.StateError):
            net.set_covariance(0)
        kl0 = net.kl()
        self.assertGreater(kl0, 0.0)
        opt = net.optimizer("adam", lr=0.01)
        self.assertEqual(opt.kl_weight, 0.0)
        opt.kl_weight = 0.5
        self.assertEqual(opt.kl_weight, 0.5)
        with self.assertRaises(ibvi.InvalidArgument):
            opt.kl_weight = -1.0
        x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
        y = np.arange(8, dtype=np.int32) % 3
        opt.train_step(x, labels=y)
        self.assertEqual(net.layer(0).grad_rho.shape, (30,))
        self.assertLess(net.kl(), kl0)  # the KL pulled sigma up
        back, back_opt = ibvi.Net.from_bytes_with_optimizer(net.to_bytes(opt))
        self.assertEqual(back.kl(), net.kl())
        self.assertEqual(back_opt.kl_weight, 0.5)
        np.testing.assert_array_equal(back.layer(2).rho, net.layer(2).rho)

    def test_optimizer_deferred(self):
        """Optimizer.deferred (docs/deferred.md): -1 by default, 0 and
        2..16 accepted, others refused under the C function's name; a fixed
        window trains to the per-step values up to rounding."""
        def run(mode):
            net = ibvi.Net(6)
            net.add_dense(24, rank=10)
            net.add_activation("tanh")
            net.add_dense(3, rank=3)
            net.init("mup", seed=7)
            opt = net.optimizer("sgd", lr=0.005)
            self.assertEqual(opt.deferred, -1)
            opt.deferred = mode
            self.assertEqual(opt.deferred, mode)
            rng = np.random.default_rng(3)
            x = rng.standard_normal((16, 6)).astype(np.float32)
            y = (np.arange(16) % 3).astype(np.int32)
            for _ in range(40):
                opt.train_step(x, labels=y)
            return net.get_params()
        for bad in (1, -2, 17):
            with self.assertRaisesRegex(ibvi.InvalidArgument,
                                        "ibvi_optimizer_set_deferred"):
                run(bad)
        with self.assertRaises(ibvi.InvalidArgument):
            run(2.0)
        ref, win = run(0), run(4)
        self.assertFalse(np.array_equal(ref, win))  # the window ran
        np.testing.assert_allclose(win, ref, rtol=0,
                                   atol=1e-5 * np.abs(ref).max())


if __name__ == "__main__":
    unittest.main()

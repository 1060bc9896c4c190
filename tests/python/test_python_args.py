"""Python values that cannot cross into C as given are refused before the
library is called.

ctypes converts a Python int for an int32_t / int64_t / uint64_t parameter by
keeping its low bits, so without a check C sees another number than Python
does: net.forward(x, samples=-(2**32) + 3) once sized `out` for 0 rows while
C wrote 3 samples into it (a heap overflow from plain Python). Every integer
argument of every public method is range-checked against its C type and
raises ibvi.InvalidArgument naming the parameter; so are floats, bools,
strings and numpy floats where an int is expected, and file names with a NUL
byte (which C would silently cut short). Also: SGD defaults to the method's
recipe, momentum 0.9 without Nesterov.
"""
import os
import pathlib
import tempfile
import unittest

import numpy as np

import ibvi

I32 = (-2**31, 2**31 - 1)
I64 = (-2**63, 2**63 - 1)
U64 = (0, 2**64 - 1)


def small_net(seed=1):
    return ibvi.Net(4).add_dense(6, 2).add_activation("relu").add_dense(3, 2) \
        .init("sp", seed)


def fixtures():
    net = small_net()
    return {"net": net, "opt": ibvi.Optimizer(net, "sgd", 0.1),
            "pred": ibvi.Predictor(net, 2, 0), "x": np.ones((2, 4), np.float32),
            "z": np.zeros((2, net.noise_size), np.float32)}


# (description, C type range, call(f, value)) for every integer parameter of
# the public API; f holds a fresh network, optimizer, predictor and inputs.
INT_PARAMS = [
    ("Net input_dim", I32, lambda f, v: ibvi.Net(v)),
    ("Net.add_dense outputs", I32, lambda f, v: ibvi.Net(3).add_dense(v)),
    ("Net.add_dense rank", I32, lambda f, v: ibvi.Net(3).add_dense(2, v)),
    ("Net.add_activation activation", I32,
     lambda f, v: ibvi.Net(3).add_dense(2).add_activation(v)),
    ("Net.init parameterization", I32,
     lambda f, v: ibvi.Net(3).add_dense(2).init(v, 0)),
    ("Net.init seed", U64, lambda f, v: ibvi.Net(3).add_dense(2).init("sp", v)),
    ("Net.reserve max_rows", I64, lambda f, v: f["net"].reserve(v, 1)),
    ("Net.reserve max_samples", I32, lambda f, v: f["net"].reserve(8, v)),
    ("Net.set_threads threads", I32, lambda f, v: f["net"].set_threads(v)),
    ("Net.threads threads", I32, lambda f, v: setattr(f["net"], "threads", v)),
    ("Net.rng_position position", U64,
     lambda f, v: setattr(f["net"], "rng_position", v)),
    ("Net.layer index", I32, lambda f, v: f["net"].layer(v)),
    ("Net.forward samples", I32, lambda f, v: f["net"].forward(f["x"], samples=v)),
    ("Net.forward_noise samples", I32,
     lambda f, v: f["net"].forward_noise(f["x"], f["z"], samples=v)),
    ("Net.last_noise samples", I32, lambda f, v: f["net"].last_noise(v)),
    ("Layer.lr_multipliers kind", I32, lambda f, v: f["net"].layer(0).lr_multipliers(v)),
    ("Optimizer kind", I32, lambda f, v: ibvi.Optimizer(f["net"], v, 0.1)),
    ("train_step samples", I32,
     lambda f, v: f["opt"].train_step(f["x"], labels=[0, 1], samples=v)),
    ("train_step loss", I32,
     lambda f, v: f["opt"].train_step(f["x"], labels=[0, 1], loss=v)),
    ("Predictor samples", I32, lambda f, v: ibvi.Predictor(f["net"], v, 0)),
    ("Predictor seed", U64, lambda f, v: ibvi.Predictor(f["net"], 2, v)),
    ("Predictor.ensemble samples", I32,
     lambda f, v: ibvi.Predictor.ensemble([f["net"], small_net(2)], v, 0)),
    ("Predictor.ensemble seed", U64,
     lambda f, v: ibvi.Predictor.ensemble([f["net"], small_net(2)], 2, v)),
    ("Predictor.set_batch_size batch", I64, lambda f, v: f["pred"].set_batch_size(v)),
    ("Metrics classes", I32, lambda f, v: ibvi.Metrics(v)),
    ("status_string status", I32, lambda f, v: ibvi.status_string(v)),
    ("loss kind", I32,
     lambda f, v: ibvi.loss(v, np.zeros((2, 3)), labels=[0, 1], targets=np.zeros((2, 3)))),
]

# Real-valued parameters: a string, a bool or None is refused the same way.
FLOAT_PARAMS = [
    ("Optimizer lr", lambda f, v: ibvi.Optimizer(f["net"], "sgd", v)),
    ("Optimizer momentum", lambda f, v: ibvi.Optimizer(f["net"], "sgd", 0.1, momentum=v)),
    ("Optimizer.set_lr lr", lambda f, v: f["opt"].set_lr(v)),
    ("Optimizer.set_momentum momentum", lambda f, v: f["opt"].set_momentum(v)),
    ("Optimizer.set_adam beta1", lambda f, v: ibvi.Optimizer.adam(f["net"], 0.1).set_adam(v)),
    ("Optimizer.set_adam eps",
     lambda f, v: ibvi.Optimizer.adam(f["net"], 0.1).set_adam(0.9, 0.999, v)),
    ("Predictor.set_temperature temperature", lambda f, v: f["pred"].set_temperature(v)),
    ("temperature_apply temperature",
     lambda f, v: ibvi.temperature_apply(np.zeros((2, 3)), v)),
]


class IntegerArguments(unittest.TestCase):
    def refused(self, call, param):
        """call() raises InvalidArgument from the binding (ibvi_last_error()
        stays empty: C was not called) naming param."""
        ibvi.clear_error()
        with self.assertRaises(ibvi.InvalidArgument) as cm:
            call()
        e = cm.exception
        self.assertIn(param, e.message)
        self.assertEqual(ibvi.last_error(), "", "the C library was called")
        return e

    def test_the_heap_overflow_call(self):
        """The exact call of the issue: C never runs, nothing is written."""
        for method in ("forward", "forward_noise"):
            with self.subTest(method=method):
                net = small_net()
                x = np.ones((5, 4), np.float32)
                net.forward(x, samples=2)
                position, noise = net.rng_position, net.last_noise()
                z = np.zeros((3, net.noise_size), np.float32)
                for samples in (-(2**32) + 3, 2**32 + 3, 2**31, -(2**31) - 1):
                    if method == "forward":
                        call = lambda: net.forward(x, samples=samples)
                    else:
                        call = lambda: net.forward_noise(x, z, samples=samples)
                    e = self.refused(call, "samples")
                    self.assertIn(str(samples), e.message)
                    self.assertIn("int32_t", e.message)
                    self.assertEqual(net.rng_position, position)
                    np.testing.assert_array_equal(net.last_noise(2), noise)
                # and a count that fits int32_t but not IBVI_MAX_SAMPLES is
                # refused before a buffer for it is allocated
                self.refused(lambda: net.forward(x, samples=2**31 - 1), "samples")
                self.assertEqual(net.rng_position, position)

    def test_every_integer_parameter_checks_its_c_type(self):
        bad = lambda lo, hi: [("below", lo - 1), ("above", hi + 1),
                              ("float", 1.5), ("integral float", 2.0),
                              ("str", "3"), ("numpy float", np.float64(2.0)),
                              ("bool", True), ("None", None),
                              ("numpy float32", np.float32(1.0))]
        none_is_default = {"Net.forward_noise samples", "Net.last_noise samples",
                           "train_step loss"}
        for what, (lo, hi), call in INT_PARAMS:
            param = what.split()[-1]
            for kind, value in bad(lo, hi):
                if value is None and what in none_is_default:
                    continue
                with self.subTest(param=what, value=kind):
                    f = fixtures()
                    self.refused(lambda: call(f, value), param)

    def test_numpy_integers_are_accepted(self):
        net = ibvi.Net(np.int64(4)).add_dense(np.int32(6), np.uint8(2))
        net.add_activation(np.int16(1)).add_dense(3, 2).init(np.int32(0), np.uint64(2**64 - 1))
        self.assertEqual(net.seed, 2**64 - 1)
        self.assertEqual(net.layer(np.int64(-1)).index, 2)
        x = np.ones((2, 4), np.float32)
        self.assertEqual(net.forward(x, samples=np.int64(3)).shape, (6, 3))
        net.rng_position = np.uint64(2**64 - 1)
        self.assertEqual(net.rng_position, 2**64 - 1)
        pred = ibvi.Predictor(net, np.int32(2), np.uint64(7))
        pred.set_batch_size(np.int64(1))
        self.assertEqual(pred.run(x).probs.shape, (2, 3))
        opt = ibvi.Optimizer(net, np.int64(0), np.float32(0.1))
        self.assertEqual(opt.kind, ibvi.OptimizerKind.SGD)
        opt.train_step(x, labels=[0, 1], samples=np.int16(2))
        self.assertEqual(ibvi.Metrics(np.int8(3)).classes, 3)

    def test_limits_of_each_type_reach_c(self):
        """The extreme values that do fit are passed on unchanged: C sees
        them and answers with its own message (not the binding's)."""
        net = small_net()
        for call, fn, text in [
                (lambda: net.forward(np.ones((1, 4)), samples=-(2**31)),
                 "ibvi_net_forward", "samples = -2147483648"),
                (lambda: net.set_threads(2**31 - 1), "ibvi_net_set_threads",
                 "threads = 2147483647"),
                (lambda: net.reserve(2**63 - 1, 1), "ibvi_net_reserve", None),
                (lambda: ibvi.Net(-(2**31)), "ibvi_net_create",
                 "input_dim = -2147483648"),
                (lambda: ibvi.Predictor(net, 2**31 - 1, 0), "ibvi_predictor_create",
                 "samples = 2147483647")]:
            ibvi.clear_error()
            with self.assertRaises(ibvi.Error) as cm:
                call()
            self.assertEqual(cm.exception.function, fn)
            self.assertEqual(cm.exception.message, ibvi.last_error())
            if text:
                self.assertIn(text, cm.exception.message)
        net.rng_position = 2**64 - 1
        self.assertEqual(net.rng_position, 2**64 - 1)

    def test_real_parameters_refuse_non_numbers(self):
        for what, call in FLOAT_PARAMS:
            param = what.split()[-1]
            for value in ("0.1", None, True, [0.1]):
                with self.subTest(param=what, value=repr(value)):
                    f = fixtures()
                    self.refused(lambda: call(f, value), param)
        f = fixtures()
        f["opt"].set_lr(np.float32(0.25))
        self.assertEqual(f["opt"].lr, 0.25)
        f["opt"].set_lr(1)
        self.assertEqual(f["opt"].lr, 1.0)

    def test_objects_of_the_wrong_class(self):
        f = fixtures()
        for call, param in [
                (lambda: ibvi.Net(4, allocator=object()), "allocator"),
                (lambda: ibvi.Optimizer("not a net", "sgd", 0.1), "net"),
                (lambda: ibvi.train_step(f["net"], "opt", f["x"], labels=[0, 1]), "opt"),
                (lambda: f["net"].save("/tmp/never", optimizer=3), "optimizer"),
                (lambda: f["net"].to_bytes(optimizer=f["pred"]), "optimizer"),
                (lambda: ibvi.Predictor([f["net"], 3]), "nets"),
                (lambda: ibvi.Predictor(42), "nets"),
                (lambda: ibvi.Metrics(3).merge("m"), "other"),
                (lambda: ibvi.load_bytes("a str"), "data"),
                (lambda: f["net"].forward([["a", "b", "c", "d"]]), "x"),
                (lambda: f["net"].layer(0).set_mean("abc"), "theta")]:
            with self.subTest(param=param):
                self.refused(call, param)

    def test_an_allocator_returning_a_non_address_fails_cleanly(self):
        """alloc() returning a float, a bool, a negative or too large int is
        a failed allocation (OutOfMemory), not an address handed to C."""
        class Bad(ibvi.Allocator):
            def __init__(self, value):
                super().__init__()
                self.value, self.freed = value, []

            def alloc(self, size):
                return self.value

            def free(self, address):
                self.freed.append(address)

        for value in (1.5, True, -8, 2**64 + 8, "0x1000"):
            with self.subTest(value=repr(value)):
                a = Bad(value)
                with self.assertRaises(ibvi.OutOfMemory):
                    ibvi.Net(4, allocator=a)
                self.assertEqual(a.freed, [])

    def test_buffers_the_binding_allocates_are_those_c_fills(self):
        """Audit of the other places where a Python value sizes a buffer C
        writes: the predictor's noise (K given at creation) and last_noise."""
        net = small_net()
        pred = ibvi.Predictor(net, 3, 1)
        self.assertEqual(pred.noise().shape, (1, 3, net.noise_size))
        self.refused(lambda: net.last_noise(-1), "samples")
        self.refused(lambda: net.last_noise(0), "samples")
        self.refused(lambda: net.last_noise(2**32 + 1), "samples")
        net.forward(np.ones((1, 4)), samples=2)
        with self.assertRaises(ibvi.ShapeError):
            net.last_noise(3)  # C checks the length it is given
        self.assertEqual(net.last_noise().shape, (2, net.noise_size))


class Paths(unittest.TestCase):
    def test_nul_bytes_are_refused(self):
        net = small_net()
        opt = ibvi.Optimizer(net, "sgd", 0.1)
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "model")
            names = [base + "\0.ibvi", os.fsencode(base) + b"\0.ibvi",
                     pathlib.Path(base + "\0.ibvi")]
            for name in names:
                for call in (lambda: net.save(name), lambda: net.save(name, opt),
                             lambda: ibvi.load(name), lambda: ibvi.Net.load(name),
                             lambda: ibvi.Net.load_with_optimizer(name)):
                    with self.subTest(name=repr(name)):
                        ibvi.clear_error()
                        with self.assertRaises(ibvi.InvalidArgument) as cm:
                            call()
                        self.assertIsInstance(cm.exception, ValueError)  # as open()
                        self.assertIn("NUL", cm.exception.message)
                        self.assertIn("path", cm.exception.message)
                        self.assertEqual(ibvi.last_error(), "")
            # C would have written (and read) the name up to the NUL
            self.assertEqual(os.listdir(tmp), [])
            for bad in (3, None, 1.5):
                with self.assertRaises(ibvi.InvalidArgument):
                    net.save(bad)

    def test_str_bytes_and_pathlike_work(self):
        net = small_net()
        x = np.ones((2, 4), np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            for name in (os.path.join(tmp, "a.ibvi"),
                         os.fsencode(os.path.join(tmp, "b.ibvi")),
                         pathlib.Path(tmp) / "c.ibvi"):
                with self.subTest(name=repr(name)):
                    net.save(name)
                    np.testing.assert_array_equal(ibvi.load(name).forward_mean(x),
                                                  net.forward_mean(x))
            self.assertEqual(sorted(os.listdir(tmp)), ["a.ibvi", "b.ibvi", "c.ibvi"])


class DefaultMomentum(unittest.TestCase):
    def train(self, make):
        """Three SGD steps of a deterministic network with the optimizer
        make(net) gives; returns the parameters."""
        net = ibvi.Net(3).add_dense(4).add_activation("tanh").add_dense(2).init("sp", 3)
        opt = make(net)
        x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
        y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
        for _ in range(3):
            opt.train_step(x, targets=y)
        return np.concatenate([l.mean for l in net.dense_layers])

    def test_sgd_defaults_to_momentum_0_9(self):
        recipe = self.train(lambda n: ibvi.Optimizer(n, "sgd", 0.1, momentum=0.9,
                                                      nesterov=False))
        plain = self.train(lambda n: ibvi.Optimizer(n, "sgd", 0.1, momentum=0.0))
        nesterov = self.train(lambda n: ibvi.Optimizer(n, "sgd", 0.1, momentum=0.9,
                                                        nesterov=True))
        self.assertFalse(np.array_equal(recipe, plain))
        self.assertFalse(np.array_equal(recipe, nesterov))
        for make in (lambda n: n.optimizer(), lambda n: n.optimizer("sgd", 0.1),
                     lambda n: ibvi.Optimizer(n, "sgd", 0.1),
                     lambda n: ibvi.Optimizer.sgd(n, 0.1)):
            got = self.train(lambda n: (lambda o: (o.set_lr(0.1), o)[1])(make(n)))
            np.testing.assert_array_equal(got, recipe)


if __name__ == "__main__":
    unittest.main()

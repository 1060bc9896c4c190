"""A negative status of the C library becomes an exception of the class of
that status, carrying the C library's own message (ibvi_last_error())."""
import os
import tempfile
import threading
import unittest

import numpy as np

import ibvi


class Errors(unittest.TestCase):
    def check(self, cls, fn, call, *fragments, prefix=None):
        """call() raises cls from C function fn with a message containing the
        fragments, and the message is exactly ibvi_last_error(). The message
        starts with the name of the C function that detected the problem
        (prefix, by default fn itself)."""
        ibvi.clear_error()
        with self.assertRaises(cls) as cm:
            call()
        e = cm.exception
        self.assertIs(type(e), cls)
        self.assertIsInstance(e, ibvi.Error)
        self.assertEqual(e.function, fn)
        self.assertEqual(e.message, ibvi.last_error())  # the C text, verbatim
        self.assertTrue(e.message.startswith((prefix or fn) + ": "), e.message)
        for f in fragments:
            self.assertIn(f, e.message)
        self.assertEqual(e.status_string, ibvi.status_string(e.status))
        self.assertIn(e.message, str(e))
        self.assertIn(e.status_string, str(e))
        return e

    def test_status_classes(self):
        pairs = {ibvi.InvalidArgument: -1, ibvi.ShapeError: -2, ibvi.OutOfMemory: -3,
                 ibvi.StateError: -4, ibvi.NonFiniteError: -5, ibvi.FileError: -6,
                 ibvi.FormatError: -7, ibvi.VersionError: -8,
                 ibvi.ChecksumError: -9, ibvi.UnsupportedError: -10}
        for cls, status in pairs.items():
            self.assertIs(ibvi.error_class(status), cls)
            self.assertEqual(cls(status).status, status)
        self.assertIs(ibvi.error_class(-99), ibvi.Error)
        self.assertTrue(issubclass(ibvi.InvalidArgument, ValueError))
        self.assertTrue(issubclass(ibvi.FileError, OSError))
        self.assertTrue(issubclass(ibvi.OutOfMemory, MemoryError))

    def test_building_errors(self):
        e = self.check(ibvi.InvalidArgument, "ibvi_net_create", lambda: ibvi.Net(0),
                       "input_dim = 0")
        self.assertEqual(e.status, ibvi.Status.INVALID_ARG)
        self.assertEqual(str(e), "ibvi_net_create: input_dim = 0, expected "
                         "1..100000000 [invalid argument]")
        net = ibvi.Net(4).add_dense(3, 1)
        self.check(ibvi.StateError, "ibvi_net_forward",
                   lambda: net.forward(np.zeros((2, 4))), "not initialised")
        net.init("sp", 1)
        self.check(ibvi.StateError, "ibvi_net_add_dense", lambda: net.add_dense(2),
                   "layers can only be added before ibvi_net_init")
        self.check(ibvi.InvalidArgument, "ibvi_net_set_threads",
                   lambda: net.set_threads(0), "threads = 0")
        self.check(ibvi.InvalidArgument, "ibvi_net_layer", lambda: net.layer(7))

    def test_pass_errors(self):
        net = ibvi.Net(4).add_dense(3, 1).init("sp", 1)
        self.check(ibvi.InvalidArgument, "ibvi_net_forward",
                   lambda: net.forward(np.zeros((2, 4)), samples=0), "samples = 0")
        self.check(ibvi.InvalidArgument, "ibvi_net_forward",
                   lambda: net.forward(np.zeros((0, 4))), "n = 0")
        self.check(ibvi.StateError, "ibvi_net_backward",
                   lambda: net.backward(np.zeros((2, 3))), "no forward pass")
        net.forward(np.zeros((2, 4)))
        self.check(ibvi.ShapeError, "ibvi_net_backward",
                   lambda: net.backward(np.zeros((2, 2))), "grad_out is 2 x 2, expected 2 x 3")
        self.check(ibvi.NonFiniteError, "ibvi_net_backward",
                   lambda: net.backward(np.full((2, 3), np.nan)), "NaN or infinity")
        self.check(ibvi.NonFiniteError, "ibvi_layer_set_mean",
                   lambda: net.layer(0).set_mean(np.full(15, np.inf)), "unchanged")
        self.check(ibvi.ShapeError, "ibvi_layer_set_factor",
                   lambda: net.layer(0).set_factor(np.ones(3)), "len = 3, expected 15")

    def test_training_errors(self):
        net = ibvi.Net(4).add_dense(3, 1).init("sp", 1)
        self.check(ibvi.InvalidArgument, "ibvi_optimizer_create",
                   lambda: ibvi.Optimizer(net, "sgd", -1.0), "lr = -1")
        self.check(ibvi.InvalidArgument, "ibvi_optimizer_create",
                   lambda: ibvi.Optimizer(net, 7, 0.1), "kind = 7")
        opt = ibvi.Optimizer(net, "sgd", 0.1)
        before = net.layer(0).mean
        self.check(ibvi.NonFiniteError, "ibvi_train_step",
                       lambda: opt.train_step(np.full((2, 4), np.nan), labels=[0, 1]),
                       "x holds NaN or infinity")
        np.testing.assert_array_equal(net.layer(0).mean, before)  # nothing changed
        self.check(ibvi.InvalidArgument, "ibvi_train_step",
                   lambda: opt.train_step(np.zeros((2, 4)), labels=[0, 5]),
                   "labels[1] = 5, expected 0..2")
        other = ibvi.Net(4).add_dense(3).init("sp", 0)
        self.check(ibvi.InvalidArgument, "ibvi_train_step",
                   lambda: ibvi.train_step(other, opt, np.zeros((1, 4)), labels=[0]),
                   "another network")
        self.check(ibvi.ShapeError, "ibvi_loss_softmax_xent",
                   lambda: ibvi.loss_softmax_xent(np.zeros((3, 3)), [0, 1]),
                   "rows = 3 is not a multiple of n = 2")
        # a non-finite loss carries its value
        big = ibvi.Net(1).add_dense(1).init("sp", 0)
        big.layer(0).mean = np.array([3e38, 0], np.float32)
        bopt = ibvi.Optimizer(big, "sgd", 0.1)
        with self.assertRaises(ibvi.NonFiniteError) as cm:
            bopt.train_step(np.full((1, 1), 10, np.float32), targets=np.zeros((1, 1)))
        self.assertEqual(cm.exception.loss, float("inf"))

    def test_prediction_and_metrics_errors(self):
        net = ibvi.Net(4).add_dense(3, 1).init("sp", 1)
        self.check(ibvi.InvalidArgument, "ibvi_predictor_create",
                   lambda: ibvi.Predictor(net, 0), "samples = 0")
        self.check(ibvi.InvalidArgument, "ibvi_metrics_create",
                   lambda: ibvi.Metrics(0), "classes = 0")
        m = ibvi.Metrics(3)
        self.check(ibvi.InvalidArgument, "ibvi_metrics_add",
                   lambda: m.add(np.full((1, 3), 2.0), [0]), "probs[0][0] = 2")
        self.check(ibvi.StateError, "ibvi_metrics_ece", lambda: m.ece)
        self.check(ibvi.InvalidArgument, "ibvi_temperature_fit",
                   lambda: ibvi.temperature_fit(np.zeros((2, 1)), [0, 0]), "classes = 1")
        self.check(ibvi.NonFiniteError, "ibvi_auroc",
                   lambda: ibvi.auroc([np.nan], [1.0]))

    def test_io_errors(self):
        net = ibvi.Net(4).add_dense(3, 1).init("sp", 1)
        blob = net.to_bytes()
        self.check(ibvi.FormatError, "ibvi_net_load_buffer",
                   lambda: ibvi.load_bytes(b""), "empty")
        self.check(ibvi.FormatError, "ibvi_net_load_buffer",
                   lambda: ibvi.load_bytes(b"not a model file at all"), "magic")
        damaged = bytearray(blob)
        damaged[40] ^= 1
        self.check(ibvi.ChecksumError, "ibvi_net_load_buffer",
                   lambda: ibvi.load_bytes(bytes(damaged)), "checksum mismatch")
        newer = bytearray(blob)
        newer[4] = 9
        self.check(ibvi.VersionError, "ibvi_net_load_buffer",
                   lambda: ibvi.load_bytes(bytes(newer)), "format version 9")
        self.check(ibvi.FormatError, "ibvi_net_load_buffer",
                   lambda: ibvi.load_bytes(blob[:-1]), "truncated")
        e = self.check(ibvi.FileError, "ibvi_net_load",
                       lambda: ibvi.load("/nonexistent/model.ibvi"),
                       "/nonexistent/model.ibvi")
        self.assertIsInstance(e, OSError)
        self.check(ibvi.FileError, "ibvi_net_save",
                   lambda: net.save("/nonexistent/dir/model.ibvi"), "No such file")
        with tempfile.TemporaryDirectory() as tmp:
            other = ibvi.Net(4).add_dense(3).init("sp", 0)
            opt = ibvi.Optimizer(other, "sgd", 0.1)
            self.check(ibvi.InvalidArgument, "ibvi_net_save",
                       lambda: net.save(os.path.join(tmp, "m"), opt), "another network")
            self.check(ibvi.StateError, "ibvi_net_save",
                       lambda: ibvi.Net(2).save(os.path.join(tmp, "m")), "not initialised")
            self.assertEqual(os.listdir(tmp), [])  # no temporary file left

    def test_binding_checks_what_c_cannot(self):
        """The C API takes x as a pointer and n: the binding checks the column
        count (an out-of-bounds read otherwise) and raises ShapeError itself."""
        net = ibvi.Net(4).add_dense(3, 1).init("sp", 1)
        ibvi.clear_error()
        with self.assertRaises(ibvi.ShapeError) as cm:
            net.forward(np.zeros((2, 3)))
        self.assertEqual(cm.exception.message, "Net.forward: x has 3 columns, expected 4")
        self.assertEqual(ibvi.last_error(), "")  # no C call was made
        with self.assertRaises(ibvi.ShapeError):
            net.forward(np.zeros(4))
        with self.assertRaises(ibvi.InvalidArgument):
            net.forward(np.zeros((2, 4)), out=np.zeros((2, 3)))  # float64 out
        with self.assertRaises(ibvi.ShapeError):
            net.forward(np.zeros((2, 4)), out=np.zeros((3, 3), np.float32))
        ro = np.zeros((2, 3), np.float32)
        ro.flags.writeable = False
        with self.assertRaises(ibvi.InvalidArgument):
            net.forward(np.zeros((2, 4)), out=ro)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Metrics(3).add(np.zeros((1, 3)), [2**40])

    def test_messages_are_per_thread(self):
        ibvi.clear_error()
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Net(-5)
        mine = ibvi.last_error()
        seen = {}

        def other():
            seen["before"] = ibvi.last_error()
            try:
                ibvi.Metrics(-2)
            except ibvi.InvalidArgument as e:
                seen["error"] = e.message

        t = threading.Thread(target=other)
        t.start()
        t.join()
        self.assertEqual(seen["before"], "")
        self.assertIn("classes = -2", seen["error"])
        self.assertEqual(ibvi.last_error(), mine)
        self.assertIn("input_dim = -5", mine)


if __name__ == "__main__":
    unittest.main()

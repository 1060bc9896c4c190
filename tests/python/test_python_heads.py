"""Prediction heads, the Gaussian NLL and the noise-std fit through the
binding, each against a naive numpy computation from Net.forward_noise with
the predictor's own noise (Predictor.noise): the sigmoid head's
probabilities, entropies and mutual information; the regression heads'
mean, epistemic and aleatoric variances and samples (one network and an
ensemble, mean-network mode, chunked batches); the loss's value and
gradient against its formula and through ibvi.loss and train_step; the
closed form of fit_noise_std; and the errors of bad combinations."""
import math
import unittest

import numpy as np

import ibvi


def mlp(inputs, outputs, seed, rank=2):
    return (ibvi.Net(inputs).add_dense(8, rank=rank).add_activation("relu")
            .add_dense(outputs, rank=1).init("sp", seed=seed))


def sample_outputs(pred, nets, x, mean_network=False):
    """(S, n, outputs) float64: every member sample the predictor averages."""
    z = pred.noise()
    if mean_network:
        return np.stack([n.forward_mean(x) for n in nets]).astype(np.float64)
    out = [net.forward_noise(x, z[m]).reshape(z.shape[1], x.shape[0], -1)
           for m, net in enumerate(nets)]
    return np.concatenate(out).astype(np.float64)


def entropy2(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) +
              np.where(p < 1, (1 - p) * np.log(1 - p), 0.0))
    return h


class Sigmoid(unittest.TestCase):
    def test_against_numpy(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((12, 4)).astype(np.float32)
        for nets, K, mean_network, T in (([mlp(4, 1, 3)], 5, False, 1.0),
                                         ([mlp(4, 1, 3)], 1, False, 2.0),
                                         ([mlp(4, 1, 4), mlp(4, 1, 5)], 3, False, 1.0),
                                         ([mlp(4, 1, 3)], 5, True, 1.0)):
            with self.subTest(members=len(nets), K=K, mean=mean_network, T=T):
                pred = ibvi.Predictor(nets if len(nets) > 1 else nets[0], K, 7)
                pred.set_mean_network(mean_network)
                pred.set_temperature(T)
                pred.set_head(ibvi.HEAD_SIGMOID)
                self.assertEqual(pred.head, ibvi.HeadKind.SIGMOID)
                self.assertEqual(pred.output_dim, 2)
                r = pred.run(x)
                f = sample_outputs(pred, nets, x, mean_network)[..., 0]
                q = 1 / (1 + np.exp(-f / T))
                p = q.mean(0)
                np.testing.assert_allclose(r.probs[:, 1], p, atol=1e-6)
                np.testing.assert_allclose(r.probs[:, 0], 1 - p, atol=1e-6)
                np.testing.assert_allclose(r.predictive_entropy, entropy2(p),
                                           atol=1e-6)
                np.testing.assert_allclose(r.expected_entropy,
                                           entropy2(q).mean(0), atol=1e-6)
                np.testing.assert_allclose(
                    r.mutual_information,
                    np.maximum(entropy2(p) - entropy2(q).mean(0), 0), atol=1e-6)

    def test_needs_one_output(self):
        pred = ibvi.Predictor(mlp(4, 3, 1), 2, 1)
        with self.assertRaises(ibvi.ShapeError) as cm:
            pred.set_head("sigmoid")
        self.assertIn("ibvi_predictor_set_head", str(cm.exception))
        self.assertEqual(pred.head, ibvi.HEAD_SOFTMAX)


class Regression(unittest.TestCase):
    def check(self, nets, K, kind, sigma=0.0, mean_network=False, batch=None):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((17, 4)).astype(np.float32)
        pred = ibvi.Predictor(nets if len(nets) > 1 else nets[0], K, 11)
        pred.set_mean_network(mean_network)
        if batch:
            pred.set_batch_size(batch)
        pred.set_head(kind, noise_std=sigma)
        kind = pred.head
        r = pred.run_regression(x, samples=True)
        f = sample_outputs(pred, nets, x, mean_network)
        D = f.shape[2] // 2 if kind == ibvi.HEAD_HETEROSCEDASTIC else f.shape[2]
        self.assertEqual(pred.output_dim, D)
        m = f[..., :D]
        np.testing.assert_allclose(r["mean"], m.mean(0), atol=1e-5)
        np.testing.assert_allclose(r["var_epistemic"], m.var(0), atol=1e-5)
        if kind == ibvi.HEAD_HETEROSCEDASTIC:
            va = np.exp(np.clip(f[..., D:], ibvi.LOG_VAR_MIN, ibvi.LOG_VAR_MAX)).mean(0)
        else:
            va = np.full(m.shape[1:], float(np.float32(sigma)) ** 2)
        np.testing.assert_allclose(r["var_aleatoric"], va, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(r["var"], r["var_epistemic"] + r["var_aleatoric"])
        self.assertEqual(r["samples"].shape, m.shape)
        np.testing.assert_allclose(r["samples"], m, atol=1e-6)
        self.assertIsNone(pred.run_regression(x)["samples"])
        return r

    def test_regression(self):
        r = self.check([mlp(4, 3, 1)], 5, ibvi.HEAD_REGRESSION, 0.3)
        self.assertGreater(r["var_epistemic"].max(), 1e-6)
        self.check([mlp(4, 3, 1)], 1, "regression", 0.0)
        self.check([mlp(4, 3, 1)], 5, ibvi.HeadKind.REGRESSION, 0.5,
                   mean_network=True)
        self.check([mlp(4, 3, 1)], 5, ibvi.HEAD_REGRESSION, 0.5, batch=4)
        self.check([mlp(4, 3, 2), mlp(4, 3, 3)], 4, ibvi.HEAD_REGRESSION, 0.1)

    def test_heteroscedastic(self):
        self.check([mlp(4, 4, 1)], 5, ibvi.HEAD_HETEROSCEDASTIC)
        self.check([mlp(4, 2, 1)], 5, "heteroscedastic", batch=3)
        self.check([mlp(4, 2, 4), mlp(4, 2, 5), mlp(4, 2, 6)], 2,
                   ibvi.HEAD_HETEROSCEDASTIC)
        with self.assertRaises(ibvi.ShapeError):
            ibvi.Predictor(mlp(4, 3, 1), 2, 1).set_head(ibvi.HEAD_HETEROSCEDASTIC)

    def test_wrong_run_and_bad_options(self):
        pred = ibvi.Predictor(mlp(4, 2, 1), 3, 1)
        x = np.ones((3, 4), np.float32)
        with self.assertRaises(ibvi.StateError):
            pred.run_regression(x)
        before = pred.run(x).probs
        for kind, std, error in ((7, 0.0, ibvi.InvalidArgument),
                                 (ibvi.HEAD_REGRESSION, -1.0, ibvi.InvalidArgument),
                                 (ibvi.HEAD_REGRESSION, math.nan, ibvi.InvalidArgument),
                                 (ibvi.HEAD_REGRESSION, math.inf, ibvi.InvalidArgument),
                                 (ibvi.HEAD_SIGMOID, 0.0, ibvi.ShapeError)):
            with self.subTest(kind=kind, std=std):
                with self.assertRaises(error):
                    pred.set_head(kind, noise_std=std)
                self.assertEqual(pred.head, ibvi.HEAD_SOFTMAX)
                np.testing.assert_array_equal(pred.run(x).probs, before)
        with self.assertRaises(ibvi.InvalidArgument):
            pred.set_head("gaussian")
        pred.set_temperature(2.0)
        with self.assertRaises(ibvi.StateError):
            pred.set_head(ibvi.HEAD_REGRESSION)
        pred.set_temperature(1.0)
        pred.set_head(ibvi.HEAD_REGRESSION, 0.5)
        with self.assertRaises(ibvi.StateError):
            pred.run(x)
        with self.assertRaises(ibvi.StateError):
            pred.set_temperature(2.0)
        self.assertIn("regression head", repr(pred))


class GaussianNLL(unittest.TestCase):
    def test_against_formula(self):
        rng = np.random.default_rng(3)
        f = rng.standard_normal((6, 4)).astype(np.float32) * 3  # clamps too
        f[0, 2], f[1, 3] = 25.0, -25.0
        t = rng.standard_normal((3, 2)).astype(np.float32)
        r = ibvi.loss_gaussian_nll(f, t)
        fd = f.astype(np.float64)
        m, s = fd[:, :2], fd[:, 2:]
        c = np.clip(s, ibvi.LOG_VAR_MIN, ibvi.LOG_VAR_MAX)
        tt = np.tile(t.astype(np.float64), (2, 1))  # row r against t[r % n]
        terms = 0.5 * (math.log(2 * math.pi) + c + (tt - m) ** 2 * np.exp(-c))
        self.assertLess(abs(r.loss / terms.sum(1).mean() - 1), 1e-6)
        gm = -(tt - m) * np.exp(-c) / 6
        gs = np.where(c == s, 0.5 * (1 - (tt - m) ** 2 * np.exp(-c)), 0.0) / 6
        np.testing.assert_allclose(r.grad, np.hstack([gm, gs]), rtol=1e-5,
                                   atol=1e-7)
        self.assertEqual(r.grad[0, 2], 0.0)
        same = ibvi.loss(ibvi.LOSS_GAUSSIAN_NLL, f, targets=t)
        self.assertEqual(same.loss, r.loss)
        np.testing.assert_array_equal(same.grad, r.grad)
        with self.assertRaises(ibvi.ShapeError):
            ibvi.loss_gaussian_nll(f[:, :3], t)

    def test_train_step(self):
        # deterministic: the binding's (n, D) targets reach the loss
        net = (ibvi.Net(3).add_dense(8).add_activation("relu").add_dense(2)
               .init("sp", seed=5))
        opt = ibvi.Optimizer(net, "adam", lr=0.01)
        rng = np.random.default_rng(4)
        x = rng.standard_normal((64, 3)).astype(np.float32)
        y = (x[:, :1] + 0.3 * rng.standard_normal((64, 1))).astype(np.float32)
        def mean_loss():
            return ibvi.loss_gaussian_nll(net.forward_mean(x), y, grad=False).loss

        first = mean_loss()
        opt.train_step(x, targets=y, loss=ibvi.LOSS_GAUSSIAN_NLL)
        for _ in range(300):
            opt.train_step(x, targets=y, loss="gaussian_nll")
        self.assertLess(mean_loss(), first - 0.3)


class FitNoiseStd(unittest.TestCase):
    def test_closed_form(self):
        rng = np.random.default_rng(5)
        m = rng.standard_normal((40, 2)).astype(np.float32)
        t = (m + 0.7 * rng.standard_normal((40, 2))).astype(np.float32)
        want = np.float32(math.sqrt(((t.astype(np.float64) - m) ** 2).mean()))
        self.assertEqual(np.float32(ibvi.fit_noise_std(m, None, t)), want)
        self.assertEqual(np.float32(ibvi.fit_noise_std(m, np.zeros_like(m), t)),
                         want)

    def test_maximises_likelihood(self):
        rng = np.random.default_rng(6)
        m = rng.standard_normal(300).astype(np.float32)
        v = (0.05 + 0.3 * rng.random(300)).astype(np.float32)
        t = (m + np.sqrt(v + 0.25) * rng.standard_normal(300)).astype(np.float32)
        sigma = ibvi.fit_noise_std(m, v, t)

        def nll(s):
            var = v.astype(np.float64) + s * s
            return (np.log(var) + (t.astype(np.float64) - m) ** 2 / var).sum()

        grid = np.linspace(0.0, 3.0, 601)
        self.assertLessEqual(nll(sigma), min(nll(s) for s in grid) + 1e-9)
        self.assertLess(nll(sigma), nll(sigma * 0.99))
        self.assertLess(nll(sigma), nll(sigma * 1.01))

    def test_errors(self):
        m = np.zeros((3, 2), np.float32)
        with self.assertRaises(ibvi.ShapeError):
            ibvi.fit_noise_std(m, None, np.zeros((3, 3), np.float32))
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.fit_noise_std(m, -np.ones_like(m), m)
        with self.assertRaises(ibvi.NonFiniteError):
            ibvi.fit_noise_std(m, None, np.full_like(m, np.nan))


if __name__ == "__main__":
    unittest.main()

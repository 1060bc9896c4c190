"""The last-layer Laplace approximation through the binding (ibvi.Laplace),
against numpy: the Hessian as the brute-force J^T Lambda J of a tiny
network's last layer, the log marginal likelihood by numpy's slogdet, the
probit predictive by its formula with numpy's inverse, the built network's
factor (S S^T = (H + lambda I)^-1), the predictor on it, KFAC's G (x) A,
and the errors (memory refusal naming KFAC, a changed network)."""
import math
import unittest

import numpy as np

import ibvi

D, HID, C, N = 3, 5, 3, 60


def setup(seed=3):
    rng = np.random.default_rng(seed)
    net = (ibvi.Net(D).add_dense(HID).add_activation("tanh").add_dense(C)
           .init("sp", seed=seed))
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, size=N).astype(np.int32)
    return net, x, y


def features(net, x):
    m = net.layer(0).get_mean().astype(np.float64)
    w, b = m[:HID * D].reshape(HID, D), m[HID * D:]
    return np.tanh(x.astype(np.float64) @ w.T + b)


def last_theta(net):
    return net.layer(2).get_mean().astype(np.float64)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def jacobian(a):
    """(n, C, P) in theta's order [W row-major; b]."""
    n = a.shape[0]
    j = np.zeros((n, C, C * HID + C))
    for c in range(C):
        j[:, c, c * HID:(c + 1) * HID] = a
        j[:, c, C * HID + c] = 1.0
    return j


def logits(theta, a):
    return a @ theta[:C * HID].reshape(C, HID).T + theta[C * HID:]


class Full(unittest.TestCase):
    def test_against_numpy(self):
        net, x, y = setup()
        la = ibvi.Laplace.fit(net, x, y, prior="fixed", prior_precision=0.7)
        self.assertEqual(la.structure, ibvi.LaplaceStructure.FULL)
        P = la.param_count
        self.assertEqual(P, C * HID + C)
        a, theta = features(net, x), last_theta(net)
        p = softmax(logits(theta, a))
        lam = np.einsum("nc,cd->ncd", p, np.eye(C)) - np.einsum("nc,nd->ncd", p, p)
        J = jacobian(a)
        H = np.einsum("nci,ncd,ndj->ij", J, lam, J)
        got = la.hessian()
        np.testing.assert_allclose(got, H, atol=1e-5 * np.abs(H).max())
        # the marginal likelihood, by slogdet
        nll = -np.log(p[np.arange(N), y]).sum()
        for lmb in (0.01, 0.7, 20.0):
            ref = (-nll - lmb / 2 * theta @ theta + P / 2 * math.log(lmb)
                   - np.linalg.slogdet(H + lmb * np.eye(P))[1] / 2)
            self.assertAlmostEqual(la.log_marglik_at(lmb), ref,
                                   delta=1e-5 * abs(ref))
        self.assertAlmostEqual(la.prior_precision, 0.7, places=6)
        self.assertAlmostEqual(la.log_marglik, la.log_marglik_at(0.7),
                               delta=1e-9 * abs(la.log_marglik))
        # probit: the formula
        sigma = np.linalg.inv(H + 0.7 * np.eye(P))
        xt = x[:10]
        at = features(net, xt)
        Jt = jacobian(at)
        # the logits' covariance, off their common shift (Pi V Pi)
        pi = np.eye(C) - 1.0 / C
        V = np.einsum("nci,ij,ndj->ncd", Jt, sigma, Jt)
        var = np.einsum("ce,ned,dc->nc", pi, V, pi)
        ref = softmax(logits(theta, at) / np.sqrt(1 + math.pi / 8 * var))
        probs, v = la.probit(net, xt, variances=True)
        np.testing.assert_allclose(v, var, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(probs, ref, atol=1e-5)
        # the built network's factor and the predictor on it
        post = la.build(net)
        S = post.layer(2).get_factor().astype(np.float64).reshape(P, P)
        np.testing.assert_allclose(S @ S.T, sigma, atol=1e-5 * np.abs(sigma).max())
        pred = ibvi.Predictor(post, samples=3000, seed=1)
        mc = pred.run(xt, uncertainty=False).probs
        # against numpy's Monte Carlo of the same Gaussian (the probit is
        # an approximation of it, not equal)
        rng = np.random.default_rng(0)
        thetas = rng.multivariate_normal(theta, sigma, size=20000)
        ref_mc = np.mean([softmax(logits(t, at)) for t in thetas], axis=0)
        np.testing.assert_allclose(mc, ref_mc, atol=0.03)
        self.assertLess(np.abs(ref_mc - probs).max(), 0.15)
        np.testing.assert_allclose(la.probit(post, xt), probs, atol=0)
        pred.close()
        post.close()
        la.close()

    def test_marglik_and_validation(self):
        net, x, y = setup(5)
        la = ibvi.Laplace.fit(net, x, y)
        lmb = la.prior_precision
        best = la.log_marglik
        for f in (1.05, 3.0):
            self.assertLess(la.log_marglik_at(lmb * f), best)
            self.assertLess(la.log_marglik_at(lmb / f), best)
        lv = ibvi.Laplace.fit(net, x, y, prior="validation", x_val=x[:20],
                              labels_val=y[:20], lambda_range=(0.01, 100),
                              grid_points=5)
        grid = np.exp(np.linspace(math.log(0.01), math.log(100), 5))
        self.assertTrue(np.any(np.abs(np.log(grid) - math.log(lv.prior_precision)) < 1e-5))


class Kfac(unittest.TestCase):
    def test_factors(self):
        net, x, y = setup(7)
        la = ibvi.Laplace.fit(net, x, y, structure="kfac", prior="fixed",
                              prior_precision=2.0)
        a, theta = features(net, x), last_theta(net)
        p = softmax(logits(theta, a))
        G = (np.einsum("nc,cd->cd", p, np.eye(C)) - p.T @ p) / N
        ab = np.hstack([a, np.ones((N, 1))])
        A = ab.T @ ab
        K = np.kron(G, A)  # augmented order (c, i), i = HID the bias
        perm = [c * HID + i if i < HID else C * HID + c
                for c in range(C) for i in range(HID + 1)]
        Kt = np.zeros_like(K)
        Kt[np.ix_(perm, perm)] = K
        np.testing.assert_allclose(la.hessian(), Kt, atol=1e-5 * np.abs(K).max())
        post = la.build(net)
        P = la.param_count
        S = post.layer(2).get_factor().astype(np.float64).reshape(P, P)
        sigma = np.linalg.inv(Kt + 2.0 * np.eye(P))
        np.testing.assert_allclose(S @ S.T, sigma, atol=1e-5 * np.abs(sigma).max())


class Errors(unittest.TestCase):
    def test_refusals(self):
        net, x, y = setup()
        with self.assertRaises(ibvi.OutOfMemory) as cm:
            ibvi.Laplace.fit(net, x, y, max_bytes=100)
        self.assertIn("KFAC", str(cm.exception))
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Laplace.fit(net, x, np.full(N, C, np.int32))
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Laplace.fit(net, x, y, structure="diagonal")
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Laplace.fit(net, x, y, prior="validation")
        with self.assertRaises(ibvi.ShapeError):
            ibvi.Laplace.fit(net, x, y[:5])
        la = ibvi.Laplace.fit(net, x, y)
        other = net.like().init("sp", seed=99)
        with self.assertRaises(ibvi.StateError):
            la.probit(other, x)
        with self.assertRaises(ibvi.StateError):
            la.build(other)
        la.close()
        with self.assertRaises(ibvi.StateError):
            la.prior_precision
        with self.assertRaises(TypeError):
            ibvi.Laplace()


if __name__ == "__main__":
    unittest.main()

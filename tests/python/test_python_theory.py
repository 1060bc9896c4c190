"""The implicit-bias theory of docs/theory.md from Python: an
overparameterised linear model trained by SGD on the expected squared loss
keeps P_N mu and P_N S fixed at every step and converges to the closed form

    mu* = mu0 + X~^T (X~ X~^T)^-1 (y - X~ mu0),   S* = P_N S0,

where X~ = [X, 1] (the dense layer has a bias) and P_N = I - X~^T (X~ X~^T)^-1 X~.
"""
import unittest

import numpy as np

import ibvi

N, D, R = 6, 12, 3   # N < P = D + 1


def problem(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    xt = np.hstack([x.astype(np.float64), np.ones((N, 1))])
    gram_inv = np.linalg.inv(xt @ xt.T)
    pn = np.eye(D + 1) - xt.T @ gram_inv @ xt
    return x, y, xt, gram_inv, pn


def state(net):
    layer = net.layer(0)
    return layer.mean.astype(np.float64), layer.factor.astype(np.float64)


class LinearTheory(unittest.TestCase):
    def run_case(self, seed, steps, lr, momentum=0.0, nesterov=False, batch=N,
                 samples=1, param="sp"):
        x, y, xt, gram_inv, pn = problem(seed)
        net = ibvi.Net(D).add_dense(1, R).init(param, seed=100 + seed)
        self.assertEqual(net.layer(0).role, ibvi.Role.SINGLE)
        self.assertEqual(net.layer(0).lr_multipliers("sgd"), (1.0, 1.0))
        opt = ibvi.Optimizer.sgd(net, lr, momentum=momentum, nesterov=nesterov)
        mu0, s0 = state(net)
        scale = max(1.0, np.abs(mu0).max())
        worst = 0.0
        for step in range(steps):
            first = (step * batch) % N
            rows = np.arange(first, first + batch) % N
            opt.train_step(x[rows], targets=y[rows], samples=samples)
            if step % 50 == 0 or step == steps - 1:
                mu, s = state(net)
                worst = max(worst, np.abs(pn @ (mu - mu0)).max(),
                            np.abs(pn @ (s - s0)).max())
        self.assertLess(worst / scale, 2e-5, "null-space invariants broken")
        mu, s = state(net)
        mu_star = mu0 + xt.T @ gram_inv @ (y[:, 0] - xt @ mu0)
        s_star = pn @ s0
        np.testing.assert_allclose(mu, mu_star, atol=2e-4 * scale)
        np.testing.assert_allclose(s, s_star, atol=2e-4 * scale)
        # exact fit with zero variance at the training points ...
        np.testing.assert_allclose(xt @ mu, y[:, 0], atol=2e-4 * scale)
        out = net.forward(x, samples=8).reshape(8, N)
        np.testing.assert_allclose(out, np.broadcast_to(y[:, 0], (8, N)), atol=5e-4 * scale)
        # ... and the prior's variance ||S*^T x~||^2 at a test point
        xtest = np.random.default_rng(seed + 50).normal(size=(1, D)).astype(np.float32)
        xtt = np.append(xtest[0].astype(np.float64), 1.0)
        z = np.random.default_rng(seed + 60).normal(size=(4000, R)).astype(np.float32)
        samples_out = net.forward_noise(xtest, z)[:, 0].astype(np.float64)
        var = np.sum((s_star.T @ xtt) ** 2)
        self.assertGreater(var, 1e-3)
        self.assertAlmostEqual(samples_out.var() / var, 1.0, delta=0.1)
        return net

    def test_full_batch_gd(self):
        self.run_case(seed=1, steps=4000, lr=0.05)

    def test_momentum_nesterov_minibatches_and_samples(self):
        self.run_case(seed=2, steps=4000, lr=0.01, momentum=0.9, nesterov=True,
                      batch=2, samples=3)

    def test_mup_single_layer_is_sp_like(self):
        self.run_case(seed=3, steps=4000, lr=0.02, momentum=0.5, param="mup")

    def test_invariants_hold_for_logistic_loss(self):
        x, _, xt, _, pn = problem(4)
        labels = (x[:, :1] > 0).astype(np.float32)
        net = ibvi.Net(D).add_dense(1, R).init("sp", seed=7)
        opt = ibvi.Optimizer.sgd(net, 0.1, momentum=0.9)
        mu0, s0 = state(net)
        for _ in range(500):
            opt.train_step(x, targets=labels, loss=ibvi.LossKind.BINARY_XENT)
        mu, s = state(net)
        self.assertGreater(np.abs(mu - mu0).max(), 0.1)  # it did move
        np.testing.assert_allclose(pn @ mu, pn @ mu0, atol=2e-5)
        np.testing.assert_allclose(pn @ s, pn @ s0, atol=2e-5)


if __name__ == "__main__":
    unittest.main()

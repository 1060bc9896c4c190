"""SWAG from Python (ibvi.Swag, docs/swag.md): the built network's mean, d
and S against numpy from the stored snapshots (the ring keeps the last
`rank` columns), its weight samples' covariance against the paper's
closed form, predictor and to_bytes round trip, and the refusals."""
import unittest

import numpy as np

import ibvi

rng = np.random.default_rng(5)


def source(seed=2):
    return (ibvi.Net(3).add_dense(4).add_activation("tanh").add_dense(3)
            .init("mup", seed))


def perturb(net, base, scale):
    """Sets every mean to base + scale N(0, 1); returns the flat snapshot."""
    snap, e = [], 0
    for i in range(net.layer_count):
        layer = net.layer(i)
        p = layer.param_count
        if p == 0:
            continue
        theta = (base[e:e + p] + scale * rng.standard_normal(p)).astype(np.float32)
        layer.set_mean(theta)
        snap.append(theta)
        e += p
    return np.concatenate(snap)


def means(net):
    return np.concatenate([net.layer(i).get_mean() for i in range(net.layer_count)
                           if net.layer(i).param_count])


class Moments(unittest.TestCase):
    def test_against_numpy(self):
        net = source()
        base = means(net).astype(np.float64)
        swag = ibvi.Swag(net, rank=3)
        self.assertEqual((swag.rank, swag.count, len(swag)), (3, 0, 0))
        snaps = []
        for _ in range(7):
            snaps.append(perturb(net, base, 0.3))
            swag.collect(net)
        self.assertEqual(swag.count, 7)
        snaps = np.array(snaps, np.float64)
        post = swag.build()
        K = 3
        mean = snaps.mean(0)
        std = np.sqrt(np.maximum((snaps ** 2).mean(0) - mean ** 2, 0))
        running = np.cumsum(snaps, 0) / np.arange(1, 8)[:, None]
        dev = (snaps - running)[-K:]          # the last K columns, oldest first
        e = 0
        for i in range(post.layer_count):
            layer = post.layer(i)
            p = layer.param_count
            if p == 0:
                self.assertEqual(layer.covariance, ibvi.Covariance.NONE)
                continue
            self.assertEqual(layer.covariance, ibvi.Covariance.DIAG_LOWRANK)
            self.assertEqual(layer.rank, K)
            np.testing.assert_allclose(layer.get_mean(), mean[e:e + p], rtol=1e-6,
                                       atol=1e-6)
            np.testing.assert_allclose(layer.diag, std[e:e + p] / np.sqrt(2),
                                       rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(layer.get_factor(),
                                       dev[:, e:e + p].T / np.sqrt(2 * (K - 1)),
                                       rtol=1e-5, atol=1e-6)
            e += p
        for h in (post, swag, net):
            h.close()

    def test_sampling_covariance(self):
        """Weight samples of dense 2 -> 2 (P = 6) read off its outputs: their
        covariance is 0.5 diag(var) + D D^T / (2 (K - 1)) (stds near 0.3, so
        a variance in place of the std would be far off)."""
        net = ibvi.Net(2).add_dense(2).init("sp", 4)
        base = means(net).astype(np.float64)
        swag = ibvi.Swag(net, rank=4)
        snaps = []
        for _ in range(10):
            snaps.append(perturb(net, base, 0.3))
            swag.collect(net)
        snaps = np.array(snaps, np.float64)
        mean = snaps.mean(0)
        var = (snaps ** 2).mean(0) - mean ** 2
        running = np.cumsum(snaps, 0) / np.arange(1, 11)[:, None]
        dev = (snaps - running)[-4:]
        sigma = 0.5 * np.diag(var) + dev.T @ dev / (2 * 3)
        post = swag.build()
        M = 30000
        x = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
        out = post.forward(x, samples=M).reshape(M, 3, 2).astype(np.float64)
        b = out[:, 0, :]
        w = np.stack([out[:, 1, 0] - b[:, 0], out[:, 2, 0] - b[:, 0],
                      out[:, 1, 1] - b[:, 1], out[:, 2, 1] - b[:, 1]], 1)
        theta = np.concatenate([w, b], 1)     # [W row-major; b]
        cov = np.cov(theta, rowvar=False, bias=True)
        se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma ** 2) / M)
        self.assertLess(np.max(np.abs(cov - sigma) / se), 5.0)
        buggy = 0.5 * np.diag(var ** 2) + dev.T @ dev / 6
        self.assertGreater(np.max(np.abs(buggy - sigma) / se), 20.0)
        post.close()
        swag.close()
        net.close()


class PredictAndIO(unittest.TestCase):
    def test_predictor_and_bytes(self):
        net = ibvi.Net.image(1, 5, 5).add_conv2d(2, 3, padding=1) \
            .add_groupnorm(1).add_activation("relu").add_flatten() \
            .add_dense(3).init("mup", 3)
        base = means(net).astype(np.float64)
        swag = ibvi.Swag(net, rank=4)
        for _ in range(5):
            perturb(net, base, 0.2)
            swag.collect(net)
        post = swag.build()
        swag.close()    # the built network does not need the collector
        self.assertEqual([post.layer(i).covariance for i in (0, 1, 4)],
                         [ibvi.Covariance.DIAG_LOWRANK] * 3)
        x = rng.standard_normal((4, 25)).astype(np.float32)
        p1 = ibvi.Predictor(post, samples=8, seed=9).run(x).probs
        back = ibvi.Net.from_bytes(post.to_bytes())
        p2 = ibvi.Predictor(back, samples=8, seed=9).run(x).probs
        np.testing.assert_array_equal(p1, p2)
        self.assertEqual(post.to_bytes(), back.to_bytes())
        mean_probs = ibvi.Predictor(post, samples=1, seed=9)
        mean_probs.mean_network = True
        self.assertGreater(np.abs(mean_probs.run(x).probs - p1).sum(), 1e-4)
        for h in (mean_probs, back, post, net):
            h.close()


class Refusals(unittest.TestCase):
    def test_errors(self):
        net = source()
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Swag(net, rank=1)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.Swag("net")
        with self.assertRaises(ibvi.StateError):
            ibvi.Swag(ibvi.Net(3).add_dense(2, rank=1).init("sp", 1))
        swag = ibvi.Swag(net)
        with self.assertRaises(ibvi.StateError) as cm:
            swag.build()
        self.assertIn("at least 2", cm.exception.message)
        swag.collect(net)
        with self.assertRaises(ibvi.ShapeError):
            swag.collect(ibvi.Net(3).add_dense(5).init("sp", 1))
        self.assertEqual(swag.count, 1)
        swag.collect(net)
        post = swag.build()
        with self.assertRaises(ibvi.UnsupportedError) as cm:
            ibvi.Optimizer(post, "sgd", lr=0.1)
        self.assertIn("SWAG", cm.exception.message)
        d = post.layer(0).diag
        d[0] = -1.0
        with self.assertRaises(ibvi.InvalidArgument):
            post.layer(0).diag = d
        with self.assertRaises(ibvi.InvalidArgument):
            net.layer(0).get_diag()
        swag.close()
        with self.assertRaises(ibvi.StateError):
            swag.count
        post.close()
        net.close()


if __name__ == "__main__":
    unittest.main()

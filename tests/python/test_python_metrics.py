"""The metrics of issue 12 through the binding, each against a naive numpy
computation of its definition (docs/metrics.md) on random data with many
ties, for several seeds: adaptive ECE, AURC and the risk-coverage curve of
the accumulator (also: streamed = merged = all at once, bit for bit), the
OOD metrics (AUROC, AUPR-in, AUPR-out, FPR at TPR) and the regression
metrics (RMSE, Gaussian NLL, coverage, calibration error, CRPS, the normal
quantile)."""
import math
import statistics
import unittest

import numpy as np

import ibvi

SEEDS = (1, 2, 3, 17, 2024)


def classification_data(rng, n, classes, grid):
    """Probabilities whose top value lies on a grid of `grid` values (many
    tied confidences), labels right about half the time."""
    top = rng.integers(0, classes, n)
    conf = 0.5 + 0.45 * rng.integers(0, grid, n) / max(grid - 1, 1)
    p = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, 1)
    p[np.arange(n), top] = conf
    p = p.astype(np.float32)
    y = np.where(rng.random(n) < 0.6, top, rng.integers(0, classes, n))
    return p, y.astype(np.int32)


def naive_points(p, y):
    pd = p.astype(np.float64)
    return pd.max(1), (pd.argmax(1) == y).astype(np.float64)


def naive_ece_adaptive(conf, hit, bins):
    order = np.lexsort((hit, conf))  # by confidence, then misses first
    c, h = conf[order], hit[order]
    n = len(c)
    edges = (np.arange(bins + 1) * n) // bins
    return sum(abs(h[a:b].sum() - c[a:b].sum()) for a, b in zip(edges, edges[1:])) / n


def naive_expected_errors(conf, hit):
    """E[k], k = 0..N: expected errors among the k most confident points
    when tied points come in a random order."""
    c = np.sort(conf)[::-1]
    err = 1.0 - hit
    e = [0.0]
    for k in range(1, len(c) + 1):
        t = c[k - 1]
        above = conf > t
        tied = conf == t
        e.append(err[above].sum() + (k - above.sum()) * err[tied].mean())
    return np.array(e)


def naive_ood(ins, outs, tpr=0.95):
    ins = ins.astype(np.float64)
    outs = outs.astype(np.float64)
    auroc = ((outs[None, :] > ins[:, None]) +
             0.5 * (outs[None, :] == ins[:, None])).mean()

    def ap(pos, neg):
        ap, r_prev = 0.0, 0.0
        for t in np.unique(np.concatenate([pos, neg]))[::-1]:
            tp, fp = (pos >= t).sum(), (neg >= t).sum()
            r = tp / len(pos)
            if tp:
                ap += (r - r_prev) * tp / (tp + fp)
            r_prev = r
        return ap

    fpr = None
    for t in np.unique(np.concatenate([ins, outs]))[::-1]:
        if (outs >= t).sum() / len(outs) >= tpr:
            fpr = (ins >= t).sum() / len(ins)
            break
    return auroc, ap(-ins, -outs), ap(outs, ins), fpr


class Classification(unittest.TestCase):
    def test_against_numpy(self):
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            n = int(rng.integers(50, 700))
            p, y = classification_data(rng, n, 4, int(rng.choice([3, 20, 10**6])))
            conf, hit = naive_points(p, y)
            m = ibvi.Metrics(4)
            m.add(p, y)
            for bins in (1, 5, 15, n, 10 * n):
                self.assertAlmostEqual(m.ece_adaptive(bins),
                                       naive_ece_adaptive(conf, hit, bins),
                                       places=12, msg=(seed, bins))
            e = naive_expected_errors(conf, hit)
            k = np.arange(1, n + 1)
            self.assertAlmostEqual(m.aurc, np.mean(e[1:] / k), places=12, msg=seed)
            cov = np.sort(rng.random(40)) * 0.99 + 0.01
            cov[-1] = 1.0
            want = np.interp(cov * n, np.arange(n + 1), e) / (cov * n)
            np.testing.assert_allclose(m.risk_coverage(cov), want, rtol=0, atol=1e-12)
            self.assertAlmostEqual(m.risk_coverage([1.0])[0], 1 - m.accuracy, places=14)

    def test_streamed_merged_and_whole_agree_bit_for_bit(self):
        rng = np.random.default_rng(5)
        p, y = classification_data(rng, 1000, 3, 7)
        whole = ibvi.Metrics(3)
        whole.add(p, y)
        a, b = ibvi.Metrics(3), ibvi.Metrics(3)
        cuts = np.sort(rng.choice(np.arange(1, 1000), 20, replace=False))
        for i, (lo, hi) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, 1000])):
            (a if i % 2 else b).add(p[lo:hi], y[lo:hi])
        b.merge(a)
        cov = np.linspace(0.01, 1, 100)
        for bins in (1, 15, 1000):
            self.assertEqual(b.ece_adaptive(bins), whole.ece_adaptive(bins))
        self.assertEqual(b.aurc, whole.aurc)
        self.assertTrue(np.array_equal(b.risk_coverage(cov), whole.risk_coverage(cov)))

    def test_errors(self):
        m = ibvi.Metrics(2)
        with self.assertRaises(ibvi.StateError):
            m.aurc
        m.add(np.array([[0.9, 0.1]], np.float32), [0])
        with self.assertRaises(ibvi.InvalidArgument):
            m.ece_adaptive(0)
        with self.assertRaises(ibvi.InvalidArgument):
            m.risk_coverage([0.5, 0.2])
        with self.assertRaises(ibvi.NonFiniteError):
            m.risk_coverage([float("nan")])


class OOD(unittest.TestCase):
    def test_against_numpy(self):
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            for grid in (4, 30, 10**7):
                n_in, n_out = rng.integers(1, 400, 2)
                ins = (rng.integers(0, grid, n_in) / grid).astype(np.float32)
                outs = (0.3 + rng.integers(0, grid, n_out) / grid).astype(np.float32)
                auroc, ai, ao, fpr = naive_ood(ins, outs)
                msg = (seed, grid)
                self.assertAlmostEqual(ibvi.auroc(ins, outs), auroc, places=14, msg=msg)
                self.assertAlmostEqual(ibvi.aupr_in(ins, outs), ai, places=12, msg=msg)
                self.assertAlmostEqual(ibvi.aupr_out(ins, outs), ao, places=12, msg=msg)
                self.assertAlmostEqual(ibvi.fpr_at_tpr(ins, outs), fpr, places=14, msg=msg)
                for t in (0.5, 0.8, 1.0):
                    self.assertAlmostEqual(ibvi.fpr_at_tpr(ins, outs, t),
                                           naive_ood(ins, outs, t)[3], places=14)

    def test_scores_of_entropy_family(self):
        """Any score works: max probability (negated), entropy, MI."""
        rng = np.random.default_rng(11)
        p_in = rng.dirichlet([0.3] * 5, 200).astype(np.float32)
        p_out = rng.dirichlet([3.0] * 5, 150).astype(np.float32)
        for s_in, s_out in ((-p_in.max(1), -p_out.max(1)),
                            (ibvi.entropy(p_in), ibvi.entropy(p_out))):
            auroc, ai, ao, fpr = naive_ood(s_in, s_out)
            self.assertAlmostEqual(ibvi.aupr_out(s_in, s_out), ao, places=12)
            self.assertAlmostEqual(ibvi.aupr_in(s_in, s_out), ai, places=12)
            self.assertAlmostEqual(ibvi.fpr_at_tpr(s_in, s_out), fpr, places=14)
            self.assertGreater(auroc, 0.8)

    def test_allocator(self):
        a = ibvi.CountingAllocator()
        ins, outs = np.array([0.1, 0.4], np.float32), np.array([0.35, 0.8], np.float32)
        self.assertEqual(ibvi.auroc(ins, outs, allocator=a), 0.75)
        self.assertAlmostEqual(ibvi.aupr_out(ins, outs, a), 5 / 6, places=15)
        self.assertAlmostEqual(ibvi.aupr_in(ins, outs, a), 5 / 6, places=15)
        self.assertEqual(ibvi.fpr_at_tpr(ins, outs, 0.95, a), 0.5)
        self.assertEqual(a.allocations, 4)
        self.assertEqual(a.live, 0)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.fpr_at_tpr(ins, outs, 0.0)
        with self.assertRaises(ibvi.NonFiniteError):
            ibvi.aupr_in([float("nan")], outs)


class Regression(unittest.TestCase):
    def test_against_numpy(self):
        nd = statistics.NormalDist()
        erf = np.vectorize(math.erf)
        levels = np.array([0.1, 0.5, 0.9, 0.95, 0.99])
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            n = int(rng.integers(1, 3000))
            mean = rng.normal(size=n).astype(np.float32)
            var = rng.uniform(0.05, 4, n).astype(np.float32)
            y = (mean + rng.normal(size=n) * np.sqrt(var) * 1.3).astype(np.float32)
            m, v, t = (a.astype(np.float64) for a in (mean, var, y))
            self.assertAlmostEqual(ibvi.regression_rmse(mean, y),
                                   np.sqrt(np.mean((t - m) ** 2)), places=12)
            self.assertAlmostEqual(ibvi.regression_nll(mean, var, y),
                                   np.mean(0.5 * np.log(2 * np.pi * v) + (t - m) ** 2 / (2 * v)),
                                   places=12)
            s = np.sqrt(v)
            z = (t - m) / s
            crps = s * (z * erf(z / np.sqrt(2)) + 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
                        - 1 / np.sqrt(np.pi))
            self.assertAlmostEqual(ibvi.regression_crps(mean, var, y), crps.mean(), places=12)
            q = np.array([nd.inv_cdf((1 + l) / 2) for l in levels])
            cov = (np.abs(t - m)[None, :] <= q[:, None] * s[None, :]).mean(1)
            np.testing.assert_array_equal(ibvi.regression_coverage(mean, var, y, levels), cov)
            self.assertAlmostEqual(ibvi.regression_calibration_error(mean, var, y, levels),
                                   np.mean(np.abs(cov - levels)), places=14)
            # shapes other than 1-D are flattened
            self.assertEqual(ibvi.regression_rmse(mean[: n - n % 2].reshape(-1, 1),
                                                  y[: n - n % 2].reshape(-1, 1)),
                             ibvi.regression_rmse(mean[: n - n % 2], y[: n - n % 2]))

    def test_normal_quantile(self):
        nd = statistics.NormalDist()
        for p in (1e-300, 1e-12, 0.001, 0.025, 0.3, 0.5 - 2**-40, 0.5, 0.5 + 2**-30,
                  0.7, 0.975, 0.999999):
            self.assertAlmostEqual(ibvi.normal_quantile(p), nd.inv_cdf(p),
                                   delta=4e-15 * abs(nd.inv_cdf(p)) + 1e-300)
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.normal_quantile(1.0)

    def test_errors(self):
        with self.assertRaises(ibvi.ShapeError):
            ibvi.regression_nll([0, 1], [1, 1], [0])
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.regression_nll([0, 1], [1, 0], [0, 1])
        with self.assertRaises(ibvi.InvalidArgument):
            ibvi.regression_coverage([0], [1], [0], [0.5, 1.0])
        with self.assertRaises(ibvi.NonFiniteError):
            ibvi.regression_crps([np.inf], [1], [0])


if __name__ == "__main__":
    unittest.main()

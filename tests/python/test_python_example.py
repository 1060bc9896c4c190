"""python/examples/mnist_train.py prints the C example's table.

Runs examples/mnist_train (path in IBVI_MNIST_TRAIN) and the Python example
with the same small configuration on real Fashion-MNIST (the source tree's
data/ if examples/prepare_data.sh made it, else Debian's
dataset-fashion-mnist) and requires the two tables to be identical except
for the training-time column: the metrics, the OOD AUROC, AUPR and FPR95
and the eight
corruptions, to the last printed digit; and that both report diverged
runs (docs/concepts.md, "Learning rates and divergence") alike.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("IBVI_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
EXAMPLE = os.path.join(ROOT, "python", "examples", "mnist_train.py")
DEBIAN = "/usr/share/datasets/fashion-mnist"


def data_dirs():
    fashion = os.path.join(ROOT, "data", "fashion")
    mnist = os.path.join(ROOT, "data", "mnist")
    name = "t10k-images-idx3-ubyte.gz"
    if os.path.exists(os.path.join(fashion, name)):
        ood = mnist if os.path.exists(os.path.join(mnist, name)) else fashion
        return fashion, ood
    if os.path.exists(os.path.join(DEBIAN, name)):
        return DEBIAN, DEBIAN
    return None, None


def without_time(table):
    """The table with the last column (train s) cut off."""
    return [line.rsplit("|", 1)[0] if line.count("|") == 2 else line
            for line in table.splitlines()]


class Example(unittest.TestCase):
    def run_both(self, exe, options):
        """Runs the C program and the Python example with the same options;
        returns both processes (stdout, stderr) and both JSON reports."""
        with tempfile.TemporaryDirectory() as tmp:
            c = subprocess.run([exe] + options + ["--json", os.path.join(tmp, "c.json")],
                               capture_output=True, text=True)
            self.assertEqual(c.returncode, 0, c.stderr)
            py = subprocess.run([sys.executable, EXAMPLE] + options +
                                ["--json", os.path.join(tmp, "py.json")],
                                capture_output=True, text=True)
            self.assertEqual(py.returncode, 0, py.stderr)
            with open(os.path.join(tmp, "c.json")) as f:
                cj = json.load(f)
            with open(os.path.join(tmp, "py.json")) as f:
                pj = json.load(f)
        return c, py, cj, pj

    def test_python_table_equals_c_table(self):
        exe = os.environ.get("IBVI_MNIST_TRAIN")
        if not exe:
            self.skipTest("IBVI_MNIST_TRAIN is not set")
        data, ood = data_dirs()
        if data is None:
            self.skipTest("no Fashion-MNIST (examples/prepare_data.sh data, or "
                          "apt-get install dataset-fashion-mnist)")
        options = ["--data", data, "--ood", ood, "--train-limit", "1500",
                   "--test-limit", "4000", "--lr", "0.05",
                   "--epochs", "2", "--width", "48,32", "--rank", "3",
                   "--test-samples", "4", "--threads", "1", "--no-progress",
                   "--methods", "standard,ibvi,temp,ensemble,mfvi", "--ensemble", "2"]
        c, py, cj, pj = self.run_both(exe, options)
        print(c.stdout)
        self.assertIn("OOD AUROC", c.stdout)
        self.assertIn("AUPR-out", c.stdout)
        self.assertIn("impulse_noise", c.stdout)
        self.assertEqual(without_time(py.stdout), without_time(c.stdout))
        # The JSON reports agree too (full precision, %.6f in C).
        self.assertEqual([m["name"] for m in pj["methods"]],
                         [m["name"] for m in cj["methods"]])
        for pm, cm in zip(pj["methods"], cj["methods"]):
            self.assertIsNotNone(cm["ood_auroc"])
            for key in ("accuracy", "nll", "ece", "mce", "brier", "ood_auroc",
                        "aupr_in", "aupr_out", "fpr95", "aurc", "ece_adaptive",
                        "temperature"):
                self.assertIsNotNone(cm[key], (cm["name"], key))
                self.assertAlmostEqual(pm[key], cm[key], places=6, msg=(pm["name"], key))
            self.assertEqual(pm["reliability"]["counts"], cm["reliability"]["counts"])
            self.assertEqual(sorted(pm["corruptions"]), sorted(cm["corruptions"]))
        self.assertEqual(pj["config"], cj["config"])
        for m in cj["methods"]:
            self.assertIs(m["diverged"], False, m["name"])

    def test_swag_and_laplace_tables_equal_c(self):
        """The baselines built from the standard network (SWAG, the Laplace
        posterior sampled and its probit) print the C table too, with the
        same model sizes."""
        exe = os.environ.get("IBVI_MNIST_TRAIN")
        if not exe:
            self.skipTest("IBVI_MNIST_TRAIN is not set")
        data, ood = data_dirs()
        if data is None:
            self.skipTest("no Fashion-MNIST")
        options = ["--data", data, "--ood", ood, "--train-limit", "1500",
                   "--test-limit", "1000", "--lr", "0.05", "--epochs", "2",
                   "--width", "48,32", "--test-samples", "4", "--threads", "1",
                   "--no-progress", "--no-corruptions", "--methods",
                   "standard,swag,laplace,laplace-probit", "--swag-epochs", "1",
                   "--swag-rank", "5"]
        c, py, cj, pj = self.run_both(exe, options)
        self.assertEqual(without_time(py.stdout), without_time(c.stdout))
        self.assertEqual([m["name"] for m in cj["methods"]],
                         ["standard", "swag", "laplace", "laplace-probit"])
        for pm, cm in zip(pj["methods"], cj["methods"]):
            self.assertIs(cm["diverged"], False, cm["name"])
            self.assertEqual(pm["model_floats"], cm["model_floats"], cm["name"])
            for key in ("accuracy", "nll", "ece", "ood_auroc", "fpr95"):
                self.assertAlmostEqual(pm[key], cm[key], places=6,
                                       msg=(pm["name"], key))

    def test_diverged_runs_reported_alike(self):
        """At lr 2.0 both programs find every network diverged, for the same
        reason, and report it identically (table and JSON)."""
        exe = os.environ.get("IBVI_MNIST_TRAIN")
        if not exe:
            self.skipTest("IBVI_MNIST_TRAIN is not set")
        data, _ = data_dirs()
        if data is None:
            self.skipTest("no Fashion-MNIST")
        options = ["--data", data, "--train-limit", "1500", "--test-limit", "500",
                   "--lr", "2.0", "--epochs", "2", "--width", "48,32", "--rank", "3",
                   "--test-samples", "4", "--threads", "1", "--no-progress",
                   "--no-corruptions", "--methods", "standard,ibvi,temp,ensemble",
                   "--ensemble", "2"]
        c, py, cj, pj = self.run_both(exe, options)
        print(c.stdout)
        self.assertEqual(py.stdout, c.stdout)
        self.assertIn("ibvi diverged (epoch 1: ", c.stderr)
        self.assertIn("ibvi diverged (epoch 1: ", py.stderr)
        self.assertEqual(len(cj["methods"]), 4)
        for pm, cm in zip(pj["methods"], cj["methods"]):
            self.assertIs(cm["diverged"], True, cm["name"])
            del pm["train_seconds"], cm["train_seconds"]
            self.assertEqual(pm, cm)


if __name__ == "__main__":
    unittest.main()

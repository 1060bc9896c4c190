"""Predictive averaging over K weight samples, ensembles (predictor.h)."""

import collections
from ctypes import byref, c_void_p

import numpy as np

from . import _util
from ._errors import InvalidArgument, binding_error
from ._lib import lib
from ._util import Handle, Resource, fp

Prediction = collections.namedtuple(
    "Prediction", "probs predictive_entropy expected_entropy mutual_information")
Prediction.__doc__ = """The result of Predictor.run(): probs (n, classes), the
average of the K sampled softmax outputs, and three (n,) arrays (None when
not requested): the predictive entropy H[p], the expected entropy
(1/K) sum_k H[p_k] and the mutual information (their difference, the
epistemic part). Natural logarithms."""


class Predictor(Handle):
    """A predictor (ibvi_predictor): averages the probabilities of K weight
    samples drawn once, at creation, with `seed`.

    ``Predictor(net, samples, seed)`` for one network; ``Predictor([net1,
    net2, ...], samples, seed)`` (or ``Predictor.ensemble``) for a deep
    ensemble of networks with the same architecture. The predictor reads the
    networks' current parameters at each run and keeps the networks alive;
    closing any of them closes the predictor first (see Net)."""

    _what = "predictor"

    def __init__(self, nets, samples=1, seed=0):
        from ._net import Net
        out = c_void_p()
        if isinstance(nets, Net):
            nets = (nets,)
            lib.ibvi_predictor_create(byref(out), nets[0]._h(), samples, seed)
        else:
            nets = tuple(nets)
            for net in nets:
                if not isinstance(net, Net):
                    raise binding_error(InvalidArgument, "Predictor",
                                        "nets must be ibvi.Net objects")
            handles = (c_void_p * max(len(nets), 1))(*[n._h() for n in nets])
            lib.ibvi_predictor_create_ensemble(byref(out), handles, len(nets),
                                               samples, seed)
        self._nets = nets
        self._samples = samples
        self._res = Resource(out.value, lib.ibvi_predictor_free)
        for net in nets:
            net._attach(self._res)

    @classmethod
    def ensemble(cls, nets, samples=1, seed=0):
        """A predictor over a list of networks (ibvi_predictor_create_ensemble)."""
        return cls(list(nets), samples, seed)

    def close(self):
        res = self._res
        if res is not None:
            res.release()
            for net in getattr(self, "_nets", ()):
                net._detach(res)

    @property
    def nets(self):
        """The networks, as a tuple."""
        return self._nets

    def set_batch_size(self, batch):
        """Largest number of inputs processed at once (default 256)."""
        lib.ibvi_predictor_set_batch_size(self._h(), batch)

    def set_mean_network(self, on=True):
        """Use the mean network only (K = 1, z = 0), or the K samples."""
        lib.ibvi_predictor_set_mean_network(self._h(), 1 if on else 0)

    def set_temperature(self, temperature):
        """Divide every sample's logits by temperature (> 0) before softmax."""
        lib.ibvi_predictor_set_temperature(self._h(), temperature)

    @property
    def samples(self):
        """Weight samples a run averages per network (1 in mean-network mode)."""
        return int(lib.ibvi_predictor_samples(self._h()))

    def noise(self):
        """The predictor's weight-sample noise, (members, K, noise_size), as
        Net.forward_noise expects it (K as given at creation)."""
        h = self._h()
        z = np.empty((len(self._nets), self._samples, self._nets[0].noise_size),
                     dtype=np.float32)
        lib.ibvi_predictor_noise(h, fp(z), z.size)
        return z

    def run(self, x, uncertainty=True, out=None):
        """Predicts x (n, input_dim). Returns a Prediction; with
        uncertainty=False its three entropy arrays are None (and not
        computed). out: optional (n, classes) float32 array for probs."""
        h = self._h()
        net = self._nets[0]
        x = _util.rows(x, net.input_dim, "Predictor.run", "x")
        n = x.shape[0]
        probs = _util.out_array(out, (n, net.output_dim), "Predictor.run")
        if uncertainty:
            pe, ee, mi = (np.empty(n, dtype=np.float32) for _ in range(3))
        else:
            pe = ee = mi = None
        lib.ibvi_predictor_run(h, fp(x), n, fp(probs), fp(pe), fp(ee), fp(mi))
        return Prediction(probs, pe, ee, mi)

    def predict_proba(self, x, out=None):
        """The predictive probabilities only, (n, classes)."""
        return self.run(x, uncertainty=False, out=out).probs

    def __repr__(self):
        if self.closed:
            return "<ibvi.Predictor (closed)>"
        return "<ibvi.Predictor %d net(s), K=%d>" % (len(self._nets), self.samples)

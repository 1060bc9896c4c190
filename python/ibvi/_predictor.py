"""Predictive averaging over K weight samples, ensembles (predictor.h)."""

import collections
import ctypes
from ctypes import byref, c_float, c_int32, c_uint32, c_void_p

from . import _util
from ._errors import InvalidArgument, ShapeError, binding_error
from ._lib import lib
from ._util import Enum, Handle, Resource, as_enum, fp


class HeadKind(Enum):
    """ibvi_head_kind: what a predictor averages over its samples."""
    SOFTMAX = 0
    SIGMOID = 1
    REGRESSION = 2
    HETEROSCEDASTIC = 3


#: IBVI_HEAD_OPTIONS_VERSION of predictor.h (the ibvi_head_options layout).
HEAD_OPTIONS_VERSION = 1


class _HeadOptions(ctypes.Structure):
    """struct ibvi_head_options of predictor.h (version 1)."""
    _fields_ = [("version", c_uint32), ("kind", c_int32),
                ("noise_std", c_float)]

Prediction = collections.namedtuple(
    "Prediction", "probs predictive_entropy expected_entropy mutual_information")
Prediction.__doc__ = """The result of Predictor.run(): probs (n, classes), the
average of the K sampled softmax outputs (the sigmoid head: (n, 2), [1 - p,
p]), and three (n,) arrays (None when not requested): the predictive entropy
H[p], the expected entropy (1/K) sum_k H[p_k] and the mutual information
(their difference, the epistemic part). Natural logarithms."""


class Predictor(Handle):
    """A predictor (ibvi_predictor): averages the probabilities of K weight
    samples drawn once, at creation, with `seed`.

    ``Predictor(net, samples, seed)`` for one network; ``Predictor([net1,
    net2, ...], samples, seed)`` (or ``Predictor.ensemble``) for a deep
    ensemble of networks with the same architecture. The predictor reads the
    networks' current parameters at each run and keeps the networks alive;
    closing any of them closes the predictor first (see Net), after which
    its calls raise StateError.

    Threading: every call holds the locks of all the predictor's networks,
    taken in one fixed order (see Net), so runs of one predictor from
    several threads are serialised (the predictor's buffers are shared) and
    cannot interleave with training, another predictor or close() on those
    networks."""

    _what = "predictor"

    def __init__(self, nets, samples=1, seed=0):
        from ._net import Net
        fn = "Predictor"
        samples = _util.cint(samples, _util.INT32, fn, "samples")
        seed = _util.cint(seed, _util.UINT64, fn, "seed")
        single = isinstance(nets, Net)
        if single:
            nets = (nets,)
        else:
            try:
                nets = tuple(nets)
            except TypeError:
                nets = None
            if nets is None or not all(isinstance(n, Net) for n in nets):
                raise binding_error(InvalidArgument, fn, "nets must be an "
                                    "ibvi.Net or a sequence of them")
            _util.cint(len(nets), _util.INT32, fn, "count")
        self._nets = nets
        self._samples = samples
        self._lockset = _util.lock_order(nets)
        out = c_void_p()
        with _util.hold(*nets) as handles:
            if single:
                lib.ibvi_predictor_create(byref(out), handles[0], samples, seed)
            else:
                arr = (c_void_p * max(len(handles), 1))(*handles)
                lib.ibvi_predictor_create_ensemble(byref(out), arr, len(handles),
                                                   samples, seed)
            self._res = Resource(out.value, lib.ibvi_predictor_free)
            for net in nets:
                net._attach(self._res)

    @classmethod
    def ensemble(cls, nets, samples=1, seed=0):
        """A predictor over a list of networks (ibvi_predictor_create_ensemble)."""
        return cls(list(nets), samples, seed)

    def close(self):
        """Frees the predictor (after a call in progress has returned).
        Idempotent."""
        super().close()

    def _release(self):
        res = self._res
        res.release()
        for net in self._nets:
            net._detach(res)

    @property
    def nets(self):
        """The networks, as a tuple."""
        return self._nets

    def set_batch_size(self, batch):
        """Largest number of inputs processed at once (default 256)."""
        batch = _util.cint(batch, _util.INT64, "Predictor.set_batch_size", "batch")
        with self._use() as h:
            lib.ibvi_predictor_set_batch_size(h, batch)

    def set_mean_network(self, on=True):
        """Use the mean network only (K = 1, z = 0), or the K samples."""
        with self._use() as h:
            lib.ibvi_predictor_set_mean_network(h, 1 if on else 0)

    def set_head(self, kind, noise_std=0.0):
        """Selects what a run averages (ibvi_predictor_set_head): kind is an
        ibvi.HEAD_* value, a HeadKind or its name ("softmax", "sigmoid",
        "regression", "heteroscedastic"); noise_std (>= 0) is the
        regression head's homoscedastic sigma (see ibvi.fit_noise_std).
        Softmax and sigmoid heads predict with run(), regression heads with
        run_regression()."""
        fn = "Predictor.set_head"
        kind = as_enum(HeadKind, kind, fn, "kind")
        opts = _HeadOptions(HEAD_OPTIONS_VERSION, int(kind),
                            _util.cfloat(noise_std, fn, "noise_std"))
        with self._use() as h:
            lib.ibvi_predictor_set_head(h, byref(opts))

    @property
    def head(self):
        """The current head, a HeadKind."""
        with self._use() as h:
            return HeadKind(lib.ibvi_predictor_head(h))

    @property
    def output_dim(self):
        """Columns of a run's per-input results: the classes (softmax), 2
        (sigmoid), D (regression heads)."""
        with self._use() as h:
            return int(lib.ibvi_predictor_output_dim(h))

    def set_temperature(self, temperature):
        """Divide every sample's logits by temperature (> 0) before softmax."""
        t = _util.cfloat(temperature, "Predictor.set_temperature", "temperature")
        with self._use() as h:
            lib.ibvi_predictor_set_temperature(h, t)

    @property
    def samples(self):
        """Weight samples a run averages per network (1 in mean-network mode)."""
        with self._use() as h:
            return int(lib.ibvi_predictor_samples(h))

    def noise(self):
        """The predictor's weight-sample noise, (members, K, noise_size), as
        Net.forward_noise expects it (K as given at creation)."""
        with self._use() as h:
            z = _util.empty((len(self._nets), self._samples,
                             self._nets[0].noise_size), "Predictor.noise", "z")
            lib.ibvi_predictor_noise(h, fp(z), z.size)
        return z

    def run(self, x, uncertainty=True, out=None):
        """Predicts x (n, input_dim) or NCHW (n, *input_shape). Returns a Prediction; with
        uncertainty=False its three entropy arrays are None (and not
        computed). out: optional (n, classes) float32 array for probs."""
        fn = "Predictor.run"
        with self._use() as h:
            net = self._nets[0]
            x = net._rows(x, fn)
            n = x.shape[0]
            probs = _util.out_array(
                out, (n, int(lib.ibvi_predictor_output_dim(h))), fn)
            if uncertainty:
                pe, ee, mi = (_util.empty((n,), fn, "entropies") for _ in range(3))
            else:
                pe = ee = mi = None
            lib.ibvi_predictor_run(h, fp(x), n, fp(probs), fp(pe), fp(ee), fp(mi))
        return Prediction(probs, pe, ee, mi)

    def run_regression(self, x, samples=False):
        """Predicts x with a regression head (ibvi_predictor_run_regression).
        Returns a dict of (n, D) float32 arrays: mean, var_epistemic (the
        spread of the K sample means), var_aleatoric (noise_std^2 or the
        mean of the heteroscedastic variances) and var (their sum, the
        predictive variance); with samples=True also samples (K, n, D):
        every sample's means (K counts all members' samples)."""
        fn = "Predictor.run_regression"
        with self._use() as h:
            net = self._nets[0]
            x = net._rows(x, fn)
            n = x.shape[0]
            d = int(lib.ibvi_predictor_output_dim(h))
            mean, ve, va = (_util.empty((n, d), fn, "out") for _ in range(3))
            k = len(self._nets) * int(lib.ibvi_predictor_samples(h))
            raw = _util.empty((k, n, d), fn, "samples") if samples else None
            lib.ibvi_predictor_run_regression(h, fp(x), n, fp(mean), fp(ve),
                                              fp(va), fp(raw))
        return {"mean": mean, "var_epistemic": ve, "var_aleatoric": va,
                "var": ve + va, "samples": raw}

    def predict_proba(self, x, out=None):
        """The predictive probabilities only, (n, classes)."""
        return self.run(x, uncertainty=False, out=out).probs

    def __repr__(self):
        with _util.Hold(self._lockset):
            if self.closed:
                return "<ibvi.Predictor (closed)>"
            return "<ibvi.Predictor %d net(s), K=%d, %s head>" % (
                len(self._nets), self.samples, self.head.name.lower())


def fit_noise_std(mean, var_epistemic, targets):
    """The homoscedastic noise std sigma (ibvi_fit_noise_std, calibration.h)
    maximising the Gaussian likelihood of targets under N(mean,
    var_epistemic + sigma^2), fitted on held-out data; var_epistemic may be
    None (then sigma^2 is the mean squared residual, exactly). The arrays
    are (n, D) or (n,), all of one shape. Set it with
    Predictor.set_head(HEAD_REGRESSION, noise_std=sigma)."""
    fn = "fit_noise_std"
    m = _util.f32(mean, fn, "mean")
    t = _util.f32(targets, fn, "targets")
    if m.ndim == 1:
        m = m.reshape(-1, 1)
    if t.ndim == 1:
        t = t.reshape(-1, 1)
    if m.ndim != 2 or t.shape != m.shape:
        raise binding_error(ShapeError, fn, "mean %s and targets %s: expected "
                            "one shape (n, D)" % (m.shape, t.shape))
    v = None
    if var_epistemic is not None:
        v = _util.f32(var_epistemic, fn, "var_epistemic")
        if v.ndim == 1:
            v = v.reshape(-1, 1)
        if v.shape != m.shape:
            raise binding_error(ShapeError, fn, "var_epistemic has shape %s, "
                                "expected %s" % (v.shape, m.shape))
    n = _util.cint(m.shape[0], _util.INT64, fn, "n")
    d = _util.cint(m.shape[1], _util.INT32, fn, "dims")
    sigma = c_float()
    lib.ibvi_fit_noise_std(fp(m), fp(v), fp(t), n, d, byref(sigma))
    return sigma.value

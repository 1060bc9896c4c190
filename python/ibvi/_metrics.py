"""Uncertainty metrics (metrics.h) and temperature scaling (calibration.h)."""

import collections
from ctypes import byref, c_double, c_float, c_int64, c_void_p

import numpy as np

from . import _util
from ._alloc import allocator_arg
from ._errors import InvalidArgument, ShapeError, binding_error
from ._lib import lib
from ._util import D_PTR, I64_PTR, Handle, Resource, fp, ip

#: IBVI_METRICS_BINS: confidence bins of ECE, MCE and Metrics.bins().
METRICS_BINS = 15
#: IBVI_TEMPERATURE_MIN / MAX: the search interval of temperature_fit().
TEMPERATURE_MIN = 0.05
TEMPERATURE_MAX = 20.0

Bins = collections.namedtuple("Bins", "counts accuracy confidence")
Bins.__doc__ = """The reliability diagram: for each of the 15 bins, counts
(int64), accuracy and confidence (float64; 0 for empty bins)."""


class Metrics(Handle):
    """A streaming accumulator of classification metrics (ibvi_metrics):
    add() batches of predictive probabilities with their labels, then read
    accuracy, nll (nats), brier, ece, mce and bins(). Sums are exact, so the
    results do not depend on how the data was split or merged. The getters
    raise StateError while no point has been added."""

    _what = "metrics accumulator"

    def __init__(self, classes, allocator=None):
        classes = _util.cint(classes, _util.INT32, "Metrics", "classes")
        alloc = allocator_arg(allocator, "Metrics")
        out = c_void_p()
        lib.ibvi_metrics_create(byref(out), classes, alloc)
        self._classes = classes
        self._allocator = allocator
        self._lockset = (_util.new_lock(),)
        self._res = Resource(out.value, lib.ibvi_metrics_free)

    @property
    def classes(self):
        return self._classes

    def reset(self):
        """Forgets all data added so far."""
        with self._use() as h:
            lib.ibvi_metrics_reset(h)

    def add(self, probs, labels):
        """Adds n points: probs (n, classes) in [0, 1], labels n ints."""
        fn = "Metrics.add"
        probs = _util.rows(probs, self._classes, fn, "probs")
        labels = _util.i32(labels, fn, "labels")
        if labels.shape != (probs.shape[0],):
            raise binding_error(ShapeError, fn, "labels has shape %s, expected "
                                "(%d,)" % (labels.shape, probs.shape[0]))
        with self._use() as h:
            lib.ibvi_metrics_add(h, fp(probs), probs.shape[0], ip(labels))

    def merge(self, other):
        """Adds the data of `other` (same number of classes) to this one."""
        if not isinstance(other, Metrics):
            raise binding_error(InvalidArgument, "Metrics.merge", "other must be "
                                "an ibvi.Metrics, not %s" % type(other).__name__)
        with _util.hold(self, other) as (h, h_other):
            lib.ibvi_metrics_merge(h, h_other)

    @property
    def count(self):
        v = c_int64()
        with self._use() as h:
            lib.ibvi_metrics_count(h, byref(v))
        return v.value

    def __len__(self):
        return self.count

    def _double(self, fn):
        v = c_double()
        with self._use() as h:
            fn(h, byref(v))
        return v.value

    accuracy = property(lambda self: self._double(lib.ibvi_metrics_accuracy),
                        doc="mean of 1[argmax p = y]")
    nll = property(lambda self: self._double(lib.ibvi_metrics_nll),
                   doc="mean of -log max(p[y], 1e-12), nats")
    brier = property(lambda self: self._double(lib.ibvi_metrics_brier),
                     doc="mean of sum_c (p[c] - 1[c = y])^2")
    ece = property(lambda self: self._double(lib.ibvi_metrics_ece),
                   doc="expected calibration error, 15 bins")
    mce = property(lambda self: self._double(lib.ibvi_metrics_mce),
                   doc="maximum calibration error over non-empty bins")

    def bins(self):
        """Bins(counts, accuracy, confidence), 15 each."""
        counts = np.zeros(METRICS_BINS, dtype=np.int64)
        acc = np.zeros(METRICS_BINS, dtype=np.float64)
        conf = np.zeros(METRICS_BINS, dtype=np.float64)
        with self._use() as h:
            lib.ibvi_metrics_bins(h, counts.ctypes.data_as(I64_PTR),
                                  acc.ctypes.data_as(D_PTR),
                                  conf.ctypes.data_as(D_PTR), METRICS_BINS)
        return Bins(counts, acc, conf)

    def summary(self):
        """All scalar metrics as a dict (read together, under the lock)."""
        with self._use():
            return {"count": self.count, "accuracy": self.accuracy,
                    "nll": self.nll, "ece": self.ece, "mce": self.mce,
                    "brier": self.brier}

    def __repr__(self):
        with _util.Hold(self._lockset):
            if self.closed:
                return "<ibvi.Metrics (closed)>"
            return "<ibvi.Metrics %d classes, %d points>" % (self._classes,
                                                             self.count)


def auroc(in_scores, out_scores):
    """AUROC of separating out-of-distribution points (positives, scores
    `out_scores`) from in-distribution points (`in_scores`), higher score =
    more likely OOD, ties count one half."""
    fn = "auroc"
    a = _util.vector(in_scores, fn, "in_scores")
    b = _util.vector(out_scores, fn, "out_scores")
    v = c_double()
    lib.ibvi_auroc(byref(v), fp(a), a.size, fp(b), b.size)
    return v.value


def entropy(probs, out=None):
    """Entropy of each row of probs (n, classes), nats: an (n,) array."""
    fn = "entropy"
    p = _util.matrix(probs, fn, "probs")
    out = _util.out_array(out, (p.shape[0],), fn)
    lib.ibvi_entropy(fp(out), fp(p), p.shape[0], p.shape[1])
    return out


def temperature_fit(logits, labels):
    """The temperature T in [0.05, 20] minimising the NLL of
    softmax(logits / T) on (logits (n, classes), labels n ints)."""
    fn = "temperature_fit"
    z = _util.matrix(logits, fn, "logits")
    y = _util.i32(labels, fn, "labels")
    if y.shape != (z.shape[0],):
        raise binding_error(ShapeError, fn, "labels has shape %s, expected (%d,)"
                            % (y.shape, z.shape[0]))
    t = c_float()
    lib.ibvi_temperature_fit(byref(t), fp(z), z.shape[0], z.shape[1], ip(y))
    return t.value


def temperature_apply(logits, temperature, out=None):
    """softmax(logits / temperature) row by row, (n, classes). out may be
    the logits array itself (in place) when it is float32 and C-contiguous."""
    fn = "temperature_apply"
    z = _util.matrix(logits, fn, "logits")
    probs = _util.out_array(out, z.shape, fn)
    if probs is not z and np.shares_memory(probs, z):
        raise binding_error(InvalidArgument, fn, "out overlaps logits "
                            "(only out=logits, in place, is allowed)")
    t = _util.cfloat(temperature, fn, "temperature")
    lib.ibvi_temperature_apply(fp(probs), fp(z), z.shape[0], z.shape[1], t)
    return probs

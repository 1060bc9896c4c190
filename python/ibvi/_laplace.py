"""The last-layer Laplace approximation (laplace.h, docs/laplace.md).

``Laplace.fit(net, x, labels)`` fits the Gaussian posterior N(theta*, (H +
lambda I)^-1) of a trained deterministic classifier's last dense layer: H
the Gauss-Newton matrix of the softmax cross-entropy (full, or KFAC's
G (x) A), lambda the prior precision chosen by the marginal likelihood, a
validation set's probit NLL, or given. Then ``probit(net, x)`` predicts
without sampling, and ``build(net)`` returns a new ibvi.Net whose last
layer carries the posterior, for ibvi.Predictor (K samples), save/load
and metrics.
"""

import ctypes
from ctypes import byref, c_double, c_float, c_int32, c_int64, c_uint32, c_void_p

import numpy as np

from . import _util
from ._errors import InvalidArgument, ShapeError, binding_error
from ._lib import lib
from ._util import Enum, Handle, Resource, as_enum, fp, ip


class LaplaceStructure(Enum):
    """ibvi_laplace_structure: the Hessian's structure."""
    FULL = 0
    KFAC = 1


class LaplacePrior(Enum):
    """ibvi_laplace_prior: how the prior precision is chosen."""
    MARGLIK = 0
    VALIDATION = 1
    FIXED = 2


#: IBVI_LAPLACE_OPTIONS_VERSION of laplace.h.
LAPLACE_OPTIONS_VERSION = 1


class _LaplaceOptions(ctypes.Structure):
    """struct ibvi_laplace_options of laplace.h (version 1)."""
    _fields_ = [("version", c_uint32), ("structure", c_int32),
                ("prior", c_int32), ("prior_precision", c_float),
                ("lambda_min", c_float), ("lambda_max", c_float),
                ("grid_points", c_int32), ("max_bytes", c_int64),
                ("batch", c_int32)]


class Laplace(Handle):
    """A fitted last-layer Laplace approximation (ibvi_laplace).

    Create it with ``Laplace.fit``. It keeps no reference to the network:
    probit() and build() take the fitted network and check (by its means)
    that it is the one that was fitted."""

    _what = "Laplace approximation"

    def __init__(self):
        raise TypeError("use ibvi.Laplace.fit(net, x, labels, ...)")

    @classmethod
    def fit(cls, net, x, labels, structure="full", prior="marglik",
            prior_precision=1.0, x_val=None, labels_val=None,
            lambda_range=(1e-4, 1e6), grid_points=21, max_bytes=1 << 30,
            batch=256):
        """Fits the approximation (ibvi_laplace_fit) on the training
        examples x (n, input_dim or NCHW) with integer labels. structure:
        "full" or "kfac"; prior: "marglik", "validation" (needs x_val and
        labels_val) or "fixed" (prior_precision); lambda_range: the range
        searched; max_bytes: the most the full Hessian (8 P^2 bytes) may
        take (OutOfMemory above, naming KFAC)."""
        from ._net import Net
        fn = "Laplace.fit"
        if not isinstance(net, Net):
            raise binding_error(InvalidArgument, fn, "net must be an ibvi.Net")
        o = _LaplaceOptions()
        lib.ibvi_laplace_options_init(byref(o))
        o.structure = int(as_enum(LaplaceStructure, structure, fn, "structure"))
        o.prior = int(as_enum(LaplacePrior, prior, fn, "prior"))
        o.prior_precision = _util.cfloat(prior_precision, fn, "prior_precision")
        lo, hi = lambda_range
        o.lambda_min = _util.cfloat(lo, fn, "lambda_min")
        o.lambda_max = _util.cfloat(hi, fn, "lambda_max")
        o.grid_points = _util.cint(grid_points, _util.INT32, fn, "grid_points")
        o.max_bytes = _util.cint(max_bytes, _util.INT64, fn, "max_bytes")
        o.batch = _util.cint(batch, _util.INT32, fn, "batch")
        self = cls.__new__(cls)
        self._lock = _util.new_lock()
        self._lockset = (self._lock,)
        out = c_void_p()
        with _util.hold(net) as (h,):
            xr = net._rows(x, fn)
            y = _util.i32(labels, fn, "labels")
            if y.shape != (xr.shape[0],):
                raise binding_error(ShapeError, fn, "labels has shape %s, "
                                    "expected (%d,)" % (y.shape, xr.shape[0]))
            if x_val is not None or labels_val is not None:
                if x_val is None or labels_val is None:
                    raise binding_error(InvalidArgument, fn, "x_val and "
                                        "labels_val go together")
                xv = net._rows(x_val, fn)
                yv = _util.i32(labels_val, fn, "labels_val")
                if yv.shape != (xv.shape[0],):
                    raise binding_error(ShapeError, fn, "labels_val has "
                                        "shape %s, expected (%d,)"
                                        % (yv.shape, xv.shape[0]))
                nv = xv.shape[0]
            else:
                xv = yv = None
                nv = 0
            lib.ibvi_laplace_fit(byref(out), h, byref(o), fp(xr), ip(y),
                                 xr.shape[0], fp(xv), ip(yv), nv)
        self._res = Resource(out.value, lib.ibvi_laplace_free)
        return self

    def _double(self, func):
        v = c_double()
        with self._use() as h:
            func(h, byref(v))
        return v.value

    @property
    def prior_precision(self):
        """The chosen prior precision lambda."""
        return self._double(lib.ibvi_laplace_prior_precision)

    @property
    def log_marglik(self):
        """The log marginal likelihood at the chosen lambda (nats)."""
        return self._double(lib.ibvi_laplace_log_marglik)

    def log_marglik_at(self, lam):
        """The log marginal likelihood at any lambda > 0."""
        lam = float(lam)
        v = c_double()
        with self._use() as h:
            lib.ibvi_laplace_log_marglik_at(h, lam, byref(v))
        return v.value

    @property
    def structure(self):
        """A LaplaceStructure."""
        with self._use() as h:
            return LaplaceStructure(lib.ibvi_laplace_structure_of(h))

    @property
    def param_count(self):
        """P, the last layer's parameter count."""
        with self._use() as h:
            return int(lib.ibvi_laplace_param_count(h))

    def hessian(self):
        """H (P, P) float64 in theta's order (KFAC: G (x) A)."""
        p = self.param_count
        out = _util.empty((p, p), "Laplace.hessian", "h", np.float64)
        with self._use() as h:
            lib.ibvi_laplace_get_hessian(
                h, out.ctypes.data_as(ctypes.POINTER(c_double)), out.size)
        return out

    def build(self, net):
        """A new ibvi.Net like net with the posterior on its last layer (the
        low-rank family, R = P) for ibvi.Predictor."""
        out = c_void_p()
        with _util.hold(self, net) as (h, nh):
            lib.ibvi_laplace_build(h, nh, byref(out))
        return type(net)._from_handle(out.value, net._allocator)

    def probit(self, net, x, variances=False):
        """The probit predictive softmax(mu / sqrt(1 + pi/8 var)) of x:
        probs (n, C); with variances=True also the logits' variances (n, C)."""
        fn = "Laplace.probit"
        with _util.hold(self, net) as (h, nh):
            xr = net._rows(x, fn)
            n = xr.shape[0]
            c = net.output_dim
            probs = _util.empty((n, c), fn, "probs")
            var = _util.empty((n, c), fn, "var") if variances else None
            lib.ibvi_laplace_probit(h, nh, fp(xr), n, fp(probs), fp(var))
        return (probs, var) if variances else probs

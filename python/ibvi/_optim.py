"""Optimizers and the one-call training step (optimizer.h)."""

import ctypes
from ctypes import byref, c_float, c_void_p

import numpy as np

from . import _util
from ._errors import InvalidArgument, NonFiniteError, ShapeError, binding_error
from ._lib import lib
from ._loss import LossKind, _targets
from ._util import Enum, Handle, Resource, as_enum, fp, ip


#: IBVI_DEFERRED_AUTO and IBVI_DEFERRED_MAX_STEPS of optimizer.h: the
#: requests of Optimizer.deferred (the cost model's window; the longest).
DEFERRED_AUTO = -1
DEFERRED_MAX_STEPS = 16

class OptimizerKind(Enum):
    """ibvi_optimizer_kind."""
    SGD = 0
    ADAM = 1


#: SGD's momentum when none is given: the paper's recipe (docs/results.md),
#: heavy-ball momentum 0.9 with Nesterov off.
DEFAULT_MOMENTUM = 0.9


class Optimizer(Handle):
    """An optimizer (ibvi_optimizer) bound to one initialised network.

    ``Optimizer(net, 'sgd', lr, momentum=0.9, nesterov=False)`` or
    ``Optimizer(net, 'adam', lr, beta1=0.9, beta2=0.999, eps=1e-8)``; the
    keyword settings are applied with set_momentum()/set_adam(). SGD
    defaults to the method's recipe, momentum 0.9 without Nesterov (the
    package passes it to the library explicitly); give momentum=0.0 for
    plain SGD.

    The optimizer keeps its network alive and uses the network's lock for
    every call (see Net); closing the network closes the optimizer first,
    after which its calls raise StateError."""

    _what = "optimizer"

    def __init__(self, net, kind=OptimizerKind.SGD, lr=0.01, **settings):
        from ._net import Net
        fn = "Optimizer"
        if not isinstance(net, Net):
            raise binding_error(InvalidArgument, fn, "net must be an ibvi.Net, "
                                "not %s" % type(net).__name__)
        kind = as_enum(OptimizerKind, kind, fn, "kind")
        lr = _util.cfloat(lr, fn, "lr")
        if kind == OptimizerKind.SGD:
            momentum = _util.cfloat(settings.pop("momentum", DEFAULT_MOMENTUM),
                                    fn, "momentum")
            nesterov = settings.pop("nesterov", False)
        elif kind == OptimizerKind.ADAM:
            adam = (settings.pop("beta1", 0.9), settings.pop("beta2", 0.999),
                    settings.pop("eps", 1e-8))
        if settings:
            raise TypeError("Optimizer: unexpected settings for %s: %s"
                            % (getattr(kind, "name", kind), ", ".join(sorted(settings))))
        out = c_void_p()
        with net._use() as h:
            lib.ibvi_optimizer_create(byref(out), h, kind, lr)
            self._bind(net, out.value, kind)
            try:
                if kind == OptimizerKind.SGD:
                    self.set_momentum(momentum, nesterov)
                elif kind == OptimizerKind.ADAM:
                    self.set_adam(*adam)
            except BaseException:
                self.close()
                raise

    def _bind(self, net, ptr, kind):
        """Wraps ptr; the caller holds the network's lock."""
        self._net = net
        self._kind = kind
        self._lockset = net._lockset
        self._res = Resource(ptr, lib.ibvi_optimizer_free)
        net._attach(self._res)

    @classmethod
    def _from_handle(cls, net, ptr, kind):
        opt = cls.__new__(cls)
        opt._bind(net, ptr, kind)
        return opt

    @classmethod
    def sgd(cls, net, lr, momentum=DEFAULT_MOMENTUM, nesterov=False):
        return cls(net, OptimizerKind.SGD, lr, momentum=momentum, nesterov=nesterov)

    @classmethod
    def adam(cls, net, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        return cls(net, OptimizerKind.ADAM, lr, beta1=beta1, beta2=beta2, eps=eps)

    def close(self):
        """Frees the optimizer (after a call in progress on its network has
        returned). Idempotent."""
        super().close()

    def _release(self):
        res = self._res
        res.release()
        self._net._detach(res)

    @property
    def net(self):
        return self._net

    @property
    def kind(self):
        """OptimizerKind given at creation; None for an optimizer loaded from
        a file (the C API has no getter for it)."""
        return self._kind

    @property
    def lr(self):
        """Base learning rate (settable; may change between steps)."""
        v = c_float()
        with self._use() as h:
            lib.ibvi_optimizer_get_lr(h, byref(v))
        return v.value

    @lr.setter
    def lr(self, lr):
        self.set_lr(lr)

    def set_lr(self, lr):
        lr = _util.cfloat(lr, "Optimizer.set_lr", "lr")
        with self._use() as h:
            lib.ibvi_optimizer_set_lr(h, lr)

    def get_lr(self):
        return self.lr

    def set_momentum(self, momentum, nesterov=False):
        """SGD only: momentum in [0, 1), Nesterov or not."""
        m = _util.cfloat(momentum, "Optimizer.set_momentum", "momentum")
        with self._use() as h:
            lib.ibvi_optimizer_set_momentum(h, m, 1 if nesterov else 0)

    def set_adam(self, beta1=0.9, beta2=0.999, eps=1e-8):
        """Adam only: beta1, beta2 in [0, 1), eps > 0."""
        fn = "Optimizer.set_adam"
        b1 = _util.cfloat(beta1, fn, "beta1")
        b2 = _util.cfloat(beta2, fn, "beta2")
        e = _util.cfloat(eps, fn, "eps")
        with self._use() as h:
            lib.ibvi_optimizer_set_adam(h, b1, b2, e)

    @property
    def kl_weight(self):
        """The KL term's weight (ELBO: 1 / N_train; 0: none)."""
        v = ctypes.c_float()
        with self._use() as h:
            lib.ibvi_optimizer_get_kl_weight(h, ctypes.byref(v))
        return v.value

    @kl_weight.setter
    def kl_weight(self, weight):
        self.set_kl_weight(weight)

    def set_kl_weight(self, weight):
        """Each step minimises loss + weight * net.kl() (mean-field layers);
        weight >= 0, 0 by default."""
        w = _util.cfloat(weight, "Optimizer.set_kl_weight", "weight")
        with self._use() as h:
            lib.ibvi_optimizer_set_kl_weight(h, w)

    def get_kl_weight(self):
        return self.kl_weight

    @property
    def deferred(self):
        """Deferred factor updates (docs/deferred.md): -1 the cost model's
        window (the default), 0 the per-step path, 2..16 a fixed window of
        that many steps (ibvi_optimizer_set_deferred)."""
        v = ctypes.c_int32()
        with self._use() as h:
            lib.ibvi_optimizer_get_deferred(h, ctypes.byref(v))
        return v.value

    @deferred.setter
    def deferred(self, steps):
        s = _util.cint(steps, _util.INT32, "Optimizer.deferred", "steps")
        with self._use() as h:
            lib.ibvi_optimizer_set_deferred(h, s)

    def step(self):
        """One update from the network's current gradients."""
        with self._use() as h:
            lib.ibvi_optimizer_step(h)

    def step_grads(self, grads):
        """One update from host-given gradients in Net.get_params' layout
        (e.g. averaged over the processes of a data-parallel job) instead of
        the network's own; the same update as step() on the same values."""
        g = _util.f32(grads, "Optimizer.step_grads", "grads")
        with self._use() as h:
            lib.ibvi_optimizer_step_grads(h, fp(g), g.size)

    def step_factored(self, blocks):
        """One update from factored-layout blocks of several processes, an
        array of shape (count, Net.grads_factored_size(samples)): their
        average, the factor's G^T Z formed block by block."""
        b = _util.f32(blocks, "Optimizer.step_factored", "blocks")
        if b.ndim != 2:
            raise binding_error(InvalidArgument, "Optimizer.step_factored",
                                "blocks must be 2-D (count, len)")
        with self._use() as h:
            lib.ibvi_optimizer_step_factored(h, fp(b), b.shape[0], b.shape[1])

    @property
    def step_count(self):
        with self._use() as h:
            return int(lib.ibvi_optimizer_step_count(h))

    def reset(self):
        """Zeroes momentum / Adam moments and the step count."""
        with self._use() as h:
            lib.ibvi_optimizer_reset(h)

    def train_step(self, x, labels=None, targets=None, samples=1, loss=None):
        """train_step(self.net, self, ...): see ibvi.train_step."""
        return train_step(self._net, self, x, labels=labels, targets=targets,
                          samples=samples, loss=loss)

    def __repr__(self):
        with _util.Hold(self._lockset):
            if self.closed:
                return "<ibvi.Optimizer (closed)>"
            kind = self._kind.name if self._kind is not None else "loaded"
            return "<ibvi.Optimizer %s lr=%g steps=%d>" % (kind, self.lr,
                                                           self.step_count)


def train_step(net, opt, x, labels=None, targets=None, samples=1, loss=None):
    """One training step (ibvi_train_step): forward with `samples` weight
    samples, the loss, backward and one update of `opt` (bound to `net`).

    x: (n, input_dim) or NCHW (n, *net.input_shape). labels: n ints (softmax cross-entropy) or targets:
    (n, output_dim) floats (squared error, binary cross-entropy; (n,
    output_dim / 2) for the Gaussian NLL). loss: a
    LossKind or name; by default SOFTMAX_XENT with labels, SQUARED with
    targets. Returns the minibatch loss (a float). A non-finite loss raises
    NonFiniteError (its ``.loss`` holds the value) and changes nothing.
    Holds the locks of `net` and of opt's network for the whole step."""
    from ._net import Net
    fn = "train_step"
    if not isinstance(net, Net) or not isinstance(opt, Optimizer):
        raise binding_error(InvalidArgument, fn, "net and opt must be an "
                            "ibvi.Net and an ibvi.Optimizer")
    samples = _util.cint(samples, _util.INT32, fn, "samples")
    if loss is None:
        if labels is not None:
            loss = LossKind.SOFTMAX_XENT
        elif targets is not None:
            loss = LossKind.SQUARED
        else:
            raise binding_error(InvalidArgument, fn, "give labels or targets")
    kind = as_enum(LossKind, loss, fn, "loss")
    with _util.hold(net, opt) as (h_net, h_opt):
        x = net._rows(x, fn)
        n = x.shape[0]
        if labels is not None:
            labels = _util.i32(labels, fn, "labels")
            if labels.shape != (n,):
                raise binding_error(ShapeError, fn, "labels has shape %s, "
                                    "expected (%d,)" % (labels.shape, n))
        if targets is not None:
            cols = net.output_dim
            if kind == LossKind.GAUSSIAN_NLL and cols % 2 == 0:
                cols //= 2  # D means and D log-variances: targets (n, D)
            targets = _targets(targets, cols, fn)
            if targets.shape[0] != n:
                raise binding_error(ShapeError, fn, "targets has %d rows, x has "
                                    "%d" % (targets.shape[0], n))
        value = c_float(np.nan)
        try:
            lib.ibvi_train_step(h_net, h_opt, fp(x), n, samples, kind, ip(labels),
                                fp(targets), byref(value))
        except NonFiniteError as e:
            e.loss = value.value
            raise
        net._last_samples = samples
    return value.value

"""Optimizers and the one-call training step (optimizer.h)."""

from ctypes import byref, c_float, c_void_p

import numpy as np

from . import _util
from ._errors import InvalidArgument, NonFiniteError, ShapeError, binding_error
from ._lib import lib
from ._loss import LossKind, _targets
from ._util import Enum, Handle, Resource, as_enum, fp, ip


class OptimizerKind(Enum):
    """ibvi_optimizer_kind."""
    SGD = 0
    ADAM = 1


class Optimizer(Handle):
    """An optimizer (ibvi_optimizer) bound to one initialised network.

    ``Optimizer(net, 'sgd', lr, momentum=0.9, nesterov=False)`` or
    ``Optimizer(net, 'adam', lr, beta1=0.9, beta2=0.999, eps=1e-8)``; the
    keyword settings are applied with set_momentum()/set_adam(). The
    optimizer keeps its network alive; closing the network closes the
    optimizer first (see Net)."""

    _what = "optimizer"

    def __init__(self, net, kind=OptimizerKind.SGD, lr=0.01, **settings):
        kind = as_enum(OptimizerKind, kind, "Optimizer")
        out = c_void_p()
        lib.ibvi_optimizer_create(byref(out), net._h(), kind, lr)
        self._bind(net, out.value, kind)
        try:
            if kind == OptimizerKind.SGD and settings:
                self.set_momentum(settings.pop("momentum", 0.0),
                                  settings.pop("nesterov", False))
            elif kind == OptimizerKind.ADAM and settings:
                self.set_adam(settings.pop("beta1", 0.9),
                              settings.pop("beta2", 0.999),
                              settings.pop("eps", 1e-8))
            if settings:
                raise TypeError("Optimizer: unexpected settings for %s: %s"
                                % (kind.name, ", ".join(sorted(settings))))
        except BaseException:
            self.close()
            raise

    def _bind(self, net, ptr, kind):
        self._net = net
        self._kind = kind
        self._res = Resource(ptr, lib.ibvi_optimizer_free)
        net._attach(self._res)

    @classmethod
    def _from_handle(cls, net, ptr, kind):
        opt = cls.__new__(cls)
        opt._bind(net, ptr, kind)
        return opt

    @classmethod
    def sgd(cls, net, lr, momentum=0.0, nesterov=False):
        return cls(net, OptimizerKind.SGD, lr, momentum=momentum, nesterov=nesterov)

    @classmethod
    def adam(cls, net, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        return cls(net, OptimizerKind.ADAM, lr, beta1=beta1, beta2=beta2, eps=eps)

    def close(self):
        res = self._res
        if res is not None:
            res.release()
            net = getattr(self, "_net", None)
            if net is not None:
                net._detach(res)

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
        lib.ibvi_optimizer_get_lr(self._h(), byref(v))
        return v.value

    @lr.setter
    def lr(self, lr):
        lib.ibvi_optimizer_set_lr(self._h(), lr)

    def set_lr(self, lr):
        lib.ibvi_optimizer_set_lr(self._h(), lr)

    def get_lr(self):
        return self.lr

    def set_momentum(self, momentum, nesterov=False):
        """SGD only: momentum in [0, 1), Nesterov or not."""
        lib.ibvi_optimizer_set_momentum(self._h(), momentum, 1 if nesterov else 0)

    def set_adam(self, beta1=0.9, beta2=0.999, eps=1e-8):
        """Adam only: beta1, beta2 in [0, 1), eps > 0."""
        lib.ibvi_optimizer_set_adam(self._h(), beta1, beta2, eps)

    def step(self):
        """One update from the network's current gradients."""
        lib.ibvi_optimizer_step(self._h())

    @property
    def step_count(self):
        return int(lib.ibvi_optimizer_step_count(self._h()))

    def reset(self):
        """Zeroes momentum / Adam moments and the step count."""
        lib.ibvi_optimizer_reset(self._h())

    def train_step(self, x, labels=None, targets=None, samples=1, loss=None):
        """train_step(self.net, self, ...): see ibvi.train_step."""
        return train_step(self._net, self, x, labels=labels, targets=targets,
                          samples=samples, loss=loss)

    def __repr__(self):
        if self.closed:
            return "<ibvi.Optimizer (closed)>"
        kind = self._kind.name if self._kind is not None else "loaded"
        return "<ibvi.Optimizer %s lr=%g steps=%d>" % (kind, self.lr,
                                                       self.step_count)


def train_step(net, opt, x, labels=None, targets=None, samples=1, loss=None):
    """One training step (ibvi_train_step): forward with `samples` weight
    samples, the loss, backward and one update of `opt` (bound to `net`).

    x: (n, input_dim). labels: n ints (softmax cross-entropy) or targets:
    (n, output_dim) floats (squared error, binary cross-entropy). loss: a
    LossKind or name; by default SOFTMAX_XENT with labels, SQUARED with
    targets. Returns the minibatch loss (a float). A non-finite loss raises
    NonFiniteError (its ``.loss`` holds the value) and changes nothing."""
    fn = "train_step"
    h_net, h_opt = net._h(), opt._h()
    if loss is None:
        if labels is not None:
            loss = LossKind.SOFTMAX_XENT
        elif targets is not None:
            loss = LossKind.SQUARED
        else:
            raise binding_error(InvalidArgument, fn, "give labels or targets")
    kind = as_enum(LossKind, loss, fn)
    x = _util.rows(x, net.input_dim, fn, "x")
    n = x.shape[0]
    if labels is not None:
        labels = _util.i32(labels, fn, "labels")
        if labels.shape != (n,):
            raise binding_error(ShapeError, fn, "labels has shape %s, expected "
                                "(%d,)" % (labels.shape, n))
    if targets is not None:
        targets = _targets(targets, net.output_dim, fn)
        if targets.shape[0] != n:
            raise binding_error(ShapeError, fn, "targets has %d rows, x has %d"
                                % (targets.shape[0], n))
    value = c_float(np.nan)
    try:
        lib.ibvi_train_step(h_net, h_opt, fp(x), n, samples, kind, ip(labels),
                            fp(targets), byref(value))
    except NonFiniteError as e:
        e.loss = value.value
        raise
    net._last_samples = samples
    return value.value

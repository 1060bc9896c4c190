"""Loss functions and their gradients (loss.h)."""

import collections
from ctypes import byref, c_float

import numpy as np

from . import _util
from ._errors import NonFiniteError, ShapeError, binding_error
from ._lib import lib
from ._util import Enum, as_enum, fp, ip


class LossKind(Enum):
    """ibvi_loss_kind."""
    SOFTMAX_XENT = 0
    SQUARED = 1
    BINARY_XENT = 2
    GAUSSIAN_NLL = 3


#: IBVI_LOG_VAR_MIN, IBVI_LOG_VAR_MAX of loss.h: the range the Gaussian NLL
#: (and the heteroscedastic head) clamps a log-variance to.
LOG_VAR_MIN, LOG_VAR_MAX = -20.0, 20.0


LossResult = collections.namedtuple("LossResult", "loss grad")
LossResult.__doc__ = """(loss, grad): the mean loss (float) and dL/d(outputs)
(an array shaped like the outputs, already divided by rows), or None."""


def _targets(targets, cols, fn):
    """Float targets as (n, cols); a 1-D array is n rows when cols == 1."""
    t = _util.f32(targets, fn, "targets")
    if t.ndim == 1 and cols == 1:
        t = t.reshape(-1, 1)
    if t.ndim != 2 or t.shape[1] != cols:
        raise binding_error(ShapeError, fn, "targets has shape %s, expected "
                            "(n, %d)" % (t.shape, cols))
    return t


def _call(fn_name, call, outputs, grad):
    value = c_float(np.nan)
    g = np.empty(outputs.shape, dtype=np.float32) if grad else None
    try:
        call(byref(value), fp(g))
    except NonFiniteError as e:
        e.loss = value.value
        raise
    return LossResult(value.value, g)


def loss_softmax_xent(logits, labels, grad=True):
    """Softmax cross-entropy: logits (rows, classes), labels n ints in
    [0, classes), rows a multiple of n (row r is compared with label r % n).
    Returns LossResult(loss, grad)."""
    fn = "loss_softmax_xent"
    logits = _util.matrix(logits, fn, "logits")
    labels = _util.vector(_util.i32(labels, fn, "labels"), fn, "labels", np.int32)
    rows, cols = logits.shape
    return _call(fn, lambda l, g: lib.ibvi_loss_softmax_xent(
        fp(logits), rows, cols, ip(labels), labels.size, l, g), logits, grad)


def loss_squared(outputs, targets, grad=True):
    """Squared error, mean over rows of sum_j (f_rj - t_j)^2 (no 1/2):
    outputs (rows, cols), targets (n, cols)."""
    fn = "loss_squared"
    outputs = _util.matrix(outputs, fn, "outputs")
    rows, cols = outputs.shape
    t = _targets(targets, cols, fn)
    return _call(fn, lambda l, g: lib.ibvi_loss_squared(
        fp(outputs), rows, cols, fp(t), t.shape[0], l, g), outputs, grad)


def loss_binary_xent(logits, targets, grad=True):
    """Binary cross-entropy on logits: logits (rows, cols), targets (n, cols)
    in [0, 1]."""
    fn = "loss_binary_xent"
    logits = _util.matrix(logits, fn, "logits")
    rows, cols = logits.shape
    t = _targets(targets, cols, fn)
    return _call(fn, lambda l, g: lib.ibvi_loss_binary_xent(
        fp(logits), rows, cols, fp(t), t.shape[0], l, g), logits, grad)


def loss_gaussian_nll(outputs, targets, grad=True):
    """Gaussian NLL of a heteroscedastic regression: outputs (rows, 2D), D
    means then D log-variances (clamped to [LOG_VAR_MIN, LOG_VAR_MAX], zero
    gradient outside), targets (n, D)."""
    fn = "loss_gaussian_nll"
    outputs = _util.matrix(outputs, fn, "outputs")
    rows, cols = outputs.shape
    if cols % 2:
        raise binding_error(ShapeError, fn, "outputs has %d columns, expected "
                            "an even number (D means, D log-variances)" % cols)
    t = _targets(targets, cols // 2, fn)
    return _call(fn, lambda l, g: lib.ibvi_loss_gaussian_nll(
        fp(outputs), rows, cols, fp(t), t.shape[0], l, g), outputs, grad)


def loss(kind, outputs, labels=None, targets=None, grad=True):
    """Any loss by kind (ibvi_loss): labels for SOFTMAX_XENT, targets for the
    others. Returns LossResult(loss, grad)."""
    fn = "loss"
    kind = as_enum(LossKind, kind, fn, "kind")
    outputs = _util.matrix(outputs, fn, "outputs")
    rows, cols = outputs.shape
    n = 0
    if labels is not None:
        labels = _util.vector(_util.i32(labels, fn, "labels"), fn, "labels", np.int32)
        n = labels.size
    if targets is not None:
        tcols = cols // 2 if kind == LossKind.GAUSSIAN_NLL and cols % 2 == 0 else cols
        targets = _targets(targets, tcols, fn)
        if labels is not None and targets.shape[0] != n:
            raise binding_error(ShapeError, fn, "labels and targets disagree on n")
        n = targets.shape[0]
    return _call(fn, lambda l, g: lib.ibvi_loss(
        kind, fp(outputs), rows, cols, ip(labels), fp(targets), n, l, g),
        outputs, grad)

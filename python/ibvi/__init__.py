"""ibvi - Python binding of libibvi (Implicit Bias Variational Inference).

A thin ctypes layer over the C library: no compiled extension, numpy arrays
(float32, int32 labels, C-contiguous) in and out. Every C function has a
Python counterpart (see docs/python.md for the table):

    >>> import numpy as np, ibvi
    >>> net = ibvi.Net(2).add_dense(1, rank=2).init("sp", seed=42)
    >>> opt = ibvi.Optimizer(net, "sgd", lr=0.01)  # momentum 0.9 by default
    >>> x = np.array([[0, 1], [1, 0], [1, 1], [2, 1]], np.float32)
    >>> y = np.array([[-1], [2], [1], [3]], np.float32)
    >>> for step in range(2000):
    ...     loss = opt.train_step(x, targets=y)

A negative status of the library raises ibvi.Error (a subclass per status:
InvalidArgument, ShapeError, OutOfMemory, StateError, NonFiniteError,
FileError, FormatError, VersionError, ChecksumError, UnsupportedError)
carrying ibvi_last_error()'s message.

The shared library is found through IBVI_LIBRARY (a path), IBVI_BUILD_DIR
(a meson build directory), the source tree's build/ directory, then the
system (see ibvi._lib). The loaded library's version is checked at import.
"""

from . import _lib, _util
from ._alloc import Allocator, CountingAllocator
from ._errors import (ChecksumError, Error, FileError, FormatError,
                      InvalidArgument, NonFiniteError, OutOfMemory, ShapeError,
                      StateError, Status, UnsupportedError, VersionError,
                      clear_error, error_class, last_error, status_string)
from ._loss import (LOG_VAR_MAX, LOG_VAR_MIN, LossKind, LossResult, loss,
                    loss_binary_xent, loss_gaussian_nll, loss_softmax_xent,
                    loss_squared)
from ._metrics import (METRICS_BINS, TEMPERATURE_MAX, TEMPERATURE_MIN, Bins,
                       Metrics, auroc, entropy, temperature_apply,
                       temperature_fit)
from ._metrics import (aupr_in, aupr_out, fpr_at_tpr, normal_quantile,
                       regression_calibration_error, regression_coverage,
                       regression_crps, regression_nll, regression_rmse)
from ._net import (COVARIANCE_OPTIONS_VERSION, DEFAULT_INIT_SIGMA,
                   Activation, Covariance, ImageShape, Layer, LayerKind, LayerShape, Net,
                   Param, Role)
from ._laplace import (LAPLACE_OPTIONS_VERSION, Laplace, LaplacePrior,
                       LaplaceStructure)
from ._optim import Optimizer, OptimizerKind, train_step, DEFERRED_AUTO, DEFERRED_MAX_STEPS
from ._predictor import (HEAD_OPTIONS_VERSION, HeadKind, Prediction,
                         Predictor, fit_noise_std)
from ._swag import (DIAG_LOWRANK_MAX_RANK, SWAG_DEFAULT_RANK,
                    SWAG_OPTIONS_VERSION, Swag)

#: ibvi_head_kind of predictor.h (Predictor.set_head).
HEAD_SOFTMAX, HEAD_SIGMOID, HEAD_REGRESSION, HEAD_HETEROSCEDASTIC = (
    HeadKind.SOFTMAX, HeadKind.SIGMOID, HeadKind.REGRESSION,
    HeadKind.HETEROSCEDASTIC)
#: ibvi_loss_kind of loss.h, as module constants.
LOSS_SOFTMAX_XENT, LOSS_SQUARED, LOSS_BINARY_XENT, LOSS_GAUSSIAN_NLL = (
    LossKind.SOFTMAX_XENT, LossKind.SQUARED, LossKind.BINARY_XENT,
    LossKind.GAUSSIAN_NLL)

#: Version of this Python package (follows the C library's IBVI_VERSION_*).
__version__ = "0.6.0"
#: IBVI_FORMAT_VERSION: the model file format version of io.h.
FORMAT_VERSION = 2
#: IBVI_CONV2D_OPTIONS_VERSION of net.h (the ibvi_conv2d_options layout).
CONV2D_OPTIONS_VERSION = 2
#: IBVI_RESIDUAL_OPTIONS_VERSION of net.h (the ibvi_residual_options layout).
RESIDUAL_OPTIONS_VERSION = 1
#: IBVI_MAX_SAMPLES: the largest number of weight samples any call takes.
MAX_SAMPLES = _util.MAX_SAMPLES
#: IBVI_VERSION_MAJOR/MINOR/PATCH of the headers this package was written for.
VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH = 0, 6, 0
#: Path (or name) of the shared library that was loaded.
library_path = _lib.path


for _cls in (Activation, Allocator, Bins, ChecksumError, CountingAllocator, Error,
             HeadKind, ImageShape,
             FileError, FormatError, InvalidArgument, Layer, LayerKind,
             LayerShape, LossKind, LossResult, Metrics, Net, NonFiniteError,
             Optimizer, OptimizerKind, OutOfMemory, Param, Prediction,
             Predictor, Role, ShapeError, StateError, Status, UnsupportedError,
             VersionError):
    _cls.__module__ = "ibvi"
del _cls


def version():
    """ibvi_version_string() of the loaded library, e.g. "0.6.0"."""
    return _lib.lib.ibvi_version_string().decode("ascii")


def version_number():
    """ibvi_version_number(): major * 10000 + minor * 100 + patch."""
    return _lib.version_number()


#: ibvi_kernel_origin of kernel.h: how the BLIS kernel set was chosen.
KERNEL_ORIGINS = ("blis", "selected", "user", "disabled", "preinitialized")


def kernel_name():
    """ibvi_kernel_name(): the BLIS kernel set that runs, e.g. "skx"."""
    return _lib.lib.ibvi_kernel_name().decode("ascii")


def kernel_origin():
    """ibvi_kernel_get_origin() as a name from KERNEL_ORIGINS."""
    return KERNEL_ORIGINS[_lib.lib.ibvi_kernel_get_origin()]


def kernel_description():
    """ibvi_kernel_description(): one line for logs."""
    return _lib.lib.ibvi_kernel_description().decode("ascii")


def load(path, allocator=None):
    """Net.load(path): a network saved with Net.save()."""
    return Net.load(path, allocator)


def load_bytes(data, allocator=None):
    """Net.from_bytes(data)."""
    return Net.from_bytes(data, allocator)


__all__ = [
    "Activation", "Allocator", "Bins", "ChecksumError", "CountingAllocator",
    "Error", "FORMAT_VERSION", "FileError", "FormatError", "InvalidArgument",
    "COVARIANCE_OPTIONS_VERSION", "Covariance", "DEFAULT_INIT_SIGMA",
    "Layer", "LayerKind", "LayerShape", "LossKind", "LossResult",
    "MAX_SAMPLES", "METRICS_BINS", "Metrics", "Net", "NonFiniteError", "Optimizer",
    "OptimizerKind", "OutOfMemory", "Param", "Prediction", "Predictor", "Role",
    "ShapeError", "StateError", "Status", "TEMPERATURE_MAX", "TEMPERATURE_MIN",
    "UnsupportedError", "VERSION_MAJOR", "VERSION_MINOR", "VERSION_PATCH",
    "VersionError", "auroc", "clear_error", "entropy",
    "error_class", "KERNEL_ORIGINS", "kernel_description", "kernel_name",
    "kernel_origin", "last_error", "library_path", "load", "load_bytes", "loss",
    "loss_binary_xent", "loss_softmax_xent", "loss_squared", "status_string",
    "temperature_apply", "temperature_fit", "train_step", "version",
    "version_number",
    "aupr_in", "aupr_out", "fpr_at_tpr", "normal_quantile",
    "regression_calibration_error", "regression_coverage", "regression_crps",
    "regression_nll", "regression_rmse",
    "HEAD_HETEROSCEDASTIC", "HEAD_OPTIONS_VERSION", "HEAD_REGRESSION",
    "HEAD_SIGMOID", "HEAD_SOFTMAX", "HeadKind", "LOG_VAR_MAX", "LOG_VAR_MIN",
    "LOSS_BINARY_XENT", "LOSS_GAUSSIAN_NLL", "LOSS_SOFTMAX_XENT",
    "LOSS_SQUARED", "fit_noise_std", "loss_gaussian_nll",
]

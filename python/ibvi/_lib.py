"""Loading libibvi and declaring every C prototype.

This module is the only place that knows the C signatures. Every exported
function of the library is listed in ``PROTOTYPES`` with its ``restype`` and
``argtypes``; functions returning a status (or a value that is negative on
failure) get an ``errcheck`` that raises :class:`ibvi.Error`.

The library is searched in this order (the first hit wins):

1. the environment variable ``IBVI_LIBRARY``: a path to ``libibvi.so.0``
   (if it is set and cannot be loaded, the import fails; no fallback);
2. a build directory named by ``IBVI_BUILD_DIR`` (``$IBVI_BUILD_DIR/lib/``);
3. the source tree's default build directory: ``<package>/../../build/lib/``
   (the package lives in ``python/ibvi/`` of the source tree);
4. the system: ``ctypes.util.find_library('ibvi')``, then the SONAME
   ``libibvi.so.0`` through the dynamic loader (``LD_LIBRARY_PATH``, ld.so.cache).
"""

import ctypes
import ctypes.util
import os
from ctypes import (POINTER, c_char_p, c_double, c_float, c_int, c_int32,
                    c_int64, c_size_t, c_uint8, c_uint64, c_void_p)

from . import _errors

#: The SONAME this binding was written for; its number is the ABI major.
SONAME = "libibvi.so.0"
#: ABI major version (the N of libibvi.so.N) the binding expects.
EXPECTED_MAJOR = 0
#: The oldest library version (IBVI_VERSION_NUMBER) whose API the binding uses.
MIN_VERSION_NUMBER = 500  # 0.5.0 (SWAG, Laplace, ibvi_net_create_like)


class ibvi_allocator(ctypes.Structure):
    """struct ibvi_allocator {alloc, free, opaque} of common.h."""


ALLOC_FUNC = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_size_t)
FREE_FUNC = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
ibvi_allocator._fields_ = [("alloc", ALLOC_FUNC), ("free", FREE_FUNC),
                           ("opaque", c_void_p)]

# Short names for the table below.
H = c_void_p                 # any opaque handle (ibvi_net *, ...)
HP = POINTER(c_void_p)       # ibvi_xxx ** (an out-handle)
F = POINTER(c_float)         # float * / const float *
I32P = POINTER(c_int32)
I64P = POINTER(c_int64)
U64P = POINTER(c_uint64)
DP = POINTER(c_double)
U8P = POINTER(c_uint8)
AP = POINTER(ibvi_allocator)
STATUS = "status"            # c_int, errcheck: negative raises
VALUE32 = "value32"          # c_int32 value, negative raises
VALUE64 = "value64"          # c_int64 value, negative raises

# name: (restype, [argtypes]); restype STATUS/VALUE32/VALUE64 add errcheck.
PROTOTYPES = {
    # common.h
    "ibvi_version_number": (c_int32, []),
    "ibvi_version_string": (c_char_p, []),
    "ibvi_status_string": (c_char_p, [c_int32]),
    "ibvi_last_error": (c_char_p, []),
    "ibvi_clear_error": (None, []),
    # kernel.h
    "ibvi_kernel_name": (c_char_p, []),
    "ibvi_kernel_get_origin": (c_int32, []),
    "ibvi_kernel_description": (c_char_p, []),
    # net.h
    "ibvi_net_create": (STATUS, [HP, c_int32, AP]),
    "ibvi_net_create_image": (STATUS, [HP, c_int32, c_int32, c_int32, AP]),
    "ibvi_net_create_like": (STATUS, [HP, H]),
    "ibvi_net_free": (None, [H]),
    "ibvi_net_add_dense": (STATUS, [H, c_int32, c_int32]),
    "ibvi_net_add_activation": (STATUS, [H, c_int32]),
    "ibvi_net_add_conv2d": (STATUS, [H, c_int32, c_int32, c_int32, c_int32, c_int32]),
    "ibvi_net_add_conv2d_ex": (STATUS, [H, H]),  # const ibvi_conv2d_options *
    "ibvi_net_add_maxpool": (STATUS, [H, c_int32, c_int32]),
    "ibvi_net_add_avgpool": (STATUS, [H, c_int32, c_int32]),
    "ibvi_net_add_global_avgpool": (STATUS, [H]),
    "ibvi_net_add_flatten": (STATUS, [H]),
    "ibvi_net_add_groupnorm": (STATUS, [H, c_int32, c_float]),
    "ibvi_net_add_residual": (STATUS, [H, c_int32, c_int32]),
    "ibvi_net_add_residual_ex": (STATUS, [H, H]),  # const ibvi_residual_options *
    "ibvi_net_init": (STATUS, [H, c_int32, c_uint64]),
    "ibvi_net_set_threads": (STATUS, [H, c_int32]),
    "ibvi_net_threads": (VALUE32, [H]),
    "ibvi_net_reserve": (STATUS, [H, c_int64, c_int32]),
    "ibvi_net_input_dim": (VALUE32, [H]),
    "ibvi_net_input_shape": (STATUS, [H, I32P, I32P, I32P]),
    "ibvi_net_output_dim": (VALUE32, [H]),
    "ibvi_net_layer_count": (VALUE32, [H]),
    "ibvi_net_is_initialized": (VALUE32, [H]),
    "ibvi_net_parameterization": (VALUE32, [H]),
    "ibvi_net_noise_size": (VALUE32, [H]),
    "ibvi_net_param_count": (VALUE64, [H]),
    "ibvi_net_seed": (STATUS, [H, U64P]),
    "ibvi_net_rng_position": (STATUS, [H, U64P]),
    "ibvi_net_set_rng_position": (STATUS, [H, c_uint64]),
    # distributed.h
    "ibvi_net_get_params": (STATUS, [H, F, c_int64]),
    "ibvi_net_set_params": (STATUS, [H, F, c_int64]),
    "ibvi_net_get_grads": (STATUS, [H, F, c_int64]),
    "ibvi_optimizer_step_grads": (STATUS, [H, F, c_int64]),
    "ibvi_net_set_noise_stream": (STATUS, [H, c_uint64]),
    "ibvi_net_noise_stream": (STATUS, [H, U64P]),
    "ibvi_net_grads_factored_size": (VALUE64, [H, c_int32]),
    "ibvi_net_get_grads_factored": (STATUS, [H, F, c_int64]),
    "ibvi_optimizer_step_factored": (STATUS, [H, F, c_int32, c_int64]),
    "ibvi_net_layer": (STATUS, [H, c_int32, HP]),
    "ibvi_net_forward": (STATUS, [H, F, c_int64, c_int32, F]),
    "ibvi_net_forward_mean": (STATUS, [H, F, c_int64, F]),
    "ibvi_net_forward_noise": (STATUS, [H, F, c_int64, c_int32, F, c_int64, F]),
    "ibvi_net_last_noise": (STATUS, [H, F, c_int64]),
    "ibvi_net_backward": (STATUS, [H, F, c_int64, c_int32]),
    "ibvi_layer_get_kind": (VALUE32, [H]),
    "ibvi_layer_get_role": (VALUE32, [H]),
    "ibvi_layer_has_bias": (VALUE32, [H]),
    "ibvi_layer_get_activation": (VALUE32, [H]),
    "ibvi_layer_shape": (STATUS, [H, I32P, I32P, I32P]),
    "ibvi_layer_output_shape": (STATUS, [H, I32P, I32P, I32P]),
    "ibvi_layer_param_count": (VALUE64, [H]),
    "ibvi_layer_init_std": (STATUS, [H, F, F]),
    "ibvi_layer_get_mean": (STATUS, [H, F, c_int64]),
    "ibvi_layer_set_mean": (STATUS, [H, F, c_int64]),
    "ibvi_layer_get_factor": (STATUS, [H, F, c_int64]),
    "ibvi_layer_set_factor": (STATUS, [H, F, c_int64]),
    "ibvi_layer_get_grad_mean": (STATUS, [H, F, c_int64]),
    "ibvi_layer_get_grad_factor": (STATUS, [H, F, c_int64]),
    "ibvi_net_set_covariance": (STATUS, [H, c_int32, H]),  # const ibvi_covariance_options *
    "ibvi_layer_covariance": (VALUE32, [H]),
    "ibvi_layer_get_rho": (STATUS, [H, F, c_int64]),
    "ibvi_layer_set_rho": (STATUS, [H, F, c_int64]),
    "ibvi_layer_get_grad_rho": (STATUS, [H, F, c_int64]),
    "ibvi_net_kl": (STATUS, [H, DP]),
    # loss.h
    "ibvi_loss_softmax_xent": (STATUS, [F, c_int64, c_int32, I32P, c_int64, F, F]),
    "ibvi_loss_squared": (STATUS, [F, c_int64, c_int32, F, c_int64, F, F]),
    "ibvi_loss_binary_xent": (STATUS, [F, c_int64, c_int32, F, c_int64, F, F]),
    "ibvi_loss_gaussian_nll": (STATUS, [F, c_int64, c_int32, F, c_int64, F, F]),
    "ibvi_loss": (STATUS, [c_int32, F, c_int64, c_int32, I32P, F, c_int64, F, F]),
    # optimizer.h
    "ibvi_optimizer_create": (STATUS, [HP, H, c_int32, c_float]),
    "ibvi_optimizer_free": (None, [H]),
    "ibvi_optimizer_set_lr": (STATUS, [H, c_float]),
    "ibvi_optimizer_get_lr": (STATUS, [H, F]),
    "ibvi_optimizer_set_momentum": (STATUS, [H, c_float, c_int32]),
    "ibvi_optimizer_set_adam": (STATUS, [H, c_float, c_float, c_float]),
    "ibvi_optimizer_set_kl_weight": (STATUS, [H, c_float]),
    "ibvi_optimizer_get_kl_weight": (STATUS, [H, F]),
    # deferred factor updates (issue 15 part 2, docs/deferred.md)
    "ibvi_optimizer_set_deferred": (STATUS, [H, c_int32]),
    "ibvi_optimizer_get_deferred": (STATUS, [H, I32P]),
    "ibvi_optimizer_step": (STATUS, [H]),
    "ibvi_optimizer_step_count": (VALUE64, [H]),
    "ibvi_optimizer_reset": (STATUS, [H]),
    "ibvi_layer_lr_multipliers": (STATUS, [H, c_int32, F, F]),
    "ibvi_train_step": (STATUS, [H, H, F, c_int64, c_int32, c_int32, I32P, F, F]),
    # predictor.h
    "ibvi_predictor_create": (STATUS, [HP, H, c_int32, c_uint64]),
    "ibvi_predictor_create_ensemble": (STATUS, [HP, HP, c_int32, c_int32, c_uint64]),
    "ibvi_predictor_free": (None, [H]),
    "ibvi_predictor_set_batch_size": (STATUS, [H, c_int64]),
    "ibvi_predictor_set_mean_network": (STATUS, [H, c_int32]),
    "ibvi_predictor_set_temperature": (STATUS, [H, c_float]),
    "ibvi_predictor_samples": (VALUE32, [H]),
    "ibvi_predictor_noise": (STATUS, [H, F, c_int64]),
    "ibvi_predictor_run": (STATUS, [H, F, c_int64, F, F, F, F]),
    "ibvi_head_options_init": (STATUS, [H, c_int32]),  # ibvi_head_options *
    "ibvi_predictor_set_head": (STATUS, [H, H]),  # const ibvi_head_options *
    "ibvi_predictor_head": (VALUE32, [H]),
    "ibvi_predictor_output_dim": (VALUE32, [H]),
    "ibvi_predictor_run_regression": (STATUS, [H, F, c_int64, F, F, F, F]),
    # metrics.h
    "ibvi_metrics_create": (STATUS, [HP, c_int32, AP]),
    "ibvi_metrics_free": (None, [H]),
    "ibvi_metrics_reset": (STATUS, [H]),
    "ibvi_metrics_add": (STATUS, [H, F, c_int64, I32P]),
    "ibvi_metrics_merge": (STATUS, [H, H]),
    "ibvi_metrics_count": (STATUS, [H, I64P]),
    "ibvi_metrics_accuracy": (STATUS, [H, DP]),
    "ibvi_metrics_nll": (STATUS, [H, DP]),
    "ibvi_metrics_brier": (STATUS, [H, DP]),
    "ibvi_metrics_ece": (STATUS, [H, DP]),
    "ibvi_metrics_mce": (STATUS, [H, DP]),
    "ibvi_metrics_bins": (STATUS, [H, I64P, DP, DP, c_int32]),
    "ibvi_auroc": (STATUS, [DP, F, c_int64, F, c_int64]),
    "ibvi_entropy": (STATUS, [F, F, c_int64, c_int32]),
    "ibvi_metrics_ece_adaptive": (STATUS, [H, DP, c_int32]),
    "ibvi_metrics_aurc": (STATUS, [H, DP]),
    "ibvi_metrics_risk_coverage": (STATUS, [H, DP, DP, c_int64]),
    "ibvi_auroc_ex": (STATUS, [DP, F, c_int64, F, c_int64, AP]),
    "ibvi_aupr_in": (STATUS, [DP, F, c_int64, F, c_int64, AP]),
    "ibvi_aupr_out": (STATUS, [DP, F, c_int64, F, c_int64, AP]),
    "ibvi_fpr_at_tpr": (STATUS, [DP, F, c_int64, F, c_int64, c_double, AP]),
    "ibvi_regression_rmse": (STATUS, [DP, F, F, c_int64]),
    "ibvi_regression_nll": (STATUS, [DP, F, F, F, c_int64]),
    "ibvi_regression_coverage": (STATUS, [DP, F, F, F, c_int64, DP, c_int32]),
    "ibvi_regression_calibration_error": (STATUS, [DP, F, F, F, c_int64, DP, c_int32]),
    "ibvi_regression_crps": (STATUS, [DP, F, F, F, c_int64]),
    "ibvi_normal_quantile": (STATUS, [DP, c_double]),
    # calibration.h
    "ibvi_temperature_fit": (STATUS, [F, F, c_int64, c_int32, I32P]),
    "ibvi_temperature_apply": (STATUS, [F, F, c_int64, c_int32, c_float]),
    "ibvi_fit_noise_std": (STATUS, [F, F, F, c_int64, c_int32, F]),
    # SWAG (swag.h; the diag-lowrank family's d of net.h): ibvi.Swag,
    # Layer.diag (_swag.py, _net.py). The options structs go as H.
    "ibvi_swag_options_init": (STATUS, [H]),
    "ibvi_swag_create": (STATUS, [HP, H, H]),
    "ibvi_swag_free": (None, [H]),
    "ibvi_swag_collect": (STATUS, [H, H]),
    "ibvi_swag_count": (VALUE64, [H]),
    "ibvi_swag_build": (STATUS, [H, HP]),
    "ibvi_layer_get_diag": (STATUS, [H, F, c_int64]),
    "ibvi_layer_set_diag": (STATUS, [H, F, c_int64]),
    # io.h
    "ibvi_net_save": (STATUS, [H, H, c_char_p]),
    "ibvi_net_load": (STATUS, [HP, HP, c_char_p, AP]),
    "ibvi_net_save_size": (STATUS, [H, H, I64P]),
    "ibvi_net_save_buffer": (STATUS, [H, H, U8P, c_int64]),
    "ibvi_net_load_buffer": (STATUS, [HP, HP, U8P, c_int64, AP]),
    # laplace.h
    "ibvi_laplace_options_init": (STATUS, [H]),  # ibvi_laplace_options *
    "ibvi_laplace_fit": (STATUS, [HP, H, H, F, I32P, c_int64, F, I32P, c_int64]),
    "ibvi_laplace_free": (None, [H]),
    "ibvi_laplace_prior_precision": (STATUS, [H, DP]),
    "ibvi_laplace_log_marglik": (STATUS, [H, DP]),
    "ibvi_laplace_log_marglik_at": (STATUS, [H, c_double, DP]),
    "ibvi_laplace_structure_of": (VALUE32, [H]),
    "ibvi_laplace_param_count": (VALUE64, [H]),
    "ibvi_laplace_get_hessian": (STATUS, [H, DP, c_int64]),
    "ibvi_laplace_build": (STATUS, [H, H, HP]),
    "ibvi_laplace_probit": (STATUS, [H, H, F, c_int64, F, F]),
}

_RESTYPES = {STATUS: c_int, VALUE32: c_int32, VALUE64: c_int64}


def _candidates():
    """Yields (description, path-or-name) in search order."""
    env = os.environ.get("IBVI_LIBRARY")
    if env:
        yield "IBVI_LIBRARY", env
        return  # an explicit choice: never fall back to another library
    build = os.environ.get("IBVI_BUILD_DIR")
    if build:
        yield "IBVI_BUILD_DIR", os.path.join(build, "lib", SONAME)
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.normpath(os.path.join(here, "..", "..", "build", "lib", SONAME))
    yield "build tree", tree
    found = ctypes.util.find_library("ibvi")
    if found:
        yield "find_library", found
    yield "dynamic loader", SONAME


def _load():
    tried = []
    for how, where in _candidates():
        if how in ("IBVI_BUILD_DIR", "build tree") and not os.path.exists(where):
            tried.append("%s: %s (missing)" % (how, where))
            continue
        try:
            return ctypes.CDLL(where), where
        except OSError as e:
            if how == "IBVI_LIBRARY":
                raise ImportError("ibvi: IBVI_LIBRARY=%s cannot be loaded: %s"
                                  % (where, e)) from e
            tried.append("%s: %s (%s)" % (how, where, e))
    raise ImportError("ibvi: libibvi not found; set IBVI_LIBRARY to the path "
                      "of %s or IBVI_BUILD_DIR to a meson build directory. "
                      "Tried: %s" % (SONAME, "; ".join(tried)))


def _declare(lib):
    def errcheck(result, func, args):
        if result < 0:
            raise _errors.from_status(int(result), func.__name__)
        return result

    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise ImportError("ibvi: %s lacks %s (library older than the "
                              "package?)" % (path, name)) from None
        if isinstance(restype, str):
            fn.restype = _RESTYPES[restype]
            fn.errcheck = errcheck
        else:
            fn.restype = restype
        fn.argtypes = argtypes


def version_number():
    """IBVI_VERSION_NUMBER of the loaded library (major*10000+minor*100+patch)."""
    return int(lib.ibvi_version_number())


def _check_version():
    """Before anything else is declared: a library of another major version
    may lack (or have changed) the other functions."""
    try:
        fn = lib.ibvi_version_number
    except AttributeError:
        raise ImportError("ibvi: %s is not libibvi (no ibvi_version_number)"
                          % path) from None
    fn.restype, fn.argtypes = c_int32, []
    n = version_number()
    if n // 10000 != EXPECTED_MAJOR or n < MIN_VERSION_NUMBER:
        raise ImportError(
            "ibvi: the library at %s is version %d.%d.%d; this package needs "
            "%d.x (>= %d.%d.%d)" % (path, n // 10000, n // 100 % 100, n % 100,
                                    EXPECTED_MAJOR, MIN_VERSION_NUMBER // 10000,
                                    MIN_VERSION_NUMBER // 100 % 100,
                                    MIN_VERSION_NUMBER % 100))


lib, path = _load()
_check_version()
_declare(lib)
_errors._bind(lib)

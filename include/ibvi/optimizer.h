/*
 * libibvi - optimizers and the one-call training step.
 *
 * An optimizer is bound to one network at creation and updates its means and
 * covariance factors from the gradients of the last ibvi_net_backward().
 * Each parameter's step size is the base learning rate times the multiplier
 * its parameterization gives it (docs/concepts.md, "The prior and the
 * parameterizations"): for a dense layer,
 * weight and bias multipliers for the mean, and the same divided by R for the
 * rows of the covariance factor. There is no weight decay and no KL term:
 * IBVI relies on the implicit bias of the optimizer alone.
 *
 * Threading: an optimizer and its network form one unit; use both from one
 * thread at a time.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_OPTIMIZER_H
#define IBVI_OPTIMIZER_H

#include "common.h"
#include "net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ibvi_optimizer ibvi_optimizer;

typedef enum ibvi_optimizer_kind {
    IBVI_OPT_SGD = 0, /* v = momentum v + g;  theta -= lr_p v
                         (Nesterov: theta -= lr_p (g + momentum v)) */
    IBVI_OPT_ADAM = 1 /* Adam with bias correction, lr_p = lr x multiplier */
} ibvi_optimizer_kind;

/* Creates an optimizer of `kind` for an initialised network, with base
 * learning rate lr > 0. SGD starts with the method's recipe,
 * momentum 0.9 and Nesterov off (docs/concepts.md; plain SGD:
 * ibvi_optimizer_set_momentum(opt, 0, 0)); Adam with beta1 = 0.9, beta2 = 0.999, eps = 1e-8. The network is
 * borrowed: it must outlive every use of the optimizer except
 * ibvi_optimizer_free, which may run before or after ibvi_net_free. The
 * optimizer's memory comes from the network's allocator.
 * out: receives the optimizer, owned by the caller (ibvi_optimizer_free). */
IBVI_API int ibvi_optimizer_create(ibvi_optimizer **out, ibvi_net *net,
                                   int32_t kind, float lr);

/* Releases an optimizer, before or after its network. Accepts NULL. */
IBVI_API void ibvi_optimizer_free(ibvi_optimizer *opt);

/* Base learning rate (> 0, finite); may change between steps (schedules). */
IBVI_API int ibvi_optimizer_set_lr(ibvi_optimizer *opt, float lr);
IBVI_API int ibvi_optimizer_get_lr(const ibvi_optimizer *opt, float *lr);

/* SGD only: momentum in [0, 1) and nesterov 0 or 1. */
IBVI_API int ibvi_optimizer_set_momentum(ibvi_optimizer *opt, float momentum,
                                         int32_t nesterov);

/* Adam only: beta1, beta2 in [0, 1), eps > 0. */
IBVI_API int ibvi_optimizer_set_adam(ibvi_optimizer *opt, float beta1,
                                     float beta2, float eps);

/* Applies one update from the network's current gradients. Needs a
 * ibvi_net_backward() since the network was initialised (IBVI_ERR_STATE).
 * Returns IBVI_ERR_NONFINITE, and changes nothing (parameters, optimizer
 * state, step count), when the update would make any parameter or state
 * value NaN or infinite (non-finite gradients, a learning rate far too
 * large). */
IBVI_API int ibvi_optimizer_step(ibvi_optimizer *opt);

/* Number of steps taken; a negative status for a NULL handle. An optimizer
 * at 2^53 steps (the most a model file holds, include/ibvi/io.h) refuses
 * further steps (ibvi_optimizer_step and ibvi_train_step return
 * IBVI_ERR_STATE and change nothing) until ibvi_optimizer_reset. */
IBVI_API int64_t ibvi_optimizer_step_count(const ibvi_optimizer *opt);

/* Zeroes the state (momentum, Adam moments, step count). */
IBVI_API int ibvi_optimizer_reset(ibvi_optimizer *opt);

/* The learning-rate multipliers of a dense layer's mean weights and biases
 * for optimizer `kind` (the factor rows use these divided by R). For a
 * group norm, bias_mult is gamma's and beta's (weight_mult 1). */
IBVI_API int ibvi_layer_lr_multipliers(const ibvi_layer *layer, int32_t kind,
                                       float *weight_mult, float *bias_mult);

/* One training step: forward with `samples` weight samples (>= 1, 1 is the
 * paper's recipe), the loss of `loss_kind` (an ibvi_loss_kind, with labels
 * or targets as in loss.h), backward and one optimizer update. opt must be
 * bound to net. *loss receives the minibatch loss (may be NULL).
 * A non-finite loss, or an update that would make a parameter non-finite
 * (see ibvi_optimizer_step), returns IBVI_ERR_NONFINITE and leaves the
 * parameters and the optimizer's state untouched. */
IBVI_API int ibvi_train_step(ibvi_net *net, ibvi_optimizer *opt,
                             const float *x, int64_t n, int32_t samples,
                             int32_t loss_kind, const int32_t *labels,
                             const float *targets, float *loss);

/* The weight of the KL term of the ELBO (mean-field VI): each step
 * minimises loss + weight * KL(q || p) (ibvi_net_kl), so weight is
 * kl_weight / N_train for the per-example ELBO (1 / N_train is the
 * standard ELBO; smaller values temper it). The step adds weight *
 * dKL/dmu and weight * dKL/drho of every diagonal layer to the gradients
 * it applies (the stored gradients, ibvi_layer_get_grad_mean/_rho, stay
 * the loss's); ibvi_train_step reports the loss without the KL. weight >= 0
 * and finite; 0 (the default) adds nothing, so IBVI and deterministic
 * training are unchanged. */
IBVI_API int ibvi_optimizer_set_kl_weight(ibvi_optimizer *opt, float weight);
IBVI_API int ibvi_optimizer_get_kl_weight(const ibvi_optimizer *opt,
                                          float *weight);

/* Deferred factor updates (docs/deferred.md): for SGD (plain, momentum,
 * Nesterov) on a network with low-rank layers (rank <= 64) and steps of
 * at most 8 samples, the optimizer may keep a window of the last B steps'
 * factor gradients and apply them to every covariance factor S and its
 * velocity in one pass, instead of one pass per step. The means step as
 * always; the factors, their velocities and the forwards' weights equal
 * the per-step path's up to rounding (a few float ulps per step, not bit
 * for bit). Every public read or write of a factor, of the flat
 * parameters or of the optimizer's state, a save, a predictor, a forward
 * with other noise and ibvi_optimizer_reset first settle the window: the
 * network and optimizer are then exactly as a copy saved and loaded at
 * that moment (include/ibvi/io.h), so a run resumed from a file continues
 * bit for bit like the run that saved it. Adam, diagonal (mean-field)
 * layers, steps of more than 8 samples and ranks above 64 always take the
 * per-step path.
 * steps: IBVI_DEFERRED_AUTO (-1, the default) the cost model's window,
 * which defers only where it moves less memory than the per-step path and
 * whose memory stays within the model's parameters' (ibvi_net_param_count
 * floats); 0 the per-step path (bit for bit the library's values before
 * deferred updates); 2..IBVI_DEFERRED_MAX_STEPS a window of that many
 * steps, whatever its memory. The request is a runtime schedule, not
 * saved in model files: a loaded optimizer starts at -1.
 * Memory: when the network has a workspace (ibvi_net_reserve, or a past
 * forward) the window's storage is allocated here and at
 * ibvi_optimizer_create, and ibvi_net_reserve reserves it for the
 * optimizers already created, so train steps within the reserved sizes
 * allocate nothing; otherwise the first deferred step allocates it (and
 * takes the per-step path if that fails). 0 frees it.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (another value) or
 * IBVI_ERR_NOMEM (the request unchanged). */
#define IBVI_DEFERRED_AUTO (-1)
#define IBVI_DEFERRED_MAX_STEPS 16
IBVI_API int ibvi_optimizer_set_deferred(ibvi_optimizer *opt, int32_t steps);
/* The request of ibvi_optimizer_set_deferred (-1, 0 or 2..16) into *steps. */
IBVI_API int ibvi_optimizer_get_deferred(const ibvi_optimizer *opt,
                                         int32_t *steps);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_OPTIMIZER_H */

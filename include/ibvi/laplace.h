/*
 * libibvi - the last-layer Laplace approximation (docs/laplace.md).
 *
 * Post hoc, around a trained deterministic classifier whose last layer is
 * dense with C outputs on `in` penultimate features a: its theta = [vec(W)
 * row-major (C x in); b], P = C in + C, is given the Gaussian posterior
 *     N(theta*, (H + lambda I)^-1),
 * theta* the trained means, H the generalised Gauss-Newton matrix of the
 * softmax cross-entropy over the n training examples (summed, not
 * averaged), lambda the precision of the isotropic prior N(0, 1/lambda).
 * With a~ = [a; 1] and Lambda_n = diag(p_n) - p_n p_n^T (p_n the softmax
 * of example n's logits),
 *     H[(c, i), (c', j)] = sum_n Lambda_n[c, c'] a~_n[i] a~_n[j]
 * (the bias of class c is entry i = in). The logits are linear in theta,
 * so H is also the exact Hessian of the summed loss in theta.
 *
 * Structures:
 *   FULL  H as it is, P x P doubles (one Cholesky per prior precision);
 *   KFAC  H ~ G (x) A with A = sum_n a~_n a~_n^T ((in + 1)^2) and G =
 *         (1/n) sum_n Lambda_n (C x C), eigendecomposed once, so the log
 *         determinant and the predictive variances are closed forms.
 * The full Hessian needs 8 P^2 bytes; when that exceeds the options'
 * max_bytes ibvi_laplace_fit refuses (IBVI_ERR_NOMEM) with a message that
 * names the size and KFAC. The fit peaks at about three such matrices
 * (the Hessian, a Cholesky factor, its inverse) and keeps two (the
 * Hessian, for ibvi_laplace_log_marglik_at, and the factor).
 *
 * The prior precision is chosen by the Laplace marginal likelihood
 *     log p(D) ~= -sum_n NLL_n(theta*) - lambda/2 |theta*|^2
 *                 + P/2 log lambda - 1/2 log det(H + lambda I)
 * (concave in log lambda: a golden-section search), by the probit
 * predictive's NLL on a validation set (a grid over log lambda), or given.
 *
 * Predictions: ibvi_laplace_build gives a new network with the posterior
 * on its last layer (the low-rank family with R = P and S S^T the
 * posterior covariance), which the predictor samples like any other
 * (K samples, heads, metrics, save and load); ibvi_laplace_probit gives
 * the probit approximation without sampling.
 *
 * The handle keeps no pointer to the network: the functions that need it
 * take it and check, by a hash of every layer's means, that it is the
 * network the approximation was fitted to.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_LAPLACE_H
#define IBVI_LAPLACE_H

#include "common.h"
#include "net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ibvi_laplace ibvi_laplace;

/* The Hessian's structure (pinned values). */
typedef enum ibvi_laplace_structure {
    IBVI_LAPLACE_FULL = 0,
    IBVI_LAPLACE_KFAC = 1
} ibvi_laplace_structure;

/* How the prior precision lambda is chosen (pinned values). */
typedef enum ibvi_laplace_prior {
    IBVI_LAPLACE_PRIOR_MARGLIK = 0,    /* maximise the marginal likelihood */
    IBVI_LAPLACE_PRIOR_VALIDATION = 1, /* minimise the validation NLL of the
                                          probit predictive over a grid  */
    IBVI_LAPLACE_PRIOR_FIXED = 2       /* use prior_precision             */
} ibvi_laplace_prior;

/* The options of ibvi_laplace_fit, versioned (docs/abi.md): version first,
 * later versions append fields. Fill with ibvi_laplace_options_init.
 *   structure        an ibvi_laplace_structure (default FULL);
 *   prior            an ibvi_laplace_prior (default MARGLIK);
 *   prior_precision  FIXED: lambda, finite and > 0 (default 1);
 *   lambda_min, lambda_max  the range searched by MARGLIK and VALIDATION,
 *                    0 < lambda_min < lambda_max, finite (default 1e-4,
 *                    1e6);
 *   grid_points      VALIDATION: points of the grid, evenly spaced in log
 *                    lambda over the range, 2..1000 (default 21);
 *   max_bytes        the most the full Hessian (8 P^2 bytes) may take,
 *                    >= 0 (default 1 GiB);
 *   batch            examples per forward pass while fitting, 1..65536
 *                    (default 256). */
typedef struct ibvi_laplace_options {
    uint32_t version;
    int32_t structure;
    int32_t prior;
    float prior_precision;
    float lambda_min, lambda_max;
    int32_t grid_points;
    int64_t max_bytes;
    int32_t batch;
} ibvi_laplace_options;
#define IBVI_LAPLACE_OPTIONS_VERSION 1

/* Fills *opts with version IBVI_LAPLACE_OPTIONS_VERSION and the defaults
 * above. Returns IBVI_OK or IBVI_ERR_INVALID_ARG (opts NULL). */
IBVI_API int ibvi_laplace_options_init(ibvi_laplace_options *opts);

/* Fits the approximation to net's last layer on the n training examples
 * x (n x input_dim) with labels y (n values in 0 .. C - 1), and chooses
 * the prior precision (opts->prior); x_val, y_val, n_val are the
 * validation set (needed by VALIDATION, else they may be NULL / 0, and are
 * checked when given).
 * net: initialised (IBVI_ERR_STATE else), every layer deterministic
 *      (IBVI_COVARIANCE_NONE), the last a dense layer with C >= 2 outputs
 *      (IBVI_ERR_INVALID_ARG else);
 *      its workspace grows to opts->batch rows; its parameters do not change.
 * out: receives the handle (ibvi_laplace_free); NULL on failure.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL arguments, bad options or
 * labels, n < 1), IBVI_ERR_STATE, IBVI_ERR_NONFINITE (x not finite,
 * non-finite logits, H + lambda I not positive definite in double at the
 * chosen lambda), IBVI_ERR_NOMEM (the allocator failed, or FULL with 8 P^2
 * > max_bytes: the message names the size and KFAC). */
IBVI_API int ibvi_laplace_fit(ibvi_laplace **out, ibvi_net *net,
                              const ibvi_laplace_options *opts,
                              const float *x, const int32_t *y, int64_t n,
                              const float *x_val, const int32_t *y_val,
                              int64_t n_val);

/* Releases the handle. Accepts NULL. */
IBVI_API void ibvi_laplace_free(ibvi_laplace *la);

/* The chosen prior precision lambda into *lambda. */
IBVI_API int ibvi_laplace_prior_precision(const ibvi_laplace *la,
                                          double *lambda);

/* The log marginal likelihood (the formula above, in nats) at the chosen
 * lambda into *out. */
IBVI_API int ibvi_laplace_log_marglik(const ibvi_laplace *la, double *out);

/* The same at any lambda (finite, > 0), e.g. to plot it. FULL: one
 * Cholesky of P x P, allocated for the call (IBVI_ERR_NOMEM).
 * IBVI_ERR_NONFINITE when H + lambda I is not positive definite in
 * double precision. */
IBVI_API int ibvi_laplace_log_marglik_at(const ibvi_laplace *la,
                                         double lambda, double *out);

/* The structure (an ibvi_laplace_structure) or a negative status. */
IBVI_API int32_t ibvi_laplace_structure_of(const ibvi_laplace *la);

/* P, the last layer's parameter count, or a negative status. */
IBVI_API int64_t ibvi_laplace_param_count(const ibvi_laplace *la);

/* The Hessian H (without the prior) as P x P doubles, row-major, rows and
 * columns in theta's order; KFAC: the Kronecker product G (x) A it stands
 * for. len must be P * P. */
IBVI_API int ibvi_laplace_get_hessian(const ibvi_laplace *la, double *h,
                                      int64_t len);

/* A new initialised network built like net (ibvi_net_create_like), with
 * net's parameterization, seed and means, whose last layer carries the
 * posterior: the low-rank family with R = P and S S^T = (H + lambda I)^-1
 * (FULL: S = L^-T, L the Cholesky factor of H + lambda I; KFAC: S = (U_G
 * (x) U_A) diag(1 / sqrt(g_k a_l + lambda)) from the eigenvectors), both
 * in theta's order. The factor takes 4 P^2 bytes (IBVI_ERR_NOMEM above
 * max_bytes, with the size in the message).
 * net: the fitted network (IBVI_ERR_STATE when its means changed).
 * out: receives the network (ibvi_net_free); NULL on failure. */
IBVI_API int ibvi_laplace_build(const ibvi_laplace *la, const ibvi_net *net,
                                ibvi_net **out);

/* The probit approximation of the predictive: for each of the n inputs x
 * (n x input_dim), with mu the logits of the means and var_c the
 * posterior variance of f_c - mean_d f_d (logit c off the logits' common
 * shift, which the softmax ignores and the Hessian does not constrain:
 * docs/laplace.md),
 *     probs[c] = softmax_c(mu_c / sqrt(1 + pi/8 var_c))
 * (n x C floats). var_c = a~^T Sigma~_cc a~ from C blocks of (in + 1)^2
 * formed at the fit, no Jacobian. net: the fitted network, or a network built from
 * it (the same means; the last layer's covariance is not read);
 * IBVI_ERR_STATE for another. var: NULL, or n x C floats receiving var_c.
 * The network's workspace grows to the fit's batch. */
IBVI_API int ibvi_laplace_probit(const ibvi_laplace *la, ibvi_net *net,
                                 const float *x, int64_t n, float *probs,
                                 float *var);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_LAPLACE_H */

/*
 * libibvi - loss functions and their gradients.
 *
 * Each function takes `rows` rows of network outputs and `n` targets, where
 * rows is a multiple of n: row r is compared with target r % n. This matches
 * the sample-major output of ibvi_net_forward() with several weight samples,
 * so the loss is the Monte Carlo estimate of the expected loss
 *     L = 1/(n M) sum_m sum_i loss(y_i, f_{w_m}(x_i))      (rows = n M).
 * grad (rows x cols, may be NULL) receives dL/d(outputs), already divided by
 * rows, ready for ibvi_net_backward().
 *
 * A non-finite loss returns IBVI_ERR_NONFINITE; *loss then holds the value
 * and grad is left unspecified. These functions have no handle and are
 * thread-safe.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_LOSS_H
#define IBVI_LOSS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ibvi_loss_kind {
    IBVI_LOSS_SOFTMAX_XENT = 0, /* classification, int32 labels in [0, C) */
    IBVI_LOSS_SQUARED = 1,      /* regression, float targets              */
    IBVI_LOSS_BINARY_XENT = 2,  /* independent binary outputs, targets in [0, 1] */
    IBVI_LOSS_GAUSSIAN_NLL = 3  /* outputs rows x 2D: D means then D
                                   log-variances; float targets n x D      */
} ibvi_loss_kind;

/* The range the Gaussian NLL (and the heteroscedastic prediction head,
 * predictor.h) clamps a log-variance to: variances from about 2e-9 to
 * 5e8. */
#define IBVI_LOG_VAR_MIN (-20.0f)
#define IBVI_LOG_VAR_MAX 20.0f

/* Softmax cross-entropy: mean over rows of -log softmax(f_r)[label].
 * logits: rows x classes; labels: n values in [0, classes). Computed with a
 * max-shifted log-sum-exp, so it is stable for large logits. */
IBVI_API int ibvi_loss_softmax_xent(const float *logits, int64_t rows,
                                    int32_t classes, const int32_t *labels,
                                    int64_t n, float *loss, float *grad);

/* Squared error: mean over rows of sum_j (f_rj - t_j)^2 (no factor 1/2).
 * outputs: rows x cols; targets: n x cols. */
IBVI_API int ibvi_loss_squared(const float *outputs, int64_t rows,
                               int32_t cols, const float *targets, int64_t n,
                               float *loss, float *grad);

/* Binary cross-entropy on logits: mean over rows of
 * sum_j [log(1 + exp(f_rj)) - t_j f_rj], computed stably.
 * logits: rows x cols; targets: n x cols, each in [0, 1]. */
IBVI_API int ibvi_loss_binary_xent(const float *logits, int64_t rows,
                                   int32_t cols, const float *targets,
                                   int64_t n, float *loss, float *grad);

/* Gaussian negative log-likelihood of a heteroscedastic regression: each
 * output row holds D means m_j then D log-variances s_j (cols = 2D, even),
 * targets are n x D (finite, else IBVI_ERR_NONFINITE). With
 * c_j = clamp(s_j, IBVI_LOG_VAR_MIN, IBVI_LOG_VAR_MAX):
 *     loss = mean over rows of sum_j 0.5 [log(2 pi) + c_j
 *                                        + (t_j - m_j)^2 exp(-c_j)],
 *     dloss/dm_j = -(t_j - m_j) exp(-c_j) / rows,
 *     dloss/ds_j = 0.5 [1 - (t_j - m_j)^2 exp(-c_j)] / rows inside the
 *                  range (its ends included), 0 outside it.
 * The clamp is what keeps the gradient stable: exp(-c) never overflows
 * and the mean's gradient is at most e^20 times the residual, however far
 * a log-variance strays; outside the range the loss no longer depends on
 * s (zero gradient), so a log-variance that left it stays where it is
 * while its mean keeps training. */
IBVI_API int ibvi_loss_gaussian_nll(const float *outputs, int64_t rows,
                                    int32_t cols, const float *targets,
                                    int64_t n, float *loss, float *grad);

/* Any of the above by kind: labels is used by IBVI_LOSS_SOFTMAX_XENT and
 * targets by the others; the unused one may be NULL. */
IBVI_API int ibvi_loss(int32_t kind, const float *outputs, int64_t rows,
                       int32_t cols, const int32_t *labels,
                       const float *targets, int64_t n, float *loss,
                       float *grad);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_LOSS_H */

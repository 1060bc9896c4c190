/*
 * libibvi - post-hoc calibration: temperature scaling (Guo et al., 2017),
 * and the noise std of a regression (ibvi_fit_noise_std, at the end).
 *
 * Temperature scaling is the post-hoc calibration baseline of
 * docs/concepts.md ("The baselines"): one scalar T > 0 divides the logits
 * of every input, p = softmax(f(x) / T). T is fitted on held-out data by
 * minimising the negative log-likelihood; it changes confidences but never
 * the predicted class (argmax is invariant to T > 0).
 *
 * Logits are row-major n x classes floats; labels are n int32 values in
 * [0, classes). Sums run in double, sequentially: the results do not depend
 * on threads or on anything but the inputs.
 *
 * These functions have no handle and are thread-safe.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_CALIBRATION_H
#define IBVI_CALIBRATION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The search interval of ibvi_temperature_fit(). */
#define IBVI_TEMPERATURE_MIN 0.05f
#define IBVI_TEMPERATURE_MAX 20.0f

/* Fits the temperature T minimising the mean negative log-likelihood
 *     NLL(T) = (1/n) sum_i [ logsumexp_c(logits_ic / T) - logits_iy_i / T ]
 * (natural log) over T in [IBVI_TEMPERATURE_MIN, IBVI_TEMPERATURE_MAX].
 * NLL is convex in b = 1/T, so its minimum is the root of dNLL/db =
 * (1/n) sum_i (E_softmax(b logits_i)[logits_i] - logits_iy_i), which only
 * grows with b. The root is bracketed in [1/20, 1/0.05] and found by
 * Newton's method on b (second derivative: the mean softmax variance of the
 * logits), safeguarded by geometric bisection of the bracket whenever a
 * Newton step would leave it or fails to halve the derivative. It stops when
 * the bracket is narrower than 1e-12 relative or a Newton step is below
 * 1e-12 relative, so T is exact to float precision (the result is rounded to
 * float); this takes typically 5 to 15 passes over the data, never more
 * than about 50. When the minimum lies outside the interval the nearer end
 * is returned (e.g. separable data, where the NLL keeps falling as T -> 0).
 * When the NLL does not depend on T (each row's logits all equal),
 * *temperature = 1.
 * Deterministic: the same inputs give the same T on every run (across
 * platforms, up to the last bits of the C library's exp()).
 * temperature: receives T.
 * logits: n x classes, all finite (else IBVI_ERR_NONFINITE).
 * n: >= 1; classes: >= 2; labels: n values in [0, classes).
 * All buffers are borrowed for the duration of the call.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE (then
 * *temperature is unchanged). */
IBVI_API int ibvi_temperature_fit(float *temperature, const float *logits,
                                  int64_t n, int32_t classes,
                                  const int32_t *labels);

/* Writes probs = softmax(logits / temperature) row by row, computed in
 * double with the row maximum subtracted first, so any finite logits (also
 * +-1e4 and beyond) give finite probabilities that sum to 1 up to rounding.
 * probs: n x classes floats; may be the same buffer as logits (in place),
 *      but must not overlap it otherwise.
 * logits: n x classes, all finite (else IBVI_ERR_NONFINITE, probs
 *      unchanged).
 * n: >= 1; classes: >= 1; temperature: finite and > 0.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_temperature_apply(float *probs, const float *logits,
                                    int64_t n, int32_t classes,
                                    float temperature);

/* Fits the homoscedastic noise std sigma of a regression (the
 * IBVI_HEAD_REGRESSION head's noise_std, predictor.h) on held-out data, as
 * the temperature is fitted for a classifier: sigma maximises the Gaussian
 * likelihood of the targets under N(mean, var_epistemic + sigma^2), i.e.
 * minimises
 *     NLL(sigma) = sum_i [log(v_i + sigma^2) + (t_i - m_i)^2 / (v_i + sigma^2)]
 * over every input and dimension (n x dims values each).
 *  - var_epistemic NULL or all zero: the exact closed form
 *    sigma^2 = mean of (t_i - m_i)^2, computed in double.
 *  - Otherwise a 1-D maximisation in log sigma: every minimum lies in
 *    [L, A] with A = max_i ((t_i - m_i)^2 - v_i) and L = min_i of the same
 *    (each term falls below it and rises above it); sigma = 0 when A <= 0
 *    (the epistemic variance already covers every residual). A grid of 121
 *    points in log sigma^2 over [max(L, A e^-60), A] picks the best point,
 *    then golden-section search refines it between its neighbours to
 *    double precision (the result is rounded to float): about 200 passes
 *    over the data, no allocation. sigma is never below sqrt(A) e^-30 on
 *    this path, except that 0 is returned when sigma = 0 itself is better
 *    (the likelihood is unbounded as sigma -> 0 when some v_i and its
 *    residual are both 0). Deterministic.
 * mean, targets: n x dims floats, finite; var_epistemic: n x dims floats,
 * finite and >= 0, or NULL. n >= 1, dims >= 1.
 * noise_std: receives sigma (>= 0).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE (then
 * *noise_std is unchanged). */
IBVI_API int ibvi_fit_noise_std(const float *mean, const float *var_epistemic,
                                const float *targets, int64_t n, int32_t dims,
                                float *noise_std);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_CALIBRATION_H */

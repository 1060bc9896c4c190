/*
 * libibvi - uncertainty metrics (definitions and formulas: docs/metrics.md).
 *
 * An ibvi_metrics accumulator takes predictive probabilities batch by batch
 * and reports, over all N points added so far (C classes, p_n the
 * predictive probability vector of point n, y_n its label):
 *
 *   accuracy  mean of 1[argmax_c p_n[c] = y_n]
 *   NLL       mean of -log max(p_n[y_n], 1e-12)           (natural log)
 *   Brier     mean of sum_c (p_n[c] - 1[c = y_n])^2
 *   ECE       sum_b (n_b / N) |acc_b - conf_b|
 *   MCE       max_b |acc_b - conf_b| over the non-empty bins b
 *
 * ECE, MCE and ibvi_metrics_bins() use IBVI_METRICS_BINS = 15 equal-width
 * bins on the top-label confidence conf_n = max_c p_n[c] over [0, 1]: bin b
 * (0-based) holds the points with b/15 <= conf_n < (b+1)/15, and a
 * confidence of exactly 1 goes in the last bin. n_b is the number of points
 * in bin b, acc_b the mean of 1[argmax p_n = y_n] over them and conf_b the
 * mean of their conf_n. The bin of a float confidence is exact (conf * 15 is
 * computed without rounding).
 *
 * argmax: on ties the lowest class index wins, so [0.4, 0.4, 0.2] predicts
 * class 0.
 *
 * Exact accumulation: every per-point term (NLL, Brier, confidence) is
 * computed in double and added to a fixed-point sum with 2^-64 resolution
 * held in integers, so sums are exact and independent of order: the results
 * do not depend on how the data is split into ibvi_metrics_add() calls, and
 * ibvi_metrics_merge(a, b) gives bit for bit the results of adding all of
 * a's and b's data to one accumulator. (Only the bits below 2^-64 of each
 * term are dropped, far below float precision.) Counts are int64.
 *
 * Probabilities: every value must be finite (else IBVI_ERR_NONFINITE) and
 * in [0, 1]; values at most 1e-5 outside [0, 1] are accepted as rounding
 * error and clamped to [0, 1] before use. Rows are not required to sum to 1
 * (this is not checked).
 *
 * Per-point metrics: the accumulator also keeps every point's top-label
 * confidence conf_n and hit h_n = 1[argmax p_n = y_n], 8 bytes per point
 * (80 kB for 10 000 points), in memory from its allocator that grows by
 * doubling. From them it reports the adaptive (equal-mass) ECE, the AURC
 * and the risk-coverage curve of selective classification. These also
 * depend only on the set of points added, not on the order or the split
 * into ibvi_metrics_add() / ibvi_metrics_merge() calls: the getters sort
 * the stored pairs by (confidence, hit) first, in place (the stored set is
 * unchanged; no memory is allocated), and compute in that order, so the
 * results are bit for bit the same however the data came in.
 *
 * Without an accumulator: the out-of-distribution detection metrics
 * ibvi_auroc(), ibvi_aupr_in(), ibvi_aupr_out() and ibvi_fpr_at_tpr() over
 * any score (predictive entropy, mutual information, minus the maximum
 * probability, ...); ibvi_entropy() (predictive entropy); and the
 * regression metrics of Gaussian predictive distributions,
 * ibvi_regression_*().
 *
 * Threading: one accumulator is used by one thread at a time (see
 * common.h), getters included; different accumulators are independent. The
 * functions without a handle are thread-safe (given a thread-safe
 * allocator, for those that take one).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_METRICS_H
#define IBVI_METRICS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of confidence bins of ECE, MCE and ibvi_metrics_bins(). */
#define IBVI_METRICS_BINS 15

/* A streaming accumulator of classification metrics. Created by
 * ibvi_metrics_create(), released by ibvi_metrics_free(). */
typedef struct ibvi_metrics ibvi_metrics;

/* ---- Accumulator ------------------------------------------------------- */

/* Creates an empty accumulator for `classes` classes.
 * out: receives the new accumulator, owned by the caller (free with
 *      ibvi_metrics_free); set to NULL on failure.
 * classes: >= 1.
 * allocator: NULL for malloc/free, or an allocator (both functions non-NULL)
 *      copied by the accumulator and used for its memory.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_metrics_create(ibvi_metrics **out, int32_t classes,
                                 const ibvi_allocator *allocator);

/* Releases an accumulator. Accepts NULL. */
IBVI_API void ibvi_metrics_free(ibvi_metrics *m);

/* Forgets all data added so far; the number of classes, the allocator and
 * the per-point store's memory (for reuse) are kept. Returns IBVI_OK or IBVI_ERR_INVALID_ARG (m is NULL). */
IBVI_API int ibvi_metrics_reset(ibvi_metrics *m);

/* Adds n points.
 * probs: n x classes predictive probabilities, row-major, each finite and
 *      in [0, 1] (see the tolerance above). Borrowed for the call only.
 * n: number of points, > 0.
 * labels: n labels, each in [0, classes). Borrowed for the call only.
 * All inputs are checked, and room for the n points' (confidence, hit)
 * pairs is made, before anything is added: on failure the accumulator is
 * unchanged.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL pointer, n <= 0, a label out
 * of range, a probability outside [0, 1], or more than INT64_MAX points in
 * total), IBVI_ERR_NONFINITE (a probability is NaN or infinite) or
 * IBVI_ERR_NOMEM (the per-point store could not grow). */
IBVI_API int ibvi_metrics_add(ibvi_metrics *m, const float *probs, int64_t n,
                              const int32_t *labels);

/* Adds the data of src to dst, exactly as if every point added to src had
 * been added to dst (bit for bit, see "Exact accumulation" above). src is
 * not changed; dst == src is allowed and counts src's data twice.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (a NULL pointer or more than
 * INT64_MAX points in total), IBVI_ERR_SHAPE (the two accumulators have
 * different numbers of classes) or IBVI_ERR_NOMEM (dst's per-point store
 * could not grow); on failure dst is unchanged. */
IBVI_API int ibvi_metrics_merge(ibvi_metrics *dst, const ibvi_metrics *src);

/* ---- Results ---------------------------------------------------------------
 * Each getter reads the data added so far; the accumulator is not changed.
 * On failure the output is left unchanged. The getters other than
 * ibvi_metrics_count() return IBVI_ERR_STATE while no point has been added
 * (after creation or ibvi_metrics_reset()), and IBVI_ERR_INVALID_ARG when a
 * pointer is NULL. */

/* *n = the number of points added so far (0 when empty: no IBVI_ERR_STATE).
 * Returns IBVI_OK or IBVI_ERR_INVALID_ARG. */
IBVI_API int ibvi_metrics_count(const ibvi_metrics *m, int64_t *n);

/* *out = accuracy = mean of 1[argmax_c p_n[c] = y_n] (ties: lowest index).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_accuracy(const ibvi_metrics *m, double *out);

/* *out = NLL = mean of -log max(p_n[y_n], 1e-12), natural log (nats). A
 * point whose true class has probability 0 contributes -log(1e-12) =
 * 27.631... Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_nll(const ibvi_metrics *m, double *out);

/* *out = Brier score = mean of sum_c (p_n[c] - 1[c = y_n])^2, in [0, 2] for
 * rows that sum to 1. Returns IBVI_OK, IBVI_ERR_INVALID_ARG or
 * IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_brier(const ibvi_metrics *m, double *out);

/* *out = expected calibration error ECE = sum_b (n_b / N) |acc_b - conf_b|
 * over the IBVI_METRICS_BINS bins (empty bins contribute 0).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_ece(const ibvi_metrics *m, double *out);

/* *out = maximum calibration error MCE = max_b |acc_b - conf_b| over the
 * non-empty bins. Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_mce(const ibvi_metrics *m, double *out);

/* The reliability diagram: for each bin b in [0, nbins), counts[b] = n_b,
 * accuracy[b] = acc_b and confidence[b] = conf_b (both 0 for an empty
 * bin). Bin b covers confidences [b/15, (b+1)/15), the last bin also 1.
 * counts, accuracy, confidence: caller's arrays of nbins values, all three
 *      non-NULL; borrowed for the call only.
 * nbins: must be IBVI_METRICS_BINS.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_bins(const ibvi_metrics *m, int64_t *counts,
                               double *accuracy, double *confidence,
                               int32_t nbins);

/* ---- Per-point results (see "Per-point metrics" above) --------------------
 * Same conventions as the getters above (IBVI_ERR_STATE while empty,
 * IBVI_ERR_INVALID_ARG for NULL pointers, outputs unchanged on failure);
 * each sorts the stored points in place in O(N log N). */

/* *out = adaptive (equal-mass) ECE with nbins bins: the points sorted by
 * confidence (ties by hit, misses first) are cut into nbins consecutive
 * groups, group b (0-based) holding sorted positions
 * [floor(b N / nbins), floor((b + 1) N / nbins)), and
 *     ECE_adaptive = sum_b (n_b / N) |acc_b - conf_b|
 * over the non-empty groups (nbins > N gives N groups of one point).
 * nbins: >= 1; mnist_train uses IBVI_METRICS_BINS.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_ece_adaptive(const ibvi_metrics *m, double *out,
                                       int32_t nbins);

/* *out = area under the risk-coverage curve of selective classification,
 * accepting the most confident points first:
 *     AURC = (1/N) sum_{k=1..N} E(k) / k,
 * E(k) the errors (1 - h_n) among the k most confident points. Within a
 * group of g equally confident points with e errors, E grows by e/g per
 * point: E(k) is then the expected error count over a random order of the
 * tied points (ties are never split arbitrarily). In [0, 1]; lower is
 * better; 0 only when nothing is wrong.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_aurc(const ibvi_metrics *m, double *out);

/* The risk-coverage curve: risk[i] = E(x) / x at x = coverage[i] N
 * accepted points, E the piecewise linear extension of E(k) above (linear
 * between k and k + 1, and across each tie group). risk at coverage 1 is
 * the error rate 1 - accuracy.
 * risk: caller's array of n doubles; unchanged on failure.
 * coverage: n values in (0, 1], non-decreasing. Both arrays are borrowed
 *      for the call only.
 * n: > 0.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL pointer, n <= 0, a coverage
 * outside (0, 1] or decreasing), IBVI_ERR_NONFINITE (a NaN coverage) or
 * IBVI_ERR_STATE. */
IBVI_API int ibvi_metrics_risk_coverage(const ibvi_metrics *m, double *risk,
                                        const double *coverage, int64_t n);

/* ---- Functions without a handle ---------------------------------------- */

/* Area under the ROC curve for separating out-of-distribution points
 * (positives) from in-distribution points (negatives) by a score where
 * higher means "more likely out of distribution" (e.g. predictive entropy):
 *     AUROC = 1/(n_in n_out)
 *             sum_{i,j} (1[out_j > in_i] + 1/2 1[out_j = in_i]),
 * the probability that a random OOD point scores higher than a random
 * in-distribution point, ties counting one half. 1 is perfect separation,
 * 0.5 chance (or all scores tied), 0 perfectly reversed.
 * out: receives the AUROC in [0, 1]; unchanged on failure.
 * in_scores: n_in scores of in-distribution points, n_in > 0.
 * out_scores: n_out scores of out-of-distribution points, n_out > 0.
 * Scores may be infinite but not NaN; -0 and +0 tie. Both arrays are
 * borrowed for the call only and not modified.
 * Runs in O(n log n) (n = n_in + n_out): it sorts copies of the scores in
 * n * sizeof(float) bytes of temporary memory taken with malloc and
 * released before returning (ibvi_auroc_ex() takes an allocator). The pair
 * count is exact for n_in n_out < 2^62. Thread-safe.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL pointer or a count <= 0),
 * IBVI_ERR_NONFINITE (a NaN score) or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_auroc(double *out, const float *in_scores, int64_t n_in,
                        const float *out_scores, int64_t n_out);

/* ibvi_auroc() with its temporary memory from `allocator` (NULL for
 * malloc/free; else both functions non-NULL, else IBVI_ERR_INVALID_ARG).
 * The same result bit for bit. The functions below follow the same
 * conventions as these two: in_scores (n_in > 0) and out_scores
 * (n_out > 0) borrowed for the call, higher score = more likely out of
 * distribution, infinite scores allowed, NaN refused (IBVI_ERR_NONFINITE),
 * -0 and +0 tie, n_in + n_out floats of temporary memory from the
 * allocator (IBVI_ERR_NOMEM), *out unchanged on failure, thread-safe,
 * O(n log n). All of them group tied scores: every threshold is one
 * distinct score value t and takes all points scoring t at once. */
IBVI_API int ibvi_auroc_ex(double *out, const float *in_scores, int64_t n_in,
                           const float *out_scores, int64_t n_out,
                           const ibvi_allocator *allocator);

/* *out = AUPR-out: the average precision of detecting the OOD points
 * (positives) by score s, as sklearn's average_precision_score:
 *     AP = sum_t (R_t - R_prev) P_t
 * over the distinct scores t from the highest down, with TP_t = #{out >= t},
 * FP_t = #{in >= t}, P_t = TP_t / (TP_t + FP_t), R_t = TP_t / n_out (R
 * starts at 0). In (0, 1]; a score that says nothing (all tied) gives the
 * OOD fraction n_out / (n_in + n_out).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_NONFINITE or
 * IBVI_ERR_NOMEM. */
IBVI_API int ibvi_aupr_out(double *out, const float *in_scores, int64_t n_in,
                           const float *out_scores, int64_t n_out,
                           const ibvi_allocator *allocator);

/* *out = AUPR-in: the same average precision with the in-distribution
 * points as positives and -s as their score (so thresholds run from the
 * lowest score up: TP_t = #{in <= t}, FP_t = #{out <= t}, R_t = TP_t /
 * n_in). All tied gives n_in / (n_in + n_out).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_NONFINITE or
 * IBVI_ERR_NOMEM. */
IBVI_API int ibvi_aupr_in(double *out, const float *in_scores, int64_t n_in,
                          const float *out_scores, int64_t n_out,
                          const ibvi_allocator *allocator);

/* *out = the false positive rate FP_t / n_in at the highest threshold t
 * (a distinct score value; points with s >= t are flagged OOD) whose true
 * positive rate TP_t / n_out (computed as a double division) is >= tpr:
 * the fraction of in-distribution points wrongly flagged when at least
 * the fraction tpr of the OOD points is caught. tpr = 0.95 gives FPR95.
 * tpr: in (0, 1].
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (also a tpr outside (0, 1] or
 * NaN), IBVI_ERR_NONFINITE or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_fpr_at_tpr(double *out, const float *in_scores,
                             int64_t n_in, const float *out_scores,
                             int64_t n_out, double tpr,
                             const ibvi_allocator *allocator);

/* Entropy of each row: out[i] = H[p_i] = -sum_c p_i[c] log p_i[c], natural
 * log (nats), with 0 log 0 = 0; summed in double, stored as float. Applied
 * to predictive probabilities it is the predictive entropy; the mean over
 * samples k of the entropies of the per-sample probabilities p_ik is the
 * expected entropy, and predictive minus expected entropy the mutual
 * information (docs/concepts.md, "Prediction and metrics"). A uniform row gives log(classes).
 * out: caller's array of n floats; unchanged on failure.
 * probs: n x classes probabilities, row-major, checked as for
 *      ibvi_metrics_add() (finite, in [0, 1] up to 1e-5, clamped).
 * n: > 0. classes: >= 1.
 * Both arrays are borrowed for the call only. Thread-safe.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_entropy(float *out, const float *probs, int64_t n,
                          int32_t classes);

/* ---- Regression: Gaussian predictive distributions ------------------------
 * Point i has the predictive N(mean[i], var[i]) and the target y[i]; n
 * points (a network with several outputs passes all rows x outputs values,
 * each taken as its own Gaussian). All arrays are borrowed for the call
 * only. Checks, before anything is written: pointers non-NULL
 * (IBVI_ERR_INVALID_ARG), n > 0 (IBVI_ERR_INVALID_ARG), means and targets
 * finite (IBVI_ERR_NONFINITE), variances finite (IBVI_ERR_NONFINITE) and
 * > 0 (IBVI_ERR_INVALID_ARG), levels in (0, 1) (IBVI_ERR_INVALID_ARG, NaN
 * included) and n_levels >= 1. Terms are computed in double and summed in
 * index order. Thread-safe; no memory is allocated. */

/* *out = RMSE = sqrt(mean of (y_i - mean_i)^2).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_regression_rmse(double *out, const float *mean,
                                  const float *y, int64_t n);

/* *out = mean Gaussian negative log-likelihood, natural log (nats):
 *     mean of 1/2 log(2 pi var_i) + (y_i - mean_i)^2 / (2 var_i).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_regression_nll(double *out, const float *mean,
                                 const float *var, const float *y, int64_t n);

/* coverage[j] = fraction of the points whose target lies in the central
 * interval of mass levels[j]: |y_i - mean_i| <= z_j sqrt(var_i) with
 * z_j = Phi^-1((1 + levels[j]) / 2) (ibvi_normal_quantile), boundary
 * included. A calibrated predictive has coverage[j] close to levels[j].
 * coverage: caller's array of n_levels doubles.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_regression_coverage(double *coverage, const float *mean,
                                      const float *var, const float *y,
                                      int64_t n, const double *levels,
                                      int32_t n_levels);

/* *out = regression calibration error over the levels:
 *     mean over j of |coverage[j] - levels[j]|
 * (coverage as ibvi_regression_coverage). In [0, 1); 0 is calibrated.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_regression_calibration_error(double *out, const float *mean,
                                               const float *var,
                                               const float *y, int64_t n,
                                               const double *levels,
                                               int32_t n_levels);

/* *out = mean continuous ranked probability score of the Gaussian
 * predictives, in closed form (units of y; lower is better):
 *     CRPS_i = sigma_i (z_i (2 Phi(z_i) - 1) + 2 phi(z_i) - 1/sqrt(pi)),
 * sigma_i = sqrt(var_i), z_i = (y_i - mean_i) / sigma_i, phi and Phi the
 * standard normal density and CDF.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NONFINITE. */
IBVI_API int ibvi_regression_crps(double *out, const float *mean,
                                  const float *var, const float *y, int64_t n);

/* *out = Phi^-1(p), the standard normal quantile, 0 < p < 1: relative error
 * below 1e-15 (a few ulp) for p >= 1e-300, near p = 1/2 too (an A&S
 * 26.2.23 start refined by Halley steps on erfc, or erf near the centre;
 * the upper half by symmetry). Thread-safe.
 * Returns IBVI_OK or IBVI_ERR_INVALID_ARG (out NULL, p outside (0, 1) or
 * NaN; *out unchanged). */
IBVI_API int ibvi_normal_quantile(double *out, double p);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_METRICS_H */

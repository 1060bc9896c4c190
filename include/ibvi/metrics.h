/*
 * libibvi - uncertainty metrics (definitions: docs/concepts.md,
 * "Prediction and metrics").
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
 * The functions ibvi_auroc() (out-of-distribution detection) and
 * ibvi_entropy() (predictive entropy) need no accumulator.
 *
 * Threading: one accumulator is used by one thread at a time (see
 * common.h); different accumulators are independent. ibvi_auroc() and
 * ibvi_entropy() have no handle and are thread-safe.
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

/* Forgets all data added so far; the number of classes and the allocator
 * are kept. Returns IBVI_OK or IBVI_ERR_INVALID_ARG (m is NULL). */
IBVI_API int ibvi_metrics_reset(ibvi_metrics *m);

/* Adds n points.
 * probs: n x classes predictive probabilities, row-major, each finite and
 *      in [0, 1] (see the tolerance above). Borrowed for the call only.
 * n: number of points, > 0.
 * labels: n labels, each in [0, classes). Borrowed for the call only.
 * All inputs are checked before anything is added: on failure the
 * accumulator is unchanged.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL pointer, n <= 0, a label out
 * of range, a probability outside [0, 1], or more than INT64_MAX points in
 * total) or IBVI_ERR_NONFINITE (a probability is NaN or infinite). */
IBVI_API int ibvi_metrics_add(ibvi_metrics *m, const float *probs, int64_t n,
                              const int32_t *labels);

/* Adds the data of src to dst, exactly as if every point added to src had
 * been added to dst (bit for bit, see "Exact accumulation" above). src is
 * not changed; dst == src is allowed and counts src's data twice.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (a NULL pointer or more than
 * INT64_MAX points in total; dst is then unchanged) or IBVI_ERR_SHAPE (the
 * two accumulators have different numbers of classes). */
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
 * released before returning. The pair count is exact for n_in n_out < 2^62.
 * Thread-safe.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL pointer or a count <= 0),
 * IBVI_ERR_NONFINITE (a NaN score) or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_auroc(double *out, const float *in_scores, int64_t n_in,
                        const float *out_scores, int64_t n_out);

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

#ifdef __cplusplus
}
#endif

#endif /* IBVI_METRICS_H */

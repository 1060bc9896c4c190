/*
 * libibvi - out-of-distribution detection metrics: AUROC, AUPR-in,
 * AUPR-out and the FPR at a TPR, for any score where higher means "more
 * likely out of distribution" (docs/metrics.md).
 *
 * All four sort copies of the two score arrays (memory from the caller's
 * allocator) and then walk the distinct score values once, taking every
 * point that has the current value, in- and out-of-distribution alike, in
 * one step: tied scores are never split.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "ibvi/metrics.h"

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Sorted copies of the two score arrays, or what went wrong. */
typedef struct sorted_scores {
    ibvi_allocator a;
    float *in, *out; /* ascending; one block, freed through `in` */
    int64_t n_in, n_out;
} sorted_scores;

/* Validates the arguments every function here shares (out, the arrays and
 * counts, NaN scores, the allocator) and sorts copies of the scores; with
 * negate, the copies hold -score. Nothing is allocated on failure. */
static int sort_scores(const char *fn, const double *out,
                       const float *in_scores, int64_t n_in,
                       const float *out_scores, int64_t n_out,
                       const ibvi_allocator *allocator, int negate,
                       sorted_scores *s)
{
    IBVI_CHECK_NOT_NULL(fn, out);
    IBVI_CHECK_NOT_NULL(fn, in_scores);
    IBVI_CHECK_NOT_NULL(fn, out_scores);
    if (n_in <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n_in = %lld, expected > 0",
                          fn, (long long)n_in);
    if (n_out <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n_out = %lld, expected > 0", fn,
                          (long long)n_out);
    const uint64_t max_scores = SIZE_MAX / sizeof(float);
    if ((uint64_t)n_in > max_scores ||
        (uint64_t)n_out > max_scores - (uint64_t)n_in)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n_in + n_out = %lld + %lld is too large", fn,
                          (long long)n_in, (long long)n_out);
    for (int64_t i = 0; i < n_in; i++)
        if (isnan(in_scores[i]))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: in_scores[%lld] is NaN, expected a number",
                              fn, (long long)i);
    for (int64_t j = 0; j < n_out; j++)
        if (isnan(out_scores[j]))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: out_scores[%lld] is NaN, expected a number",
                              fn, (long long)j);
    int status = ibvi__allocator_resolve(allocator, &s->a, fn);
    if (status < 0)
        return status;
    size_t total = (size_t)n_in + (size_t)n_out;
    float *ins = ibvi__alloc(&s->a, total, sizeof(float));
    if (!ins)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory for %zu scores",
                          fn, total);
    float *outs = ins + n_in;
    const float sign = negate ? -1.0f : 1.0f;
    for (int64_t i = 0; i < n_in; i++)
        ins[i] = sign * in_scores[i];
    for (int64_t j = 0; j < n_out; j++)
        outs[j] = sign * out_scores[j];
    qsort(ins, (size_t)n_in, sizeof(float), cmp_float);
    qsort(outs, (size_t)n_out, sizeof(float), cmp_float);
    s->in = ins;
    s->out = outs;
    s->n_in = n_in;
    s->n_out = n_out;
    return IBVI_OK;
}

static void release_scores(sorted_scores *s)
{
    ibvi__free(&s->a, s->in);
}

/* ---- AUROC ------------------------------------------------------------- */

static int auroc(const char *fn, double *out, const float *in_scores,
                 int64_t n_in, const float *out_scores, int64_t n_out,
                 const ibvi_allocator *allocator)
{
    sorted_scores s;
    int status = sort_scores(fn, out, in_scores, n_in, out_scores, n_out,
                             allocator, 0, &s);
    if (status < 0)
        return status;
    const float *ins = s.in, *outs = s.out;
    /* For each OOD score v (ascending): lo = #{in < v}, hi = #{in <= v};
     * the pair count in halves is 2 lo + (hi - lo) = lo + hi. */
    const int exact = (uint64_t)n_in <= ((uint64_t)1 << 62) / (uint64_t)n_out;
    uint64_t halves = 0;
    double halves_d = 0.0;
    int64_t lo = 0, hi = 0;
    for (int64_t j = 0; j < n_out; j++) {
        float v = outs[j];
        while (lo < n_in && ins[lo] < v)
            lo++;
        if (hi < lo)
            hi = lo;
        while (hi < n_in && ins[hi] <= v)
            hi++;
        if (exact)
            halves += (uint64_t)lo + (uint64_t)hi;
        else
            halves_d += (double)lo + (double)hi;
    }
    release_scores(&s);
    double num = exact ? (double)halves : halves_d;
    *out = num / (2.0 * (double)n_in * (double)n_out);
    return IBVI_OK;
}

int ibvi_auroc(double *out, const float *in_scores, int64_t n_in,
               const float *out_scores, int64_t n_out)
{
    return auroc("ibvi_auroc", out, in_scores, n_in, out_scores, n_out, NULL);
}

int ibvi_auroc_ex(double *out, const float *in_scores, int64_t n_in,
                  const float *out_scores, int64_t n_out,
                  const ibvi_allocator *allocator)
{
    return auroc("ibvi_auroc_ex", out, in_scores, n_in, out_scores, n_out,
                 allocator);
}

/* ---- Thresholds, from the highest score down --------------------------------
 * pos and neg ascending; *i and *j the numbers of positives and negatives
 * not yet taken (the lowest ones). Takes every remaining point whose score
 * equals the highest remaining score t: *dtp positives and *dfp negatives
 * (-0 and +0 are one value). Returns 0 when nothing is left. */
static int next_threshold(const float *pos, int64_t *i, const float *neg,
                          int64_t *j, int64_t *dtp, int64_t *dfp)
{
    if (*i == 0 && *j == 0)
        return 0;
    float t;
    if (*i == 0)
        t = neg[*j - 1];
    else if (*j == 0)
        t = pos[*i - 1];
    else
        t = pos[*i - 1] > neg[*j - 1] ? pos[*i - 1] : neg[*j - 1];
    int64_t a = *i, b = *j;
    while (a > 0 && pos[a - 1] == t)
        a--;
    while (b > 0 && neg[b - 1] == t)
        b--;
    *dtp = *i - a;
    *dfp = *j - b;
    *i = a;
    *j = b;
    return 1;
}

/* Average precision of positives pos against negatives neg, higher score =
 * positive: sum over thresholds of (R_k - R_{k-1}) P_k. */
static double average_precision(const float *pos, int64_t n_pos,
                                const float *neg, int64_t n_neg)
{
    int64_t i = n_pos, j = n_neg, tp = 0, fp = 0, dtp, dfp;
    double sum = 0.0;
    while (i > 0 && next_threshold(pos, &i, neg, &j, &dtp, &dfp)) {
        tp += dtp;
        fp += dfp;
        if (dtp > 0)
            sum += (double)dtp * ((double)tp / (double)(tp + fp));
    }
    return sum / (double)n_pos;
}

/* ---- AUPR -------------------------------------------------------------- */

int ibvi_aupr_out(double *out, const float *in_scores, int64_t n_in,
                  const float *out_scores, int64_t n_out,
                  const ibvi_allocator *allocator)
{
    sorted_scores s;
    int status = sort_scores("ibvi_aupr_out", out, in_scores, n_in,
                             out_scores, n_out, allocator, 0, &s);
    if (status < 0)
        return status;
    const double ap = average_precision(s.out, n_out, s.in, n_in);
    release_scores(&s);
    *out = ap;
    return IBVI_OK;
}

int ibvi_aupr_in(double *out, const float *in_scores, int64_t n_in,
                 const float *out_scores, int64_t n_out,
                 const ibvi_allocator *allocator)
{
    sorted_scores s;
    int status = sort_scores("ibvi_aupr_in", out, in_scores, n_in,
                             out_scores, n_out, allocator, 1, &s);
    if (status < 0)
        return status;
    const double ap = average_precision(s.in, n_in, s.out, n_out);
    release_scores(&s);
    *out = ap;
    return IBVI_OK;
}

/* ---- FPR at a TPR ------------------------------------------------------ */

int ibvi_fpr_at_tpr(double *out, const float *in_scores, int64_t n_in,
                    const float *out_scores, int64_t n_out, double tpr,
                    const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_fpr_at_tpr";
    if (isnan(tpr) || !(tpr > 0.0 && tpr <= 1.0))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: tpr = %g, expected in (0, 1]", fn, tpr);
    sorted_scores s;
    int status = sort_scores(fn, out, in_scores, n_in, out_scores, n_out,
                             allocator, 0, &s);
    if (status < 0)
        return status;
    /* OOD points are the positives; lower the threshold group by group
     * until TPR = tp / n_out reaches tpr (it does: tp ends at n_out). */
    int64_t i = n_out, j = n_in, tp = 0, fp = 0, dtp, dfp;
    while (next_threshold(s.out, &i, s.in, &j, &dtp, &dfp)) {
        tp += dtp;
        fp += dfp;
        if ((double)tp / (double)n_out >= tpr)
            break;
    }
    release_scores(&s);
    *out = (double)fp / (double)n_in;
    return IBVI_OK;
}

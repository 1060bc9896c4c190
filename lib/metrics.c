/*
 * libibvi - uncertainty metrics: the streaming classification accumulator,
 * OOD AUROC and per-row entropy (SPEC.md section 5).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "ibvi/metrics.h"

/* Probabilities this far outside [0, 1] are taken as rounding and clamped. */
#define PROB_TOL 1e-5
/* NLL floor on the true class's probability (SPEC.md section 5). */
#define NLL_FLOOR 1e-12

/* ---- Exact fixed-point sums ------------------------------------------------
 * A non-negative sum held as w[2] 2^64 + w[1] + w[0] 2^-64 in integers.
 * Integer addition is associative, so the sum of a set of terms does not
 * depend on their order or grouping: this is what makes ibvi_metrics_merge()
 * bit-exact. Each term is truncated to a multiple of 2^-64. */
typedef struct xsum {
    uint64_t w[3];
} xsum;

static void xsum_add_words(xsum *s, uint64_t lo, uint64_t mid, uint64_t hi)
{
    uint64_t r0 = s->w[0] + lo;
    uint64_t c0 = r0 < lo;
    uint64_t r1 = s->w[1] + mid;
    uint64_t c1 = r1 < mid;
    r1 += c0;
    c1 += r1 < c0;
    s->w[0] = r0;
    s->w[1] = r1;
    s->w[2] += hi + c1;
}

/* Adds x, 0 <= x < 2^64 (every term here is at most max(classes, 28)). */
static void xsum_add(xsum *s, double x)
{
    double ip = floor(x);
    double frac = x - ip; /* exact */
    /* frac * 2^64 < 2^64 exactly; the conversion truncates below 2^-64. */
    double scaled = ldexp(frac, 64);
    xsum_add_words(s, (uint64_t)scaled, (uint64_t)ip, 0);
}

static void xsum_merge(xsum *s, const xsum *t)
{
    xsum_add_words(s, t->w[0], t->w[1], t->w[2]);
}

static double xsum_value(const xsum *s)
{
    /* Smallest part first; each conversion is a pure function of the words. */
    return (ldexp((double)s->w[0], -64) + (double)s->w[1]) +
           ldexp((double)s->w[2], 64);
}

/* ---- The accumulator --------------------------------------------------- */

struct ibvi_metrics {
    ibvi_allocator allocator;
    int32_t classes;
    int64_t count;
    int64_t correct;
    xsum nll;
    xsum brier;
    int64_t bin_count[IBVI_METRICS_BINS];
    int64_t bin_correct[IBVI_METRICS_BINS];
    xsum bin_conf[IBVI_METRICS_BINS];
};

static void metrics_clear(ibvi_metrics *m)
{
    m->count = 0;
    m->correct = 0;
    m->nll = (xsum){{0, 0, 0}};
    m->brier = (xsum){{0, 0, 0}};
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        m->bin_count[b] = 0;
        m->bin_correct[b] = 0;
        m->bin_conf[b] = (xsum){{0, 0, 0}};
    }
}

/* Checks n x classes probabilities: finite and within PROB_TOL of [0, 1]. */
static int check_probs(const char *fn, const float *probs, int64_t n,
                       int32_t classes)
{
    for (int64_t i = 0; i < n; i++) {
        const float *row = probs + i * classes;
        for (int32_t c = 0; c < classes; c++) {
            float p = row[c];
            if (!isfinite(p))
                return ibvi__fail(IBVI_ERR_NONFINITE,
                                  "%s: probs[%lld][%d] = %g, expected a finite "
                                  "probability in [0, 1]",
                                  fn, (long long)i, (int)c, (double)p);
            if ((double)p < -PROB_TOL || (double)p > 1.0 + PROB_TOL)
                return ibvi__fail(IBVI_ERR_INVALID_ARG,
                                  "%s: probs[%lld][%d] = %.9g, expected a "
                                  "probability in [0, 1]",
                                  fn, (long long)i, (int)c, (double)p);
        }
    }
    return IBVI_OK;
}

static double clamp01(float p)
{
    double x = (double)p;
    return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
}

/* The bin of a confidence in [0, 1]. conf * 15 is exact in double for a
 * float conf (24 + 4 significant bits), so the floor is the exact bin. */
static int conf_bin(double conf)
{
    int b = (int)(conf * IBVI_METRICS_BINS);
    return b >= IBVI_METRICS_BINS ? IBVI_METRICS_BINS - 1 : b;
}

int ibvi_metrics_create(ibvi_metrics **out, int32_t classes,
                        const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_metrics_create";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (classes < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: classes = %d, expected >= 1", fn, (int)classes);
    ibvi_allocator a;
    if (allocator) {
        if (!allocator->alloc || !allocator->free)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: allocator->%s is NULL, expected a function",
                              fn, allocator->alloc ? "free" : "alloc");
        a = *allocator;
    } else {
        ibvi__allocator_default(&a);
    }
    ibvi_metrics *m = ibvi__alloc(&a, 1, sizeof *m);
    if (!m)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for %zu bytes", fn, sizeof *m);
    m->allocator = a;
    m->classes = classes;
    metrics_clear(m);
    *out = m;
    return IBVI_OK;
}

void ibvi_metrics_free(ibvi_metrics *m)
{
    if (!m)
        return;
    ibvi_allocator a = m->allocator;
    ibvi__free(&a, m);
}

int ibvi_metrics_reset(ibvi_metrics *m)
{
    IBVI_CHECK_NOT_NULL("ibvi_metrics_reset", m);
    metrics_clear(m);
    return IBVI_OK;
}

int ibvi_metrics_add(ibvi_metrics *m, const float *probs, int64_t n,
                     const int32_t *labels)
{
    static const char fn[] = "ibvi_metrics_add";
    IBVI_CHECK_NOT_NULL(fn, m);
    IBVI_CHECK_NOT_NULL(fn, probs);
    IBVI_CHECK_NOT_NULL(fn, labels);
    if (n <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    const int32_t classes = m->classes;
    if (n > INT64_MAX / classes)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld rows of %d classes overflow int64", fn,
                          (long long)n, (int)classes);
    if (n > INT64_MAX - m->count)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld on top of %lld points, expected at "
                          "most INT64_MAX in total",
                          fn, (long long)n, (long long)m->count);
    /* Validate everything first so a failure leaves m unchanged. */
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: labels[%lld] = %d, expected in [0, %d)", fn,
                              (long long)i, (int)labels[i], (int)classes);
    int status = check_probs(fn, probs, n, classes);
    if (status < 0)
        return status;

    for (int64_t i = 0; i < n; i++) {
        const float *row = probs + i * classes;
        const int32_t y = labels[i];
        int32_t top = 0;
        double conf = clamp01(row[0]);
        double brier = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            double p = clamp01(row[c]);
            if (p > conf) { /* strict: ties keep the lowest index */
                conf = p;
                top = c;
            }
            double d = p - (c == y ? 1.0 : 0.0);
            brier += d * d;
        }
        double py = clamp01(row[y]);
        double nll = -log(py > NLL_FLOOR ? py : NLL_FLOOR);
        int hit = top == y;
        int b = conf_bin(conf);

        m->correct += hit;
        xsum_add(&m->nll, nll);
        xsum_add(&m->brier, brier);
        m->bin_count[b] += 1;
        m->bin_correct[b] += hit;
        xsum_add(&m->bin_conf[b], conf);
    }
    m->count += n;
    return IBVI_OK;
}

int ibvi_metrics_merge(ibvi_metrics *dst, const ibvi_metrics *src)
{
    static const char fn[] = "ibvi_metrics_merge";
    IBVI_CHECK_NOT_NULL(fn, dst);
    IBVI_CHECK_NOT_NULL(fn, src);
    if (dst->classes != src->classes)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: src has %d classes, expected %d as dst", fn,
                          (int)src->classes, (int)dst->classes);
    if (src->count > INT64_MAX - dst->count)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: %lld + %lld points, expected at most INT64_MAX",
                          fn, (long long)dst->count, (long long)src->count);
    /* Read src's fields before writing dst's: dst == src is allowed. */
    const int64_t count = src->count, correct = src->correct;
    const xsum nll = src->nll, brier = src->brier;
    dst->count += count;
    dst->correct += correct;
    xsum_merge(&dst->nll, &nll);
    xsum_merge(&dst->brier, &brier);
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        const int64_t bc = src->bin_count[b], bk = src->bin_correct[b];
        const xsum bs = src->bin_conf[b];
        dst->bin_count[b] += bc;
        dst->bin_correct[b] += bk;
        xsum_merge(&dst->bin_conf[b], &bs);
    }
    return IBVI_OK;
}

/* Common checks of the getters that need data. */
static int check_getter(const char *fn, const ibvi_metrics *m, const void *out,
                        const char *out_name)
{
    if (!m)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: m is NULL", fn);
    if (!out)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: %s is NULL", fn, out_name);
    if (m->count == 0)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no points added yet, expected at least one "
                          "ibvi_metrics_add() since creation or reset",
                          fn);
    return IBVI_OK;
}

int ibvi_metrics_count(const ibvi_metrics *m, int64_t *n)
{
    static const char fn[] = "ibvi_metrics_count";
    IBVI_CHECK_NOT_NULL(fn, m);
    IBVI_CHECK_NOT_NULL(fn, n);
    *n = m->count;
    return IBVI_OK;
}

int ibvi_metrics_accuracy(const ibvi_metrics *m, double *out)
{
    int status = check_getter("ibvi_metrics_accuracy", m, out, "out");
    if (status < 0)
        return status;
    *out = (double)m->correct / (double)m->count;
    return IBVI_OK;
}

int ibvi_metrics_nll(const ibvi_metrics *m, double *out)
{
    int status = check_getter("ibvi_metrics_nll", m, out, "out");
    if (status < 0)
        return status;
    *out = xsum_value(&m->nll) / (double)m->count;
    return IBVI_OK;
}

int ibvi_metrics_brier(const ibvi_metrics *m, double *out)
{
    int status = check_getter("ibvi_metrics_brier", m, out, "out");
    if (status < 0)
        return status;
    *out = xsum_value(&m->brier) / (double)m->count;
    return IBVI_OK;
}

/* |n_b acc_b - n_b conf_b| = |correct_b - sum of conf in b|. */
static double bin_gap_sum(const ibvi_metrics *m, int b)
{
    return fabs((double)m->bin_correct[b] - xsum_value(&m->bin_conf[b]));
}

int ibvi_metrics_ece(const ibvi_metrics *m, double *out)
{
    int status = check_getter("ibvi_metrics_ece", m, out, "out");
    if (status < 0)
        return status;
    /* sum_b (n_b/N) |acc_b - conf_b| = (1/N) sum_b |correct_b - confsum_b| */
    double total = 0.0;
    for (int b = 0; b < IBVI_METRICS_BINS; b++)
        total += bin_gap_sum(m, b);
    *out = total / (double)m->count;
    return IBVI_OK;
}

int ibvi_metrics_mce(const ibvi_metrics *m, double *out)
{
    int status = check_getter("ibvi_metrics_mce", m, out, "out");
    if (status < 0)
        return status;
    double worst = 0.0;
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        if (m->bin_count[b] == 0)
            continue;
        double gap = bin_gap_sum(m, b) / (double)m->bin_count[b];
        if (gap > worst)
            worst = gap;
    }
    *out = worst;
    return IBVI_OK;
}

int ibvi_metrics_bins(const ibvi_metrics *m, int64_t *counts, double *accuracy,
                      double *confidence, int32_t nbins)
{
    static const char fn[] = "ibvi_metrics_bins";
    IBVI_CHECK_NOT_NULL(fn, m);
    IBVI_CHECK_NOT_NULL(fn, counts);
    IBVI_CHECK_NOT_NULL(fn, accuracy);
    IBVI_CHECK_NOT_NULL(fn, confidence);
    if (nbins != IBVI_METRICS_BINS)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: nbins = %d, expected IBVI_METRICS_BINS = %d", fn,
                          (int)nbins, IBVI_METRICS_BINS);
    int status = check_getter(fn, m, counts, "counts");
    if (status < 0)
        return status;
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        int64_t nb = m->bin_count[b];
        counts[b] = nb;
        accuracy[b] = nb ? (double)m->bin_correct[b] / (double)nb : 0.0;
        confidence[b] = nb ? xsum_value(&m->bin_conf[b]) / (double)nb : 0.0;
    }
    return IBVI_OK;
}

/* ---- AUROC ------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int ibvi_auroc(double *out, const float *in_scores, int64_t n_in,
               const float *out_scores, int64_t n_out)
{
    static const char fn[] = "ibvi_auroc";
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

    ibvi_allocator a;
    ibvi__allocator_default(&a);
    size_t total = (size_t)n_in + (size_t)n_out;
    float *ins = ibvi__alloc(&a, total, sizeof(float));
    if (!ins)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory for %zu scores",
                          fn, total);
    float *outs = ins + n_in;
    for (int64_t i = 0; i < n_in; i++)
        ins[i] = in_scores[i];
    for (int64_t j = 0; j < n_out; j++)
        outs[j] = out_scores[j];
    qsort(ins, (size_t)n_in, sizeof(float), cmp_float);
    qsort(outs, (size_t)n_out, sizeof(float), cmp_float);

    /* For each OOD score s (ascending): lo = #{in < s}, hi = #{in <= s};
     * the pair count in halves is 2 lo + (hi - lo) = lo + hi. */
    const int exact = (uint64_t)n_in <= ((uint64_t)1 << 62) / (uint64_t)n_out;
    uint64_t halves = 0;
    double halves_d = 0.0;
    int64_t lo = 0, hi = 0;
    for (int64_t j = 0; j < n_out; j++) {
        float s = outs[j];
        while (lo < n_in && ins[lo] < s)
            lo++;
        if (hi < lo)
            hi = lo;
        while (hi < n_in && ins[hi] <= s)
            hi++;
        if (exact)
            halves += (uint64_t)lo + (uint64_t)hi;
        else
            halves_d += (double)lo + (double)hi;
    }
    ibvi__free(&a, ins);
    double num = exact ? (double)halves : halves_d;
    *out = num / (2.0 * (double)n_in * (double)n_out);
    return IBVI_OK;
}

/* ---- Entropy ----------------------------------------------------------- */

int ibvi_entropy(float *out, const float *probs, int64_t n, int32_t classes)
{
    static const char fn[] = "ibvi_entropy";
    IBVI_CHECK_NOT_NULL(fn, out);
    IBVI_CHECK_NOT_NULL(fn, probs);
    if (n <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    if (classes < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: classes = %d, expected >= 1", fn, (int)classes);
    if (n > INT64_MAX / classes)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld rows of %d classes overflow int64", fn,
                          (long long)n, (int)classes);
    int status = check_probs(fn, probs, n, classes);
    if (status < 0)
        return status;
    for (int64_t i = 0; i < n; i++) {
        const float *row = probs + i * classes;
        double h = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            double p = clamp01(row[c]);
            if (p > 0.0)
                h -= p * log(p);
        }
        out[i] = (float)h;
    }
    return IBVI_OK;
}

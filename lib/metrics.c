/*
 * libibvi - uncertainty metrics: the streaming classification accumulator
 * (with its per-point store for the adaptive ECE and selective
 * classification) and per-row entropy (docs/metrics.md). The OOD detection
 * metrics are in ood.c, the regression metrics in regression_metrics.c.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "ibvi/metrics.h"

/* Probabilities this far outside [0, 1] are taken as rounding and clamped. */
#define PROB_TOL 1e-5
/* NLL floor on the true class's probability (docs/metrics.md). */
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

/* One point's top-label confidence (in [0, 1], -0 stored as +0) and
 * whether its argmax was the label: what the adaptive ECE, the AURC and the
 * risk-coverage curve need. 8 bytes per point. */
typedef struct conf_point {
    float conf;
    uint32_t hit;
} conf_point;

struct ibvi_metrics {
    ibvi_allocator allocator;
    conf_point *points;  /* count points, room for capacity */
    int64_t capacity;
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

/* Room for `need` points (need > capacity: at least doubles, so n points
 * cost O(n) copies in total). IBVI_ERR_NOMEM under fn, m unchanged. */
static int reserve_points(ibvi_metrics *m, int64_t need, const char *fn)
{
    if (need <= m->capacity)
        return IBVI_OK;
    int64_t cap = m->capacity > 0 ? m->capacity : 256;
    while (cap < need)
        cap = cap > INT64_MAX / 2 ? need : 2 * cap;
    if ((uint64_t)cap > SIZE_MAX / sizeof(conf_point))
        cap = need;
    conf_point *p = ibvi__alloc(&m->allocator, (size_t)cap, sizeof *p);
    if (!p)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for %lld points of %zu bytes", fn,
                          (long long)cap, sizeof *p);
    if (m->count > 0)
        memcpy(p, m->points, (size_t)m->count * sizeof *p);
    ibvi__free(&m->allocator, m->points);
    m->points = p;
    m->capacity = cap;
    return IBVI_OK;
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
    int status = ibvi__allocator_resolve(allocator, &a, fn);
    if (status < 0)
        return status;
    ibvi_metrics *m = ibvi__alloc(&a, 1, sizeof *m);
    if (!m)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for %zu bytes", fn, sizeof *m);
    m->allocator = a;
    m->points = NULL;
    m->capacity = 0;
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
    ibvi__free(&a, m->points);
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
    if ((uint64_t)(m->count + n) > SIZE_MAX / sizeof(conf_point))
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for %lld points", fn,
                          (long long)(m->count + n));
    status = reserve_points(m, m->count + n, fn);
    if (status < 0)
        return status;

    conf_point *store = m->points + m->count;
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
        store[i].conf = (float)conf + 0.0f; /* exact; -0 becomes +0 */
        store[i].hit = (uint32_t)hit;
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
    if ((uint64_t)(dst->count + src->count) > SIZE_MAX / sizeof(conf_point))
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory for %lld points",
                          fn, (long long)(dst->count + src->count));
    /* Read src's fields before writing dst's: dst == src is allowed. */
    const int64_t count = src->count, correct = src->correct;
    int status = reserve_points(dst, dst->count + count, fn);
    if (status < 0)
        return status;
    /* After the reserve: when dst == src, src->points is the new block. */
    if (count > 0)
        memcpy(dst->points + dst->count, src->points,
               (size_t)count * sizeof(conf_point));
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

/* ---- Per-point metrics: adaptive ECE, AURC, risk-coverage ---------------
 * They read the stored (confidence, hit) pairs after sorting them in place
 * by (confidence, hit) ascending: a total order, so the sorted array, and
 * every result computed from it in a fixed order, depends only on the
 * multiset of points, not on how they were added or merged. Sorting
 * reorders the accumulator's storage, not its contents, which is why the
 * getters take a const handle (one thread at a time uses an accumulator). */

static int cmp_point(const void *a, const void *b)
{
    const conf_point *x = a, *y = b;
    if (x->conf != y->conf)
        return x->conf < y->conf ? -1 : 1;
    return (x->hit > y->hit) - (x->hit < y->hit);
}

static void sort_points(const ibvi_metrics *m)
{
    qsort(m->points, (size_t)m->count, sizeof(conf_point), cmp_point);
}

int ibvi_metrics_ece_adaptive(const ibvi_metrics *m, double *out,
                              int32_t nbins)
{
    static const char fn[] = "ibvi_metrics_ece_adaptive";
    if (nbins < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: nbins = %d, expected >= 1", fn, (int)nbins);
    int status = check_getter(fn, m, out, "out");
    if (status < 0)
        return status;
    sort_points(m);
    /* With nbins >= N every non-empty bin holds one point: the same bins
     * as nbins = N, which keeps the loop O(N). */
    const int64_t n = m->count;
    if (nbins > n)
        nbins = (int32_t)n;
    const int64_t q = n / nbins, r = n % nbins;
    double total = 0.0;
    int64_t start = 0;
    for (int32_t b = 0; b < nbins; b++) {
        /* end = floor((b + 1) n / nbins), without overflow. */
        const int64_t end = (int64_t)(b + 1) * q + ((int64_t)(b + 1) * r) / nbins;
        double conf = 0.0, hits = 0.0;
        for (int64_t i = start; i < end; i++) {
            conf += (double)m->points[i].conf;
            hits += (double)m->points[i].hit;
        }
        /* (n_b / N) |acc_b - conf_b| = |hits_b - confsum_b| / N */
        total += fabs(hits - conf);
        start = end;
    }
    *out = total / (double)n;
    return IBVI_OK;
}

/* Walks the points from the most to the least confident, one group of
 * equal confidence at a time: *size points of which *errors were wrong, in
 * the group that ends (in ascending storage order) just before index *top.
 * Returns 0 when no point is left. */
static int next_group(const ibvi_metrics *m, int64_t *top, int64_t *size,
                      int64_t *errors)
{
    int64_t i = *top;
    if (i <= 0)
        return 0;
    const float conf = m->points[i - 1].conf;
    int64_t wrong = 0, j = i;
    while (j > 0 && m->points[j - 1].conf == conf) {
        wrong += m->points[j - 1].hit ? 0 : 1;
        j--;
    }
    *size = i - j;
    *errors = wrong;
    *top = j;
    return 1;
}

int ibvi_metrics_aurc(const ibvi_metrics *m, double *out)
{
    static const char fn[] = "ibvi_metrics_aurc";
    int status = check_getter(fn, m, out, "out");
    if (status < 0)
        return status;
    sort_points(m);
    /* AURC = (1/N) sum_{k=1..N} E(k) / k, E(k) the expected errors among
     * the k most confident points (ties: linear within the group). */
    int64_t top = m->count, size, errors, before = 0, err_before = 0;
    double sum = 0.0;
    while (next_group(m, &top, &size, &errors)) {
        const double rate = (double)errors / (double)size;
        for (int64_t k = before + 1; k <= before + size; k++)
            sum += ((double)err_before + (double)(k - before) * rate) /
                   (double)k;
        before += size;
        err_before += errors;
    }
    *out = sum / (double)m->count;
    return IBVI_OK;
}

int ibvi_metrics_risk_coverage(const ibvi_metrics *m, double *risk,
                               const double *coverage, int64_t n)
{
    static const char fn[] = "ibvi_metrics_risk_coverage";
    IBVI_CHECK_NOT_NULL(fn, m);
    IBVI_CHECK_NOT_NULL(fn, risk);
    IBVI_CHECK_NOT_NULL(fn, coverage);
    if (n <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const double c = coverage[i];
        if (isnan(c))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: coverage[%lld] is NaN, expected in (0, 1]",
                              fn, (long long)i);
        if (!(c > 0.0 && c <= 1.0))
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: coverage[%lld] = %g, expected in (0, 1]",
                              fn, (long long)i, c);
        if (i > 0 && c < coverage[i - 1])
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: coverage[%lld] = %g < coverage[%lld] = %g, "
                              "expected non-decreasing",
                              fn, (long long)i, c, (long long)(i - 1),
                              coverage[i - 1]);
    }
    int status = check_getter(fn, m, risk, "risk");
    if (status < 0)
        return status;
    sort_points(m);
    const double total = (double)m->count;
    int64_t top = m->count, size = 0, errors = 0, before = 0, err_before = 0;
    int have = next_group(m, &top, &size, &errors);
    for (int64_t i = 0; i < n; i++) {
        /* x = c N accepted points; E(x) is linear inside the group that
         * holds x (K_prev < x <= K_prev + size). */
        const double x = coverage[i] * total;
        while (have && (double)(before + size) < x) {
            before += size;
            err_before += errors;
            have = next_group(m, &top, &size, &errors);
        }
        double e;
        if (have)
            e = (double)err_before +
                (x - (double)before) * (double)errors / (double)size;
        else /* x rounded above N: everything is accepted */
            e = (double)err_before;
        risk[i] = e / x;
    }
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

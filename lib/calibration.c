/*
 * libibvi - temperature scaling: fitting T on held-out logits and applying
 * softmax(logits / T) (include/ibvi/calibration.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "ibvi/calibration.h"
#include "internal.h"

#define MAX_ITERATIONS 200

static int check_common(const char *fn, const float *logits, int64_t n,
                        int32_t classes, int32_t min_classes)
{
    IBVI_CHECK_NOT_NULL(fn, logits);
    if (n < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected >= 1",
                          fn, (long long)n);
    if (classes < min_classes)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: classes = %ld, expected >= %ld", fn,
                          (long)classes, (long)min_classes);
    if (n > INT64_MAX / classes)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n x classes = %lld x %ld overflows", fn,
                          (long long)n, (long)classes);
    if (!ibvi__all_finite(logits, n * classes))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: logits hold NaN or infinity", fn);
    return IBVI_OK;
}

/* Classes per chunk of the row softmax (softmax.c). */
#define CHUNK 256

/* The last class + 1 of the chunk starting at c0. */
static int32_t chunk_end(int32_t c0, int32_t classes)
{
    return classes - c0 < CHUNK ? classes : c0 + CHUNK;
}

/* dNLL/db (*grad) and d2NLL/db2 (*curv) at b = 1/T, each a mean over rows.
 * With p = softmax(b z): dNLL/db = E_p[z] - z_y, d2NLL/db2 = Var_p[z].
 * The softmax kernel gives, per row, Z = sum e_c and D = sum e_c s_c with
 * s_c = b (z_c - max) (>= -700): the moments of d = z - max are
 * E[d] = D / (b Z) and E[d^2] = sum e_c s_c^2 / (b^2 Z). */
static void nll_derivatives(const float *logits, int64_t n, int32_t classes,
                            const int32_t *labels, double b, double *grad,
                            double *curv)
{
    double g = 0.0, h = 0.0;
    double shifted[CHUNK], exps[CHUNK];
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + i * classes;
        double m, s, dot, s2 = 0.0;
        ibvi__softmax_max(z, 1, 1, classes, &m, &s, &dot);
        for (int32_t c0 = 0; c0 < classes; c0 += CHUNK) {
            const int32_t c1 = chunk_end(c0, classes);
            ibvi__softmax_sums(z, 1, 1, c0, c1, &m, b, shifted, exps, &s,
                               &dot);
            for (int32_t c = 0; c < c1 - c0; c++)
                s2 += exps[c] * shifted[c] * shifted[c];
        }
        const double e1 = dot / (s * b);
        const double var = s2 / (s * b * b) - e1 * e1;
        g += e1 - ((double)z[labels[i]] - m);
        h += var > 0.0 ? var : 0.0;
    }
    *grad = g / (double)n;
    *curv = h / (double)n;
}

int ibvi_temperature_fit(float *temperature, const float *logits, int64_t n,
                         int32_t classes, const int32_t *labels)
{
    static const char fn[] = "ibvi_temperature_fit";
    IBVI_CHECK_NOT_NULL(fn, temperature);
    IBVI_CHECK_NOT_NULL(fn, labels);
    int status = check_common(fn, logits, n, classes, 2);
    if (status < 0)
        return status;
    int flat = 1;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= classes)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: labels[%lld] = %ld, expected 0..%ld", fn,
                              (long long)i, (long)labels[i],
                              (long)classes - 1);
        const float *z = logits + i * classes;
        for (int32_t c = 1; c < classes && flat; c++)
            flat = z[c] == z[0];
    }
    if (flat) {
        *temperature = 1.0f;
        return IBVI_OK;
    }

    /* b = 1/T; the minimum is where g(b) = dNLL/db crosses zero. */
    double lo = 1.0 / (double)IBVI_TEMPERATURE_MAX;
    double hi = 1.0 / (double)IBVI_TEMPERATURE_MIN;
    double g, h;
    nll_derivatives(logits, n, classes, labels, lo, &g, &h);
    if (g >= 0.0) {
        *temperature = IBVI_TEMPERATURE_MAX;
        return IBVI_OK;
    }
    nll_derivatives(logits, n, classes, labels, hi, &g, &h);
    if (g <= 0.0) {
        *temperature = IBVI_TEMPERATURE_MIN;
        return IBVI_OK;
    }
    double b = 1.0, previous = INFINITY;
    for (int it = 0; it < MAX_ITERATIONS; it++) {
        nll_derivatives(logits, n, classes, labels, b, &g, &h);
        if (g == 0.0)
            break;
        if (g > 0.0)
            hi = b;
        else
            lo = b;
        if (hi - lo <= 1e-12 * lo)
            break;
        /* Converged: the Newton step is below the resolution we need (it
         * can be below one ulp of b, so test it before the bracket). */
        const double step = h > 0.0 ? g / h : NAN;
        if (fabs(step) <= 1e-12 * b) {
            b -= step;
            break;
        }
        double next = b - step;
        const int newton_ok = next > lo && next < hi &&
                              fabs(g) <= 0.5 * previous;
        if (!newton_ok)
            next = sqrt(lo * hi);
        previous = fabs(g);
        b = next;
    }
    *temperature = (float)(1.0 / b);
    return IBVI_OK;
}

int ibvi_temperature_apply(float *probs, const float *logits, int64_t n,
                           int32_t classes, float temperature)
{
    static const char fn[] = "ibvi_temperature_apply";
    IBVI_CHECK_NOT_NULL(fn, probs);
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: temperature = %g, expected a finite value > 0",
                          fn, (double)temperature);
    int status = check_common(fn, logits, n, classes, 1);
    if (status < 0)
        return status;
    const double b = 1.0 / (double)temperature;
    double shifted[CHUNK], exps[CHUNK];
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + i * classes;
        float *p = probs + i * classes;
        double m, s, dot;
        ibvi__softmax_max(z, 1, 1, classes, &m, &s, &dot);
        for (int32_t c0 = 0; c0 < classes; c0 += CHUNK)
            ibvi__softmax_sums(z, 1, 1, c0, chunk_end(c0, classes), &m, b,
                               shifted, exps, &s, &dot);
        /* The row's probabilities, chunk by chunk (the exponentials again
         * unless one chunk held them all). Each chunk reads its logits
         * before writing its probabilities: in-place use is fine. */
        for (int32_t c0 = 0; c0 < classes; c0 += CHUNK) {
            const int32_t c1 = chunk_end(c0, classes);
            if (classes > CHUNK) {
                double s_again = 0.0, dot_again = 0.0;
                ibvi__softmax_sums(z, 1, 1, c0, c1, &m, b, shifted, exps,
                                   &s_again, &dot_again);
            }
            for (int32_t c = c0; c < c1; c++)
                p[c] = (float)(exps[c - c0] / s);
        }
    }
    return IBVI_OK;
}

/* ---- the noise std of a regression ---------------------------------------- */

/* The objective of ibvi_fit_noise_std at a = sigma^2 (lower is better):
 * sum_i [log(v_i + a) + r_i^2 / (v_i + a)], in double. */
typedef struct noise_data {
    const float *mean, *var, *targets;
    int64_t count;
} noise_data;

static double noise_nll(const noise_data *x, double a)
{
    double total = 0.0;
    for (int64_t i = 0; i < x->count; i++) {
        const double d = (double)x->targets[i] - x->mean[i];
        const double s = (double)x->var[i] + a;
        total += log(s) + d * d / s;
    }
    return total;
}

#define NOISE_GRID 121       /* grid points in log sigma^2 */
#define NOISE_SPAN 60.0      /* the grid covers [A e^-60, A] at most */
#define GOLDEN_STEPS 200

int ibvi_fit_noise_std(const float *mean, const float *var_epistemic,
                       const float *targets, int64_t n, int32_t dims,
                       float *noise_std)
{
    static const char fn[] = "ibvi_fit_noise_std";
    IBVI_CHECK_NOT_NULL(fn, mean);
    IBVI_CHECK_NOT_NULL(fn, targets);
    IBVI_CHECK_NOT_NULL(fn, noise_std);
    if (n < 1 || dims < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld, dims = %ld, expected both >= 1", fn,
                          (long long)n, (long)dims);
    if (n > INT64_MAX / 8 / dims)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n x dims = %lld x %ld overflows", fn,
                          (long long)n, (long)dims);
    const int64_t count = n * dims;
    if (!ibvi__all_finite(mean, count))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: mean holds NaN or infinity",
                          fn);
    if (!ibvi__all_finite(targets, count))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: targets hold NaN or infinity", fn);
    int epistemic = 0;
    if (var_epistemic) {
        if (!ibvi__all_finite(var_epistemic, count))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: var_epistemic holds NaN or infinity", fn);
        for (int64_t i = 0; i < count; i++) {
            if (var_epistemic[i] < 0.0f)
                return ibvi__fail(IBVI_ERR_INVALID_ARG,
                                  "%s: var_epistemic[%lld] = %g, expected "
                                  ">= 0", fn, (long long)i,
                                  (double)var_epistemic[i]);
            epistemic |= var_epistemic[i] > 0.0f;
        }
    }
    if (!epistemic) {
        /* The closed form: sigma^2 = mean squared residual. */
        double total = 0.0;
        for (int64_t i = 0; i < count; i++) {
            const double d = (double)targets[i] - mean[i];
            total += d * d;
        }
        *noise_std = (float)sqrt(total / (double)count);
        return IBVI_OK;
    }
    /* Every term log(v + a) + r^2 / (v + a) falls for a < r^2 - v and
     * rises after: every minimum lies in [L, A], the least and the largest
     * r^2 - v (a >= 0). */
    const noise_data x = {mean, var_epistemic, targets, count};
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < count; i++) {
        const double d = (double)targets[i] - mean[i];
        const double excess = d * d - var_epistemic[i];
        lo = excess < lo ? excess : lo;
        hi = excess > hi ? excess : hi;
    }
    double best_a = 0.0;
    if (hi > 0.0) {
        /* The grid in u = log a, then golden-section search between the
         * best point's neighbours. */
        const double u_hi = log(hi);
        const double u_lo = lo > hi * exp(-NOISE_SPAN) ? log(lo)
                                                       : u_hi - NOISE_SPAN;
        const double step = (u_hi - u_lo) / (NOISE_GRID - 1);
        int best = 0;
        double best_f = INFINITY;
        for (int g = 0; g < NOISE_GRID; g++) {
            const double f = noise_nll(&x, exp(u_lo + g * step));
            if (f < best_f) {
                best_f = f;
                best = g;
            }
        }
        double a = u_lo + (best > 0 ? best - 1 : 0) * step;
        double b = u_lo + (best < NOISE_GRID - 1 ? best + 1 : best) * step;
        const double ratio = 0.6180339887498949;
        double c = b - ratio * (b - a), d = a + ratio * (b - a);
        double fc = noise_nll(&x, exp(c));
        double fd = noise_nll(&x, exp(d));
        for (int it = 0; it < GOLDEN_STEPS && b - a > 1e-15 * (1.0 + fabs(a));
             it++) {
            if (fc <= fd) {
                b = d;
                d = c;
                fd = fc;
                c = b - ratio * (b - a);
                fc = noise_nll(&x, exp(c));
            } else {
                a = c;
                c = d;
                fc = fd;
                d = a + ratio * (b - a);
                fd = noise_nll(&x, exp(d));
            }
        }
        const double u = fc <= fd ? c : d;
        const double fu = fc <= fd ? fc : fd;
        best_a = fu <= best_f ? exp(u) : exp(u_lo + best * step);
        /* sigma = 0 when that is better still (every v > 0 there: some v
         * is > 0, and a v = 0 with r = 0 makes a -> 0 ever better, a v = 0
         * with r != 0 ever worse; log(0) covers both). */
        const double f0 = noise_nll(&x, 0.0);
        if (f0 < (fu <= best_f ? fu : best_f))
            best_a = 0.0;
    }
    *noise_std = (float)sqrt(best_a);
    return IBVI_OK;
}

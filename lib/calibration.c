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

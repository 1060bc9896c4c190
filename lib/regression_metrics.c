/*
 * libibvi - metrics of Gaussian predictive distributions N(mean, var) for
 * regression: RMSE, Gaussian NLL, central-interval coverage and its
 * calibration error, CRPS; and the normal quantile they use
 * (docs/metrics.md).
 *
 * Every per-point term is computed in double and summed in index order.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "internal.h"
#include "ibvi/metrics.h"

#define SQRT_2 1.41421356237309504880
#define SQRT_2PI 2.50662827463100050242
#define LOG_2PI 1.83787706640934548356
#define INV_SQRT_PI 0.56418958354775628695

/* ---- The normal quantile ------------------------------------------------ */

/* Phi^-1(p) for 0 < p <= 1/2: Abramowitz & Stegun 26.2.23 (|error| <
 * 4.5e-4) refined by Halley steps on f(x) = Phi(x) - p. Each step
 * triples the number of correct digits; the loop stops when a step no
 * longer changes x (or after 8 steps). */
static double quantile_lower(double p)
{
    if (p == 0.5)
        return 0.0;
    const double t = sqrt(-2.0 * log(p));
    double x = -(t - (2.515517 + t * (0.802853 + t * 0.010328)) /
                         (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308))));
    for (int step = 0; step < 8; step++) {
        const double density = exp(-0.5 * x * x) / SQRT_2PI;
        if (!(density > 0.0))
            break; /* p below ~1e-308: the A&S value is what we have */
        /* Phi(x) - p: from erfc in the tail; near the centre as
         * erf(x / sqrt 2) / 2 - (p - 1/2) (p - 1/2 exact for p >= 1/4),
         * which keeps x accurate relative to itself as it nears 0. */
        const double e = p < 0.25 ? 0.5 * erfc(-x / SQRT_2) - p
                                  : 0.5 * erf(x / SQRT_2) - (p - 0.5);
        const double u = e / density;
        const double next = x - u / (1.0 + 0.5 * x * u);
        if (next == x)
            break;
        x = next;
    }
    return x;
}

/* Phi^-1(p), 0 < p < 1: the upper half by symmetry, 1 - p being exact
 * there (Sterbenz). */
static double normal_quantile(double p)
{
    return p <= 0.5 ? quantile_lower(p) : -quantile_lower(1.0 - p);
}

int ibvi_normal_quantile(double *out, double p)
{
    static const char fn[] = "ibvi_normal_quantile";
    IBVI_CHECK_NOT_NULL(fn, out);
    if (isnan(p) || !(p > 0.0 && p < 1.0))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: p = %g, expected in (0, 1)", fn, p);
    *out = normal_quantile(p);
    return IBVI_OK;
}

/* ---- Argument checks ------------------------------------------------------ */

/* out, mean, y (and var when need_var) non-NULL, n >= 1, means and targets
 * finite, variances finite and > 0. */
static int check_predictive(const char *fn, const double *out,
                            const float *mean, const float *var,
                            const float *y, int64_t n, int need_var)
{
    IBVI_CHECK_NOT_NULL(fn, out);
    IBVI_CHECK_NOT_NULL(fn, mean);
    if (need_var)
        IBVI_CHECK_NOT_NULL(fn, var);
    IBVI_CHECK_NOT_NULL(fn, y);
    if (n <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(mean[i]))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: mean[%lld] = %g, expected a finite number",
                              fn, (long long)i, (double)mean[i]);
        if (!isfinite(y[i]))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: y[%lld] = %g, expected a finite number", fn,
                              (long long)i, (double)y[i]);
        if (!need_var)
            continue;
        if (!isfinite(var[i]))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: var[%lld] = %g, expected a finite "
                              "variance > 0",
                              fn, (long long)i, (double)var[i]);
        if (!(var[i] > 0.0f))
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: var[%lld] = %g, expected a variance > 0",
                              fn, (long long)i, (double)var[i]);
    }
    return IBVI_OK;
}

/* levels non-NULL, n_levels >= 1, each level finite and in (0, 1). */
static int check_levels(const char *fn, const double *levels, int32_t n_levels)
{
    IBVI_CHECK_NOT_NULL(fn, levels);
    if (n_levels < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n_levels = %d, expected >= 1", fn,
                          (int)n_levels);
    for (int32_t j = 0; j < n_levels; j++)
        if (isnan(levels[j]) || !(levels[j] > 0.0 && levels[j] < 1.0))
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: levels[%d] = %g, expected in (0, 1)", fn,
                              (int)j, levels[j]);
    return IBVI_OK;
}

/* ---- Metrics ------------------------------------------------------------- */

int ibvi_regression_rmse(double *out, const float *mean, const float *y,
                         int64_t n)
{
    int status = check_predictive("ibvi_regression_rmse", out, mean, NULL, y,
                                  n, 0);
    if (status < 0)
        return status;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)y[i] - (double)mean[i];
        sum += d * d;
    }
    *out = sqrt(sum / (double)n);
    return IBVI_OK;
}

int ibvi_regression_nll(double *out, const float *mean, const float *var,
                        const float *y, int64_t n)
{
    int status = check_predictive("ibvi_regression_nll", out, mean, var, y,
                                  n, 1);
    if (status < 0)
        return status;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double v = (double)var[i];
        const double d = (double)y[i] - (double)mean[i];
        sum += 0.5 * (LOG_2PI + log(v)) + d * d / (2.0 * v);
    }
    *out = sum / (double)n;
    return IBVI_OK;
}

/* coverage[j] for every level; arguments already checked. */
static void coverage_of(double *coverage, const float *mean, const float *var,
                        const float *y, int64_t n, const double *levels,
                        int32_t n_levels)
{
    for (int32_t j = 0; j < n_levels; j++) {
        /* The central interval of mass l is mean +- z sigma with
         * z = Phi^-1((1 + l) / 2) = -Phi^-1((1 - l) / 2). */
        const double z = -normal_quantile(0.5 * (1.0 - levels[j]));
        int64_t inside = 0;
        for (int64_t i = 0; i < n; i++) {
            const double d = fabs((double)y[i] - (double)mean[i]);
            inside += d <= z * sqrt((double)var[i]);
        }
        coverage[j] = (double)inside / (double)n;
    }
}

int ibvi_regression_coverage(double *coverage, const float *mean,
                             const float *var, const float *y, int64_t n,
                             const double *levels, int32_t n_levels)
{
    static const char fn[] = "ibvi_regression_coverage";
    int status = check_predictive(fn, coverage, mean, var, y, n, 1);
    if (status < 0)
        return status;
    status = check_levels(fn, levels, n_levels);
    if (status < 0)
        return status;
    coverage_of(coverage, mean, var, y, n, levels, n_levels);
    return IBVI_OK;
}

int ibvi_regression_calibration_error(double *out, const float *mean,
                                      const float *var, const float *y,
                                      int64_t n, const double *levels,
                                      int32_t n_levels)
{
    static const char fn[] = "ibvi_regression_calibration_error";
    int status = check_predictive(fn, out, mean, var, y, n, 1);
    if (status < 0)
        return status;
    status = check_levels(fn, levels, n_levels);
    if (status < 0)
        return status;
    double sum = 0.0;
    for (int32_t j = 0; j < n_levels; j++) {
        double c;
        coverage_of(&c, mean, var, y, n, levels + j, 1);
        sum += fabs(c - levels[j]);
    }
    *out = sum / (double)n_levels;
    return IBVI_OK;
}

int ibvi_regression_crps(double *out, const float *mean, const float *var,
                         const float *y, int64_t n)
{
    int status = check_predictive("ibvi_regression_crps", out, mean, var, y,
                                  n, 1);
    if (status < 0)
        return status;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double sigma = sqrt((double)var[i]);
        const double z = ((double)y[i] - (double)mean[i]) / sigma;
        /* 2 Phi(z) - 1 = erf(z / sqrt 2), phi(z) = exp(-z^2 / 2) / sqrt(2 pi) */
        const double pdf = exp(-0.5 * z * z) / SQRT_2PI;
        sum += sigma * (z * erf(z / SQRT_2) + 2.0 * pdf - INV_SQRT_PI);
    }
    *out = sum / (double)n;
    return IBVI_OK;
}

/*
 * libibvi - tests of the regression metrics of Gaussian predictives and the
 * normal quantile (ibvi_regression_*, ibvi_normal_quantile;
 * include/ibvi/metrics.h): hand-computed cases, known quantiles, and
 * identities the closed forms must satisfy.
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"

#define ASSERT_OK(call) ck_assert_int_eq((call), IBVI_OK)
#define PI 3.14159265358979323846

/* Reference quantiles (Python's statistics.NormalDist().inv_cdf, Wichura's
 * AS241, and tables): p, Phi^-1(p). */
static const double known[][2] = {
    {0.5, 0.0},
    {0.975, 1.9599639845400536},
    {0.025, -1.9599639845400538},
    {0.75, 0.6744897501960817},
    {0.05, -1.6448536269514726},
    {0.999, 3.090232306167813},
    {0.999999, 4.753424308817089},
    {1e-10, -6.361340902404056},
    {1e-300, -37.0470962993612},
    {0.84134474606854293, 1.0}, /* Phi(1) */
};

START_TEST(test_normal_quantile_known_values)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        double q;
        ASSERT_OK(ibvi_normal_quantile(&q, known[i][0]));
        const double tol = 4e-15 * fmax(1.0, fabs(known[i][1]));
        ck_assert_msg(fabs(q - known[i][1]) <= tol,
                      "Phi^-1(%.17g) = %.17g, expected %.17g", known[i][0], q,
                      known[i][1]);
    }
    /* Symmetry and the round trip through Phi = erfc(-x / sqrt 2) / 2. */
    for (int k = 1; k < 1000; k++) {
        const double p = k / 1000.0;
        double a, b;
        ASSERT_OK(ibvi_normal_quantile(&a, p));
        ASSERT_OK(ibvi_normal_quantile(&b, 1.0 - p));
        ck_assert_double_eq_tol(a, -b, 1e-13);
        const double back = 0.5 * erfc(-a / sqrt(2.0));
        ck_assert_double_eq_tol(back, p, 1e-15);
    }
    /* Near the centre the quantile stays accurate relative to itself:
     * Phi^-1(1/2 + d) = sqrt(2 pi) d (1 + O(d^2)). */
    const double d = 0x1p-40, slope = sqrt(2.0 * PI);
    double c;
    ASSERT_OK(ibvi_normal_quantile(&c, 0.5 - d));
    ck_assert_double_eq_tol(c / (-slope * d), 1.0, 1e-14);
    ASSERT_OK(ibvi_normal_quantile(&c, 0.5 + d));
    ck_assert_double_eq_tol(c / (slope * d), 1.0, 1e-14);
    /* The extremes of (0, 1) stay finite and ordered. */
    double lo, hi;
    ASSERT_OK(ibvi_normal_quantile(&lo, 4.9406564584124654e-324));
    ASSERT_OK(ibvi_normal_quantile(&hi, 1.0 - 0x1p-53));
    ck_assert(isfinite(lo) && lo < -37.0 && lo > -39.0);
    ck_assert_double_eq_tol(hi, 8.209536151601386, 1e-13);
}
END_TEST

/* mean {0, 1}, var {1, 4}, y {1, 1}. */
static const float M[] = {0.0f, 1.0f}, V[] = {1.0f, 4.0f}, Y[] = {1.0f, 1.0f};

START_TEST(test_hand_values)
{
    double v;
    /* RMSE = sqrt((1^2 + 0^2) / 2) = sqrt(1/2). */
    ASSERT_OK(ibvi_regression_rmse(&v, M, Y, 2));
    ck_assert_double_eq_tol(v, sqrt(0.5), 1e-16);
    /* NLL: point 0: log(2 pi)/2 + 1/2 = 1.4189385332046727; point 1:
     * log(8 pi)/2 + 0 = 1.6120857137646180; mean 1.5155121234846454. */
    ASSERT_OK(ibvi_regression_nll(&v, M, V, Y, 2));
    ck_assert_double_eq_tol(v, 1.5155121234846454, 1e-15);
    /* CRPS: point 0, sigma 1, z 1: erf(1/sqrt 2) + 2 phi(1) - 1/sqrt(pi)
     * = 0.6826894921 + 0.4839414490 - 0.5641895835 = 0.6024413576;
     * point 1, sigma 2, z 0: 2 (2 phi(0) - 1/sqrt(pi)) = 2 * 0.2336949773;
     * mean 0.5349156560689172. */
    ASSERT_OK(ibvi_regression_crps(&v, M, V, Y, 2));
    ck_assert_double_eq_tol(v, 0.5349156560689172, 1e-15);
    /* Coverage at 50% (z 0.6745) and 90% (z 1.6449): point 0 has |y - mu|
     * / sigma = 1, outside at 50%, inside at 90%; point 1 is at the mean.
     * Coverage {1/2, 1}; calibration error (|1/2 - 1/2| + |1 - 0.9|) / 2
     * = 0.05. */
    const double levels[] = {0.5, 0.9};
    double cov[2];
    ASSERT_OK(ibvi_regression_coverage(cov, M, V, Y, 2, levels, 2));
    ck_assert(cov[0] == 0.5 && cov[1] == 1.0);
    ASSERT_OK(ibvi_regression_calibration_error(&v, M, V, Y, 2, levels, 2));
    ck_assert_double_eq_tol(v, 0.05, 1e-15);
}
END_TEST

START_TEST(test_identities)
{
    /* CRPS of a point at the mean is sigma (2 phi(0) - 1/sqrt(pi)) =
     * sigma (sqrt 2 - 1) / sqrt(pi); far out it tends to |y - mu| -
     * sigma / sqrt(pi) (the absolute error minus half the mean |X - X'|). */
    const float m[] = {3.0f}, v[] = {0.25f}, y0[] = {3.0f}, yfar[] = {13.0f};
    double c;
    ASSERT_OK(ibvi_regression_crps(&c, m, v, y0, 1));
    ck_assert_double_eq_tol(c, 0.5 * (sqrt(2.0) - 1.0) / sqrt(PI), 1e-15);
    ASSERT_OK(ibvi_regression_crps(&c, m, v, yfar, 1));
    ck_assert_double_eq_tol(c, 10.0 - 0.5 / sqrt(PI), 1e-12);
    /* Coverage is exact on a grid of standardized errors: 1000 points with
     * z_i = Phi^-1((i + 0.5) / 1000), so the central 90% interval holds
     * exactly the 900 middle ones. */
    enum { N = 1000 };
    static float mean[N], var[N], y[N];
    for (int i = 0; i < N; i++) {
        double z;
        ASSERT_OK(ibvi_normal_quantile(&z, (i + 0.5) / N));
        mean[i] = 1.0f;
        var[i] = 4.0f;
        y[i] = (float)(1.0 + 2.0 * z);
    }
    const double levels[] = {0.5, 0.9, 0.95};
    double cov[3], err;
    ASSERT_OK(ibvi_regression_coverage(cov, mean, var, y, N, levels, 3));
    ck_assert(cov[0] == 0.5 && cov[1] == 0.9 && cov[2] == 0.95);
    ASSERT_OK(ibvi_regression_calibration_error(&err, mean, var, y, N, levels, 3));
    ck_assert_double_eq_tol(err, 0.0, 1e-15);
    /* Halving every sigma (var / 4) halves every interval: coverage at 50%
     * becomes the fraction with |2 z| <= 0.6745, i.e. 2 Phi(0.3372) - 1
     * = 0.2641 of the grid. */
    for (int i = 0; i < N; i++)
        var[i] = 1.0f;
    ASSERT_OK(ibvi_regression_coverage(cov, mean, var, y, N, levels, 1));
    ck_assert_double_eq_tol(cov[0], 0.2641, 0.0011);
}
END_TEST

START_TEST(test_errors_leave_outputs)
{
    double v = 5.0, cov[2] = {5.0, 5.0};
    const double levels[] = {0.5, 1.0};
    const float bad_v[] = {1.0f, 0.0f};
    ck_assert_int_eq(ibvi_regression_nll(&v, M, bad_v, Y, 2), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_regression_nll: var[1]"));
    ck_assert_int_eq(ibvi_regression_coverage(cov, M, V, Y, 2, levels, 2),
                     IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "levels[1]"));
    ck_assert_int_eq(ibvi_regression_crps(&v, M, V, Y, 0), IBVI_ERR_INVALID_ARG);
    ck_assert(v == 5.0 && cov[0] == 5.0 && cov[1] == 5.0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("regression_metrics");
    TCase *tc = tcase_create("regression");
    tcase_add_test(tc, test_normal_quantile_known_values);
    tcase_add_test(tc, test_hand_values);
    tcase_add_test(tc, test_identities);
    tcase_add_test(tc, test_errors_leave_outputs);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

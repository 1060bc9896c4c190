/*
 * libibvi - tests of temperature scaling (include/ibvi/calibration.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"

#define CK_STATUS(expr, status)                                               \
    do {                                                                      \
        int ck_rc_ = (int)(expr);                                             \
        ck_assert_msg(ck_rc_ == (int)(status),                                \
                      "%s returned %d (%s), expected %d; last error: %s",     \
                      #expr, ck_rc_, ibvi_status_string(ck_rc_),              \
                      (int)(status), ibvi_last_error());                      \
    } while (0)
#define CK_OK(expr) CK_STATUS(expr, IBVI_OK)

/* ---- deterministic data ----------------------------------------------------- */

static uint64_t mix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(mix64(s) >> 11) * 0x1p-53; }

static double normal(uint64_t *s)
{
    double u1;
    do {
        u1 = uniform(s);
    } while (u1 <= 0.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * uniform(s));
}

/* Naive softmax of one row at temperature t, in double. */
static void softmax_ref(const float *z, int32_t C, double t, double *p)
{
    double m = z[0], s = 0.0;
    for (int32_t c = 1; c < C; c++)
        m = z[c] > m ? z[c] : m;
    for (int32_t c = 0; c < C; c++) {
        p[c] = exp(((double)z[c] - m) / t);
        s += p[c];
    }
    for (int32_t c = 0; c < C; c++)
        p[c] /= s;
}

/* n rows of logits N(0, scale^2) and labels drawn from softmax(z / t_true)
 * (t_true <= 0: labels uniform, independent of the logits). */
static void synth(uint64_t seed, int64_t n, int32_t C, double scale,
                  double t_true, float *z, int32_t *y)
{
    uint64_t s = seed;
    double p[64];
    for (int64_t i = 0; i < n; i++) {
        float *row = z + i * C;
        for (int32_t c = 0; c < C; c++)
            row[c] = (float)(scale * normal(&s));
        if (t_true <= 0.0) {
            y[i] = (int32_t)(mix64(&s) % (uint64_t)C);
            continue;
        }
        softmax_ref(row, C, t_true, p);
        double u = uniform(&s), acc = 0.0;
        y[i] = C - 1;
        for (int32_t c = 0; c < C; c++) {
            acc += p[c];
            if (u < acc) {
                y[i] = c;
                break;
            }
        }
    }
}

static double nll(const float *z, const int32_t *y, int64_t n, int32_t C,
                  double t)
{
    double total = 0.0, p[64];
    for (int64_t i = 0; i < n; i++) {
        softmax_ref(z + i * C, C, t, p);
        total -= log(p[y[i]]);
    }
    return total / (double)n;
}

/* ---- fitting ------------------------------------------------------------------ */

static void recover(double t_true, uint64_t seed)
{
    const int64_t n = 20000;
    const int32_t C = 10;
    float *z = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    synth(seed, n, C, 3.0, t_true, z, y);
    float t = -1.0f;
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert_msg(fabs(t / t_true - 1.0) < 0.04, "T_true %g: fitted %g",
                  t_true, (double)t);
    /* It is the minimiser of the NLL: nearby values are no better. */
    const double at = nll(z, y, n, C, t);
    ck_assert(at <= nll(z, y, n, C, t * 1.001) + 1e-12);
    ck_assert(at <= nll(z, y, n, C, t / 1.001) + 1e-12);
    ck_assert(at <= nll(z, y, n, C, 1.0) + 1e-12);
    /* Deterministic. */
    float again;
    CK_OK(ibvi_temperature_fit(&again, z, n, C, y));
    ck_assert(again == t);
    free(z);
    free(y);
}

START_TEST(test_recover_half) { recover(0.5, 1); }
END_TEST

START_TEST(test_recover_two) { recover(2.0, 2); }
END_TEST

START_TEST(test_recover_four) { recover(4.0, 3); }
END_TEST

START_TEST(test_calibrated_model_unchanged)
{
    const int64_t n = 20000;
    const int32_t C = 6;
    float *z = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    float *p1 = malloc(sizeof(float) * (size_t)(n * C));
    float *pt = malloc(sizeof(float) * (size_t)(n * C));
    synth(4, n, C, 2.0, 1.0, z, y);
    float t;
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert_msg(fabs(t - 1.0) < 0.04, "fitted %g", (double)t);
    CK_OK(ibvi_temperature_apply(p1, z, n, C, 1.0f));
    CK_OK(ibvi_temperature_apply(pt, z, n, C, t));
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        int a1 = 0, at = 0;
        for (int32_t c = 0; c < C; c++) {
            const double d = fabs((double)p1[i * C + c] - pt[i * C + c]);
            worst = d > worst ? d : worst;
            if (p1[i * C + c] > p1[i * C + a1])
                a1 = c;
            if (pt[i * C + c] > pt[i * C + at])
                at = c;
        }
        ck_assert_int_eq(a1, at); /* T never changes the prediction */
    }
    ck_assert_msg(worst < 0.02, "max probability change %g", worst);
    free(z);
    free(y);
    free(p1);
    free(pt);
}
END_TEST

START_TEST(test_fit_boundaries)
{
    const int64_t n = 500;
    const int32_t C = 4;
    float *z = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    float t;

    /* Separable: the label is the argmax by a wide margin, so the NLL keeps
     * falling as T -> 0: the lower end. */
    synth(5, n, C, 1.0, 1.0, z, y);
    for (int64_t i = 0; i < n; i++) {
        z[i * C + y[i]] += 5.0f;
    }
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert(t == IBVI_TEMPERATURE_MIN);

    /* Labels unrelated to the logits: the NLL falls as T -> infinity. */
    synth(6, n, C, 3.0, 0.0, z, y);
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert_msg(t == IBVI_TEMPERATURE_MAX || t > 10.0f, "fitted %g",
                  (double)t);

    /* Logits of 100 x what the labels follow: T = 200 is out of range. */
    synth(7, n, C, 3.0, 2.0, z, y);
    for (int64_t i = 0; i < n * C; i++)
        z[i] *= 100.0f;
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert(t == IBVI_TEMPERATURE_MAX);

    /* Every row constant: the NLL does not depend on T. */
    for (int64_t i = 0; i < n * C; i++)
        z[i] = (float)(i / C);
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert(t == 1.0f);

    /* One row. */
    const float one[3] = {1.0f, 2.0f, 0.5f};
    const int32_t label = 1;
    CK_OK(ibvi_temperature_fit(&t, one, 1, 3, &label));
    ck_assert(t == IBVI_TEMPERATURE_MIN);
    free(z);
    free(y);
}
END_TEST

START_TEST(test_fit_huge_logits)
{
    /* +-1e4 logits with partly wrong labels: a finite T in range. */
    const int64_t n = 400;
    const int32_t C = 5;
    float *z = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = 8;
    for (int64_t i = 0; i < n; i++) {
        for (int32_t c = 0; c < C; c++)
            z[i * C + c] = (mix64(&s) & 1) ? 1e4f : -1e4f;
        y[i] = (int32_t)(mix64(&s) % (uint64_t)C);
    }
    float t;
    CK_OK(ibvi_temperature_fit(&t, z, n, C, y));
    ck_assert(isfinite(t) && t >= IBVI_TEMPERATURE_MIN &&
              t <= IBVI_TEMPERATURE_MAX);
    /* Huge logits of a weak model: the minimum is at a huge T. */
    ck_assert(t == IBVI_TEMPERATURE_MAX);
    free(z);
    free(y);
}
END_TEST

/* ---- applying -------------------------------------------------------------------- */

START_TEST(test_apply_matches_naive)
{
    const int64_t n = 300;
    const int32_t C = 7;
    float *z = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    float *p = malloc(sizeof(float) * (size_t)(n * C));
    synth(9, n, C, 4.0, 1.0, z, y);
    const float temps[] = {0.05f, 0.3f, 1.0f, 2.5f, 20.0f, 1000.0f};
    double ref[16];
    for (size_t k = 0; k < sizeof temps / sizeof temps[0]; k++) {
        CK_OK(ibvi_temperature_apply(p, z, n, C, temps[k]));
        for (int64_t i = 0; i < n; i++) {
            softmax_ref(z + i * C, C, temps[k], ref);
            double sum = 0.0;
            for (int32_t c = 0; c < C; c++) {
                const double got = p[i * C + c];
                ck_assert_msg(fabs(got - ref[c]) <= 1e-6 * ref[c] + 1e-30,
                              "T %g row %lld class %d: %.9g vs %.9g",
                              (double)temps[k], (long long)i, (int)c, got,
                              ref[c]);
                sum += got;
            }
            ck_assert(fabs(sum - 1.0) < 1e-5);
        }
    }
    /* In place gives the same bits. */
    float *q = malloc(sizeof(float) * (size_t)(n * C));
    CK_OK(ibvi_temperature_apply(p, z, n, C, 1.7f));
    memcpy(q, z, sizeof(float) * (size_t)(n * C));
    CK_OK(ibvi_temperature_apply(q, q, n, C, 1.7f));
    ck_assert(memcmp(p, q, sizeof(float) * (size_t)(n * C)) == 0);
    /* One class: probability 1. */
    CK_OK(ibvi_temperature_apply(p, z, n * C, 1, 3.0f));
    for (int64_t i = 0; i < n * C; i++)
        ck_assert(p[i] == 1.0f);
    free(q);
    free(z);
    free(y);
    free(p);
}
END_TEST

START_TEST(test_apply_extreme_logits)
{
    const float z[3 * 4] = {1e4f, -1e4f, 0.0f, 9999.0f,
                            -1e4f, -1e4f, -1e4f, -1e4f,
                            3.4e38f, -3.4e38f, 0.0f, 1.0f};
    float p[12];
    const float temps[] = {0.05f, 1.0f, 20.0f, 1e-6f, 1e30f};
    for (size_t k = 0; k < sizeof temps / sizeof temps[0]; k++) {
        CK_OK(ibvi_temperature_apply(p, z, 3, 4, temps[k]));
        for (int r = 0; r < 3; r++) {
            double sum = 0.0;
            for (int c = 0; c < 4; c++) {
                ck_assert(isfinite(p[r * 4 + c]) && p[r * 4 + c] >= 0.0f);
                sum += p[r * 4 + c];
            }
            ck_assert(fabs(sum - 1.0) < 1e-6);
        }
        /* An all-equal row is uniform at any T. */
        for (int c = 0; c < 4; c++)
            ck_assert(p[4 + c] == 0.25f);
    }
    CK_OK(ibvi_temperature_apply(p, z, 3, 4, 1.0f));
    ck_assert(fabsf(p[0] - 1.0f / (1.0f + expf(-1.0f))) < 1e-6f);
    ck_assert(p[1] == 0.0f && p[2] == 0.0f);
    ck_assert(p[8] == 1.0f);
    CK_OK(ibvi_temperature_apply(p, z, 3, 4, 1e30f));
    ck_assert(fabsf(p[0] - 0.25f) < 1e-6f);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------- */

START_TEST(test_errors)
{
    float z[6] = {1, 2, 3, 4, 5, 6}, p[6], t = 7.0f;
    int32_t y[2] = {0, 2};
    CK_STATUS(ibvi_temperature_fit(NULL, z, 2, 3, y), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, NULL, 2, 3, y), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, z, 2, 3, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, z, 0, 3, y), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, z, -5, 3, y), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, z, 6, 1, y), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_fit(&t, z, INT64_MAX, 3, y),
              IBVI_ERR_INVALID_ARG);
    y[1] = 3;
    CK_STATUS(ibvi_temperature_fit(&t, z, 2, 3, y), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "labels[1]"));
    y[1] = -1;
    CK_STATUS(ibvi_temperature_fit(&t, z, 2, 3, y), IBVI_ERR_INVALID_ARG);
    y[1] = 2;
    z[4] = NAN;
    CK_STATUS(ibvi_temperature_fit(&t, z, 2, 3, y), IBVI_ERR_NONFINITE);
    z[4] = INFINITY;
    CK_STATUS(ibvi_temperature_fit(&t, z, 2, 3, y), IBVI_ERR_NONFINITE);
    ck_assert(t == 7.0f); /* unchanged on failure */

    memset(p, 0, sizeof p);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 3, 1.0f), IBVI_ERR_NONFINITE);
    z[4] = 5.0f;
    CK_STATUS(ibvi_temperature_apply(NULL, z, 2, 3, 1.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, NULL, 2, 3, 1.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 0, 3, 1.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 0, 1.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 3, 0.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 3, -1.0f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 3, NAN), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_temperature_apply(p, z, 2, 3, INFINITY),
              IBVI_ERR_INVALID_ARG);
    for (int i = 0; i < 6; i++)
        ck_assert(p[i] == 0.0f); /* unchanged on failure */
    ck_assert(ibvi_last_error()[0] != '\0');
}
END_TEST

static Suite *calibration_suite(void)
{
    Suite *s = suite_create("calibration");
    TCase *tc = tcase_create("fit");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_recover_half);
    tcase_add_test(tc, test_recover_two);
    tcase_add_test(tc, test_recover_four);
    tcase_add_test(tc, test_calibrated_model_unchanged);
    tcase_add_test(tc, test_fit_boundaries);
    tcase_add_test(tc, test_fit_huge_logits);
    suite_add_tcase(s, tc);
    tc = tcase_create("apply");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_apply_matches_naive);
    tcase_add_test(tc, test_apply_extreme_logits);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(calibration_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

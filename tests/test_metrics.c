/*
 * libibvi - tests of the uncertainty metrics (include/ibvi/metrics.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"
#include "ibvi/metrics.h"

#define C3 3

/* Asserts that `call` returns `status` and leaves a message. */
#define ASSERT_FAILS(status, call)                                            \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        int st_ = (call);                                                     \
        ck_assert_int_eq(st_, (status));                                      \
        ck_assert_msg(ibvi_last_error()[0] != '\0',                           \
                      "no error message after " #call);                       \
    } while (0)

#define ASSERT_OK(call) ck_assert_int_eq((call), IBVI_OK)

/* Deterministic generator for the randomized tests (xorshift64*). */
static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s ? s : 1; }
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1p-53; }

/* n rows of random normalized probabilities, some one-hot rows and ties. */
static void random_probs(float *p, int32_t *y, int64_t n, int32_t classes)
{
    for (int64_t i = 0; i < n; i++) {
        float *row = p + i * classes;
        uint64_t kind = rng_next() % 10;
        if (kind == 0) { /* one-hot */
            for (int32_t c = 0; c < classes; c++)
                row[c] = 0.0f;
            row[rng_next() % (uint64_t)classes] = 1.0f;
        } else if (kind == 1) { /* uniform: all tied */
            for (int32_t c = 0; c < classes; c++)
                row[c] = 1.0f / (float)classes;
        } else {
            double sum = 0.0, e[64];
            for (int32_t c = 0; c < classes; c++) {
                e[c] = exp(4.0 * rng_uniform());
                sum += e[c];
            }
            for (int32_t c = 0; c < classes; c++)
                row[c] = (float)(e[c] / sum);
        }
        y[i] = (int32_t)(rng_next() % (uint64_t)classes);
    }
}

/* ---- fixture: a 3-class accumulator -------------------------------------- */

static ibvi_metrics *m3;

static void setup3(void)
{
    ck_assert_int_eq(ibvi_metrics_create(&m3, C3, NULL), IBVI_OK);
}
static void teardown3(void)
{
    ibvi_metrics_free(m3);
    m3 = NULL;
}

/* ---- accuracy, NLL, Brier ---------------------------------------------- */

START_TEST(test_basic_three_classes)
{
    const float p[] = {
        0.7f, 0.2f, 0.1f, /* y=0: correct       */
        0.1f, 0.6f, 0.3f, /* y=2: predicts 1    */
        0.4f, 0.4f, 0.2f, /* y=1: tie -> 0      */
        0.0f, 1.0f, 0.0f, /* y=0: p[y] = 0      */
    };
    const int32_t y[] = {0, 2, 1, 0};
    ASSERT_OK(ibvi_metrics_add(m3, p, 4, y));
    int64_t n = -1;
    ASSERT_OK(ibvi_metrics_count(m3, &n));
    ck_assert_int_eq(n, 4);

    double v;
    ASSERT_OK(ibvi_metrics_accuracy(m3, &v));
    ck_assert_double_eq(v, 0.25);

    /* Hand values: -log 0.7 = 0.356675, -log 0.3 = 1.203973,
     * -log 0.4 = 0.916291, -log 1e-12 = 27.631021. */
    ASSERT_OK(ibvi_metrics_nll(m3, &v));
    ck_assert_double_eq_tol(v, (0.356675 + 1.203973 + 0.916291 + 27.631021) / 4,
                            1e-6);
    /* Brier: 0.14 + 0.86 + 0.56 + 2 = 3.56 */
    ASSERT_OK(ibvi_metrics_brier(m3, &v));
    ck_assert_double_eq_tol(v, 3.56 / 4, 1e-6);
}
END_TEST

START_TEST(test_zero_probability_true_class)
{
    const float p[] = {0.0f, 1.0f, 0.0f};
    const int32_t y[] = {2};
    ASSERT_OK(ibvi_metrics_add(m3, p, 1, y));
    double v;
    ASSERT_OK(ibvi_metrics_nll(m3, &v));
    ck_assert_double_eq(v, -log(1e-12));
    ck_assert_double_eq_tol(v, 27.631021115928547, 1e-12);
    ASSERT_OK(ibvi_metrics_brier(m3, &v));
    ck_assert_double_eq(v, 2.0);
}
END_TEST

START_TEST(test_argmax_ties_lowest_index)
{
    /* All three tied: predicts class 0. */
    const float p[] = {0.25f, 0.25f, 0.25f, 0.25f};
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 4, NULL));
    for (int32_t label = 0; label < 4; label++) {
        const int32_t y[] = {label};
        ASSERT_OK(ibvi_metrics_reset(m));
        ASSERT_OK(ibvi_metrics_add(m, p, 1, y));
        double acc;
        ASSERT_OK(ibvi_metrics_accuracy(m, &acc));
        ck_assert_double_eq(acc, label == 0 ? 1.0 : 0.0);
    }
    ibvi_metrics_free(m);

    /* Tie between classes 1 and 2 after a smaller class 0: predicts 1. */
    const float q[] = {0.2f, 0.4f, 0.4f, 0.2f, 0.4f, 0.4f};
    const int32_t yq[] = {1, 2};
    ASSERT_OK(ibvi_metrics_add(m3, q, 2, yq));
    double acc;
    ASSERT_OK(ibvi_metrics_accuracy(m3, &acc));
    ck_assert_double_eq(acc, 0.5);
}
END_TEST

START_TEST(test_perfect_predictions)
{
    const float p[] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    const int32_t y[] = {0, 1, 2};
    ASSERT_OK(ibvi_metrics_add(m3, p, 3, y));
    double v;
    ASSERT_OK(ibvi_metrics_accuracy(m3, &v));
    ck_assert_double_eq(v, 1.0);
    ASSERT_OK(ibvi_metrics_nll(m3, &v));
    ck_assert_double_eq(v, 0.0);
    ASSERT_OK(ibvi_metrics_brier(m3, &v));
    ck_assert_double_eq(v, 0.0);
    ASSERT_OK(ibvi_metrics_ece(m3, &v));
    ck_assert_double_eq(v, 0.0);
    ASSERT_OK(ibvi_metrics_mce(m3, &v));
    ck_assert_double_eq(v, 0.0);
    /* All in the last bin (confidence exactly 1). */
    int64_t counts[IBVI_METRICS_BINS];
    double acc[IBVI_METRICS_BINS], conf[IBVI_METRICS_BINS];
    ASSERT_OK(ibvi_metrics_bins(m3, counts, acc, conf, IBVI_METRICS_BINS));
    for (int b = 0; b < IBVI_METRICS_BINS - 1; b++)
        ck_assert_int_eq(counts[b], 0);
    ck_assert_int_eq(counts[IBVI_METRICS_BINS - 1], 3);
    ck_assert_double_eq(acc[IBVI_METRICS_BINS - 1], 1.0);
    ck_assert_double_eq(conf[IBVI_METRICS_BINS - 1], 1.0);
}
END_TEST

START_TEST(test_rounding_tolerance)
{
    /* Slightly outside [0, 1] from float rounding: accepted and clamped. */
    const float p[] = {1.0000001f, -1e-7f, 0.0f};
    const int32_t y[] = {0};
    ASSERT_OK(ibvi_metrics_add(m3, p, 1, y));
    double v;
    ASSERT_OK(ibvi_metrics_nll(m3, &v));
    ck_assert_double_eq(v, 0.0);
    ASSERT_OK(ibvi_metrics_brier(m3, &v));
    ck_assert_double_eq(v, 0.0);
    ASSERT_OK(ibvi_metrics_ece(m3, &v));
    ck_assert_double_eq(v, 0.0);
}
END_TEST

/* ---- ECE / MCE / bins ------------------------------------------------------
 * Two classes, dyadic probabilities so every sum is exact:
 *   A [0.5  , 0.5  ] y=1  predicts 0 (tie): wrong  conf 0.5   bin  7 (7.5)
 *   B [0.75 , 0.25 ] y=0  correct              conf 0.75  bin 11 (11.25)
 *   C [0.25 , 0.75 ] y=0  wrong                conf 0.75  bin 11
 *   D [1    , 0    ] y=0  correct              conf 1     bin 14 (last)
 *   E [0    , 1    ] y=0  wrong, p[y] = 0      conf 1     bin 14
 *   F [0.625, 0.375] y=0  correct              conf 0.625 bin  9 (9.375)
 * bin 7: n 1, acc 0,   conf 0.5,   gap 0.5
 * bin 9: n 1, acc 1,   conf 0.625, gap 0.375
 * bin 11: n 2, acc 0.5, conf 0.75,  gap 0.25
 * bin 14: n 2, acc 0.5, conf 1,     gap 0.5
 * ECE = (0.5 + 0.375 + 2 * 0.25 + 2 * 0.5) / 6 = 2.375 / 6; MCE = 0.5.
 * accuracy 3/6; Brier (0.5 + 0.125 + 1.125 + 0 + 2 + 0.28125) / 6 = 4.03125/6;
 * NLL (log 2 + log 4/3 + log 4 + 0 - log 1e-12 + log 1.6) / 6. */
static const float calib_p[] = {0.5f, 0.5f, 0.75f, 0.25f, 0.25f, 0.75f,
                                1.0f, 0.0f, 0.0f,  1.0f,  0.625f, 0.375f};
static const int32_t calib_y[] = {1, 0, 0, 0, 0, 0};

static void check_calibration_example(const ibvi_metrics *m)
{
    double v;
    int64_t n;
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 6);
    ASSERT_OK(ibvi_metrics_accuracy(m, &v));
    ck_assert_double_eq(v, 0.5);
    ASSERT_OK(ibvi_metrics_brier(m, &v));
    ck_assert_double_eq(v, 4.03125 / 6);
    ASSERT_OK(ibvi_metrics_nll(m, &v));
    ck_assert_double_eq_tol(
        v, (log(2.0) + log(4.0 / 3) + log(4.0) - log(1e-12) + log(1.6)) / 6,
        1e-14);
    ASSERT_OK(ibvi_metrics_ece(m, &v));
    ck_assert_double_eq(v, 2.375 / 6);
    ASSERT_OK(ibvi_metrics_mce(m, &v));
    ck_assert_double_eq(v, 0.5);

    int64_t counts[IBVI_METRICS_BINS];
    double acc[IBVI_METRICS_BINS], conf[IBVI_METRICS_BINS];
    ASSERT_OK(ibvi_metrics_bins(m, counts, acc, conf, IBVI_METRICS_BINS));
    const int64_t want_n[IBVI_METRICS_BINS] = {0, 0, 0, 0, 0, 0, 0, 1,
                                               0, 1, 0, 2, 0, 0, 2};
    const double want_acc[IBVI_METRICS_BINS] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0.5, 0, 0, 0.5};
    const double want_conf[IBVI_METRICS_BINS] = {
        0, 0, 0, 0, 0, 0, 0, 0.5, 0, 0.625, 0, 0.75, 0, 0, 1.0};
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        ck_assert_int_eq(counts[b], want_n[b]);
        ck_assert_double_eq(acc[b], want_acc[b]);
        ck_assert_double_eq(conf[b], want_conf[b]);
    }
}

START_TEST(test_ece_mce_hand_example)
{
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 2, NULL));
    ASSERT_OK(ibvi_metrics_add(m, calib_p, 6, calib_y));
    check_calibration_example(m);

    /* Reset forgets everything; adding again gives the same results. */
    ASSERT_OK(ibvi_metrics_reset(m));
    int64_t n = -1;
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 0);
    double v;
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_ece(m, &v));
    for (int i = 0; i < 6; i++)
        ASSERT_OK(ibvi_metrics_add(m, calib_p + 2 * i, 1, calib_y + i));
    check_calibration_example(m);
    ibvi_metrics_free(m);
}
END_TEST

START_TEST(test_bin_edges)
{
    /* Five tied classes: the confidence is p itself. 0.2f is just above 3/15
     * (bin 3); the float below it is just under 3/15 (bin 2). */
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 5, NULL));
    float below = nextafterf(0.2f, 0.0f);
    ck_assert((double)0.2f > 0.2 && (double)below < 0.2);
    const float p[] = {0.2f, 0.2f, 0.2f, 0.2f, 0.2f, below, below,
                       below, below, below, 0.0f, 0.0f, 0.0f, 0.0f,
                       0.0f, /* conf 0: bin 0 */
                       nextafterf(1.0f, 0.0f), 0, 0, 0, 0 /* bin 14 */};
    const int32_t y[] = {0, 0, 0, 0};
    ASSERT_OK(ibvi_metrics_add(m, p, 4, y));
    int64_t counts[IBVI_METRICS_BINS];
    double acc[IBVI_METRICS_BINS], conf[IBVI_METRICS_BINS];
    ASSERT_OK(ibvi_metrics_bins(m, counts, acc, conf, IBVI_METRICS_BINS));
    for (int b = 0; b < IBVI_METRICS_BINS; b++)
        ck_assert_int_eq(counts[b],
                         (b == 0 || b == 2 || b == 3 || b == 14) ? 1 : 0);
    ck_assert_double_eq(conf[3], (double)0.2f);
    ck_assert_double_eq(conf[2], (double)below);
    ck_assert_double_eq(conf[0], 0.0);
    ck_assert_double_eq(acc[0], 1.0); /* all-zero row predicts class 0 */
    ibvi_metrics_free(m);
}
END_TEST

START_TEST(test_one_class)
{
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 1, NULL));
    const float p[] = {1.0f, 0.5f};
    const int32_t y[] = {0, 0};
    ASSERT_OK(ibvi_metrics_add(m, p, 2, y));
    double v;
    ASSERT_OK(ibvi_metrics_accuracy(m, &v));
    ck_assert_double_eq(v, 1.0);
    ASSERT_OK(ibvi_metrics_brier(m, &v));
    ck_assert_double_eq(v, 0.125);
    ASSERT_OK(ibvi_metrics_ece(m, &v));
    ck_assert_double_eq(v, 0.25); /* bin 7: |1 - 0.5| / 2 */
    ASSERT_OK(ibvi_metrics_mce(m, &v));
    ck_assert_double_eq(v, 0.5);
    ibvi_metrics_free(m);
}
END_TEST


/* ---- per-point metrics: adaptive ECE, AURC, risk-coverage ---------------- */

/* Two classes, four points (confidence, hit):
 *   [0.9, 0.1] y 0 -> (0.9, 1)    [0.6, 0.4] y 1 -> (0.6, 0)
 *   [0.3, 0.7] y 1 -> (0.7, 1)    [0.2, 0.8] y 0 -> (0.8, 0)
 * Sorted by confidence: 0.6(0) 0.7(1) 0.8(0) 0.9(1). */
static const float hand_p[] = {0.9f, 0.1f, 0.6f, 0.4f, 0.3f, 0.7f, 0.2f, 0.8f};
static const int32_t hand_y[] = {0, 1, 1, 0};

START_TEST(test_ece_adaptive_hand)
{
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 2, NULL));
    ASSERT_OK(ibvi_metrics_add(m, hand_p, 4, hand_y));
    double v;
    /* 1 bin: |hits 2 - conf 3.0| / 4 = 0.25 */
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, 1));
    ck_assert_double_eq_tol(v, 0.25, 1e-7);
    /* 2 bins {0.6, 0.7}, {0.8, 0.9}: (|1 - 1.3| + |1 - 1.7|) / 4 = 0.25 */
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, 2));
    ck_assert_double_eq_tol(v, 0.25, 1e-7);
    /* 3 bins, edges floor(b 4 / 3) = 0, 1, 2, 4: {0.6}, {0.7}, {0.8, 0.9}:
     * (0.6 + 0.3 + |1 - 1.7|) / 4 = 1.6 / 4 = 0.4 */
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, 3));
    ck_assert_double_eq_tol(v, 0.4, 1e-7);
    /* 4 bins of one: (0.6 + 0.3 + 0.8 + 0.1) / 4 = 0.45; more bins than
     * points give the same bins. */
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, 4));
    ck_assert_double_eq_tol(v, 0.45, 1e-7);
    double w;
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &w, INT32_MAX));
    ck_assert(v == w);
    ibvi_metrics_free(m);
}
END_TEST

START_TEST(test_aurc_hand)
{
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 2, NULL));
    ASSERT_OK(ibvi_metrics_add(m, hand_p, 4, hand_y));
    /* Most confident first: 0.9 hit, 0.8 miss, 0.7 hit, 0.6 miss; errors
     * E(1..4) = 0, 1, 1, 2; risks 0, 1/2, 1/3, 1/2;
     * AURC = (0 + 1/2 + 1/3 + 1/2) / 4 = 1/3. */
    double v;
    ASSERT_OK(ibvi_metrics_aurc(m, &v));
    ck_assert_double_eq_tol(v, 1.0 / 3.0, 1e-15);
    /* Coverage 1/8: x = 0.5, E = 0 -> 0; 1/4: x = 1 -> 0; 1/2: x = 2 ->
     * 1/2; 5/8: x = 2.5, E = 1 (between E(2) = 1 and E(3) = 1) -> 0.4;
     * 3/4: x = 3 -> 1/3; 1: x = 4, E = 2 -> 1/2 (the error rate). */
    const double cov[] = {0.125, 0.25, 0.5, 0.625, 0.75, 1.0};
    const double want[] = {0.0, 0.0, 0.5, 0.4, 1.0 / 3.0, 0.5};
    double risk[6];
    ASSERT_OK(ibvi_metrics_risk_coverage(m, risk, cov, 6));
    for (int i = 0; i < 6; i++)
        ck_assert_double_eq_tol(risk[i], want[i], 1e-15);
    ibvi_metrics_free(m);
}
END_TEST

/* Ties: (0.9, hit), (0.7, hit), (0.7, miss), (0.6, miss). */
START_TEST(test_aurc_ties)
{
    const float p[] = {0.9f, 0.1f, 0.7f, 0.3f, 0.7f, 0.3f, 0.6f, 0.4f};
    const int32_t y[] = {0, 0, 1, 1};
    /* The same points with the tied pair swapped. */
    const float q[] = {0.9f, 0.1f, 0.7f, 0.3f, 0.7f, 0.3f, 0.6f, 0.4f};
    const int32_t yq[] = {0, 1, 0, 1};
    ibvi_metrics *m, *n;
    ASSERT_OK(ibvi_metrics_create(&m, 2, NULL));
    ASSERT_OK(ibvi_metrics_create(&n, 2, NULL));
    ASSERT_OK(ibvi_metrics_add(m, p, 4, y));
    ASSERT_OK(ibvi_metrics_add(n, q, 4, yq));
    /* Groups from the top: {0.9}: 1 point 0 errors; {0.7, 0.7}: 2 points 1
     * error, E grows by 1/2 a point; {0.6}: 1 error. E(1..4) = 0, 1/2, 1, 2;
     * AURC = (0 + 1/4 + 1/3 + 1/2) / 4 = 13/48. */
    double v, w;
    ASSERT_OK(ibvi_metrics_aurc(m, &v));
    ASSERT_OK(ibvi_metrics_aurc(n, &w));
    ck_assert_double_eq_tol(v, 13.0 / 48.0, 1e-15);
    ck_assert(v == w); /* the order of tied points does not matter */
    /* Coverage 3/8: x = 1.5 inside the tie group, E = 0 + 0.5 / 2 = 0.25,
     * risk 0.25 / 1.5 = 1/6. */
    const double cov[] = {0.375};
    double risk;
    ASSERT_OK(ibvi_metrics_risk_coverage(m, &risk, cov, 1));
    ck_assert_double_eq_tol(risk, 1.0 / 6.0, 1e-15);
    /* Adaptive ECE, 2 bins: sorted (0.6, 0) (0.7, 0) | (0.7, 1) (0.9, 1):
     * (|0 - 1.3| + |2 - 1.6|) / 4 = 0.425, whatever the input order. */
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, 2));
    ASSERT_OK(ibvi_metrics_ece_adaptive(n, &w, 2));
    ck_assert_double_eq_tol(v, 0.425, 1e-7);
    ck_assert(v == w);
    /* All tied, two right and two wrong: risk 1/2 at every coverage. */
    const float u[] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    const int32_t yu[] = {0, 1, 0, 1};
    ASSERT_OK(ibvi_metrics_reset(m));
    ASSERT_OK(ibvi_metrics_add(m, u, 4, yu));
    ASSERT_OK(ibvi_metrics_aurc(m, &v));
    ck_assert_double_eq_tol(v, 0.5, 1e-15);
    ibvi_metrics_free(m);
    ibvi_metrics_free(n);
}
END_TEST

/* Naive reference: sort a copy with an insertion sort, then the textbook
 * formulas. Random data with many ties (confidences on a coarse grid). */
START_TEST(test_per_point_random_against_reference)
{
    enum { N = 600, C = 4 };
    static float p[N * C];
    static int32_t y[N];
    static double conf[N], hit[N];
    rng_seed(777);
    for (int i = 0; i < N; i++) {
        /* Top probability on a grid of 8 values: many ties. */
        const int top = (int)(rng_next() % C);
        const float c = 0.3f + 0.1f * (float)(rng_next() % 7);
        for (int k = 0; k < C; k++)
            p[i * C + k] = k == top ? c : (1.0f - c) / (C - 1);
        y[i] = (int32_t)(rng_next() % 2 ? top : (int)(rng_next() % C));
        conf[i] = (double)c;
        hit[i] = y[i] == top;
    }
    /* sort by (conf, hit) */
    for (int i = 1; i < N; i++)
        for (int j = i; j > 0 && (conf[j - 1] > conf[j] ||
                                  (conf[j - 1] == conf[j] && hit[j - 1] > hit[j]));
             j--) {
            double t = conf[j]; conf[j] = conf[j - 1]; conf[j - 1] = t;
            t = hit[j]; hit[j] = hit[j - 1]; hit[j - 1] = t;
        }
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, C, NULL));
    ASSERT_OK(ibvi_metrics_add(m, p, N, y));
    const int32_t bins[] = {1, 10, 15, 599, 600};
    for (size_t k = 0; k < sizeof bins / sizeof bins[0]; k++) {
        const int B = bins[k];
        double ece = 0.0;
        for (int b = 0; b < B; b++) {
            const int lo = (int)((int64_t)b * N / B), hi = (int)((int64_t)(b + 1) * N / B);
            double cs = 0, hs = 0;
            for (int i = lo; i < hi; i++) { cs += conf[i]; hs += hit[i]; }
            ece += fabs(hs - cs) / N;
        }
        double v;
        ASSERT_OK(ibvi_metrics_ece_adaptive(m, &v, B));
        ck_assert_double_eq_tol(v, ece, 1e-12);
    }
    /* AURC: expected errors under random order within each tie group,
     * from the top. */
    double e_k[N + 1];
    e_k[0] = 0.0;
    for (int hi = N; hi > 0;) {
        int lo = hi;
        while (lo > 0 && conf[lo - 1] == conf[hi - 1])
            lo--;
        double errs = 0;
        for (int i = lo; i < hi; i++)
            errs += 1.0 - hit[i];
        const int before = N - hi;
        for (int t = 1; t <= hi - lo; t++)
            e_k[before + t] = e_k[before] + t * errs / (hi - lo);
        hi = lo;
    }
    double aurc = 0.0;
    for (int k = 1; k <= N; k++)
        aurc += e_k[k] / k / N;
    double v;
    ASSERT_OK(ibvi_metrics_aurc(m, &v));
    ck_assert_double_eq_tol(v, aurc, 1e-12);
    double risk, one = 1.0, acc;
    ASSERT_OK(ibvi_metrics_risk_coverage(m, &risk, &one, 1));
    ASSERT_OK(ibvi_metrics_accuracy(m, &acc));
    ck_assert_double_eq_tol(risk, 1.0 - acc, 1e-15);
    const double cov[] = {0.1, 0.333, 0.5, 0.9};
    double r4[4];
    ASSERT_OK(ibvi_metrics_risk_coverage(m, r4, cov, 4));
    for (int i = 0; i < 4; i++) {
        const double x = cov[i] * N;
        const int k = (int)floor(x);
        const double e = e_k[k] + (x - k) * (k < N ? e_k[k + 1] - e_k[k] : 0);
        ck_assert_double_eq_tol(r4[i], e / x, 1e-12);
    }
    ibvi_metrics_free(m);
}
END_TEST

START_TEST(test_per_point_errors)
{
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, 2, NULL));
    double v = 42.0, risk[2] = {7.0, 7.0};
    const double cov[] = {0.5, 1.0};
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_ece_adaptive(m, &v, 15));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_aurc(m, &v));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_risk_coverage(m, risk, cov, 2));
    ASSERT_OK(ibvi_metrics_add(m, hand_p, 4, hand_y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_ece_adaptive(NULL, &v, 15));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_ece_adaptive(m, NULL, 15));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_ece_adaptive(m, &v, 0));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_ece_adaptive(m, &v, -3));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_metrics_ece_adaptive"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_aurc(NULL, &v));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_aurc(m, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_risk_coverage(NULL, risk, cov, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_risk_coverage(m, NULL, cov, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_risk_coverage(m, risk, NULL, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_risk_coverage(m, risk, cov, 0));
    const double bad[][2] = {{0.0, 0.5}, {0.5, 1.5}, {0.9, 0.5}, {-0.1, 1.0}};
    for (int i = 0; i < 4; i++)
        ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                     ibvi_metrics_risk_coverage(m, risk, bad[i], 2));
    const double nan2[] = {0.5, NAN};
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_metrics_risk_coverage(m, risk, nan2, 2));
    ck_assert(v == 42.0 && risk[0] == 7.0 && risk[1] == 7.0);
    ibvi_metrics_free(m);
}
END_TEST

/* A failed add (bad input or no memory) stores no point. */
static int refuse_alloc;
static void *counting_alloc(void *opaque, size_t size)
{
    (void)opaque;
    return refuse_alloc ? NULL : malloc(size);
}
static void counting_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}

START_TEST(test_per_point_store_grows_and_fails_cleanly)
{
    ibvi_allocator a = {counting_alloc, counting_free, NULL};
    ibvi_metrics *m;
    refuse_alloc = 0;
    ASSERT_OK(ibvi_metrics_create(&m, 2, &a));
    ASSERT_OK(ibvi_metrics_add(m, hand_p, 4, hand_y));
    double before, after;
    ASSERT_OK(ibvi_metrics_aurc(m, &before));
    /* 300 more points need more than the first 256-point block. */
    static float p[300 * 2];
    static int32_t y[300];
    for (int i = 0; i < 300; i++) {
        p[2 * i] = 0.75f;
        p[2 * i + 1] = 0.25f;
        y[i] = i % 2;
    }
    refuse_alloc = 1;
    ASSERT_FAILS(IBVI_ERR_NOMEM, ibvi_metrics_add(m, p, 300, y));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_metrics_add"));
    int64_t n;
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 4);
    ASSERT_OK(ibvi_metrics_aurc(m, &after));
    ck_assert(before == after);
    refuse_alloc = 0;
    ASSERT_OK(ibvi_metrics_add(m, p, 300, y));
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 304);
    /* A self-merge to 608 points outgrows the 512-point block. */
    refuse_alloc = 1;
    ASSERT_FAILS(IBVI_ERR_NOMEM, ibvi_metrics_merge(m, m));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_metrics_merge"));
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 304);
    refuse_alloc = 0;
    ASSERT_OK(ibvi_metrics_merge(m, m));
    ASSERT_OK(ibvi_metrics_count(m, &n));
    ck_assert_int_eq(n, 608);
    double ece;
    ASSERT_OK(ibvi_metrics_ece_adaptive(m, &ece, 1));
    ibvi_metrics_free(m);
}
END_TEST

/* ---- merging and batching are exact ------------------------------------ */

static void assert_same_results(const ibvi_metrics *a, const ibvi_metrics *b)
{
    int64_t na, nb;
    ASSERT_OK(ibvi_metrics_count(a, &na));
    ASSERT_OK(ibvi_metrics_count(b, &nb));
    ck_assert_int_eq(na, nb);
    int (*getters[])(const ibvi_metrics *, double *) = {
        ibvi_metrics_accuracy, ibvi_metrics_nll, ibvi_metrics_brier,
        ibvi_metrics_ece, ibvi_metrics_mce};
    for (size_t g = 0; g < sizeof getters / sizeof getters[0]; g++) {
        double va, vb;
        ASSERT_OK(getters[g](a, &va));
        ASSERT_OK(getters[g](b, &vb));
        ck_assert_msg(memcmp(&va, &vb, sizeof va) == 0,
                      "getter %zu: %.17g != %.17g", g, va, vb);
    }
    /* The per-point metrics: bit for bit too. */
    const int32_t nbins[] = {1, 7, 15, 1000000};
    for (size_t k = 0; k < sizeof nbins / sizeof nbins[0]; k++) {
        double va, vb;
        ASSERT_OK(ibvi_metrics_ece_adaptive(a, &va, nbins[k]));
        ASSERT_OK(ibvi_metrics_ece_adaptive(b, &vb, nbins[k]));
        ck_assert_msg(memcmp(&va, &vb, sizeof va) == 0,
                      "ece_adaptive(%d): %.17g != %.17g", (int)nbins[k], va,
                      vb);
    }
    {
        double va, vb;
        ASSERT_OK(ibvi_metrics_aurc(a, &va));
        ASSERT_OK(ibvi_metrics_aurc(b, &vb));
        ck_assert_msg(memcmp(&va, &vb, sizeof va) == 0,
                      "aurc: %.17g != %.17g", va, vb);
        double cov[64], ra[64], rb[64];
        for (int i = 0; i < 64; i++)
            cov[i] = (i + 1) / 64.0;
        ASSERT_OK(ibvi_metrics_risk_coverage(a, ra, cov, 64));
        ASSERT_OK(ibvi_metrics_risk_coverage(b, rb, cov, 64));
        ck_assert(memcmp(ra, rb, sizeof ra) == 0);
    }
    int64_t ca[IBVI_METRICS_BINS], cb[IBVI_METRICS_BINS];
    double aa[IBVI_METRICS_BINS], ab[IBVI_METRICS_BINS];
    double fa[IBVI_METRICS_BINS], fb[IBVI_METRICS_BINS];
    ASSERT_OK(ibvi_metrics_bins(a, ca, aa, fa, IBVI_METRICS_BINS));
    ASSERT_OK(ibvi_metrics_bins(b, cb, ab, fb, IBVI_METRICS_BINS));
    ck_assert(memcmp(ca, cb, sizeof ca) == 0);
    ck_assert(memcmp(aa, ab, sizeof aa) == 0);
    ck_assert(memcmp(fa, fb, sizeof fa) == 0);
}

START_TEST(test_merge_equals_single)
{
    enum { N = 2000, C = 10 };
    static float p[N * C];
    static int32_t y[N];
    rng_seed(12345);
    random_probs(p, y, N, C);

    ibvi_metrics *all, *a, *b, *batched;
    ASSERT_OK(ibvi_metrics_create(&all, C, NULL));
    ASSERT_OK(ibvi_metrics_create(&a, C, NULL));
    ASSERT_OK(ibvi_metrics_create(&b, C, NULL));
    ASSERT_OK(ibvi_metrics_create(&batched, C, NULL));
    ASSERT_OK(ibvi_metrics_add(all, p, N, y));

    /* Random split into a and b, each fed in random batch sizes; b gets the
     * first part so the merge also reorders the data. */
    int64_t split = 731;
    for (int64_t i = 0; i < N;) {
        int64_t len = 1 + (int64_t)(rng_next() % 97);
        if (i < split && i + len > split)
            len = split - i;
        if (i + len > N)
            len = N - i;
        ASSERT_OK(ibvi_metrics_add(i < split ? b : a, p + i * C, len, y + i));
        ASSERT_OK(ibvi_metrics_add(batched, p + i * C, len, y + i));
        i += len;
    }
    ASSERT_OK(ibvi_metrics_merge(a, b));
    assert_same_results(all, a);
    assert_same_results(all, batched);

    /* Merging into an empty accumulator copies; merging an empty one is a
     * no-op. */
    ibvi_metrics *empty;
    ASSERT_OK(ibvi_metrics_create(&empty, C, NULL));
    ASSERT_OK(ibvi_metrics_merge(a, empty));
    assert_same_results(all, a);
    ASSERT_OK(ibvi_metrics_merge(empty, all));
    assert_same_results(all, empty);

    /* Self-merge counts the data twice: same as adding it twice. */
    ASSERT_OK(ibvi_metrics_merge(empty, empty));
    ASSERT_OK(ibvi_metrics_add(all, p, N, y));
    assert_same_results(all, empty);

    ibvi_metrics_free(empty);
    ibvi_metrics_free(all);
    ibvi_metrics_free(a);
    ibvi_metrics_free(b);
    ibvi_metrics_free(batched);
}
END_TEST

START_TEST(test_random_against_reference)
{
    /* The getters against a direct double-precision computation. */
    enum { N = 500, C = 7 };
    static float p[N * C];
    static int32_t y[N];
    rng_seed(99);
    random_probs(p, y, N, C);

    double acc = 0, nll = 0, brier = 0;
    double bn[IBVI_METRICS_BINS] = {0}, bk[IBVI_METRICS_BINS] = {0},
           bc[IBVI_METRICS_BINS] = {0};
    for (int i = 0; i < N; i++) {
        const float *r = p + i * C;
        int top = 0;
        for (int c = 1; c < C; c++)
            if (r[c] > r[top])
                top = c;
        acc += top == y[i];
        nll += -log(fmax(r[y[i]], 1e-12));
        for (int c = 0; c < C; c++) {
            double d = (double)r[c] - (c == y[i] ? 1.0 : 0.0);
            brier += d * d;
        }
        int b = (int)floor((double)r[top] * 15);
        if (b > 14)
            b = 14;
        bn[b] += 1;
        bk[b] += top == y[i];
        bc[b] += r[top];
    }
    double ece = 0, mce = 0;
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        if (bn[b] == 0)
            continue;
        double gap = fabs(bk[b] / bn[b] - bc[b] / bn[b]);
        ece += bn[b] / N * gap;
        mce = fmax(mce, gap);
    }
    ibvi_metrics *m;
    ASSERT_OK(ibvi_metrics_create(&m, C, NULL));
    ASSERT_OK(ibvi_metrics_add(m, p, N, y));
    double v;
    ASSERT_OK(ibvi_metrics_accuracy(m, &v));
    ck_assert_double_eq_tol(v, acc / N, 1e-15);
    ASSERT_OK(ibvi_metrics_nll(m, &v));
    ck_assert_double_eq_tol(v, nll / N, 1e-12);
    ASSERT_OK(ibvi_metrics_brier(m, &v));
    ck_assert_double_eq_tol(v, brier / N, 1e-12);
    ASSERT_OK(ibvi_metrics_ece(m, &v));
    ck_assert_double_eq_tol(v, ece, 1e-12);
    ASSERT_OK(ibvi_metrics_mce(m, &v));
    ck_assert_double_eq_tol(v, mce, 1e-12);
    ibvi_metrics_free(m);
}
END_TEST

/* ---- allocator --------------------------------------------------------- */

static int live_allocs;
static void *count_alloc(void *opaque, size_t size)
{
    (void)opaque;
    live_allocs++;
    return malloc(size);
}
static void count_free(void *opaque, void *ptr)
{
    (void)opaque;
    if (ptr)
        live_allocs--;
    free(ptr);
}
static void *null_alloc(void *opaque, size_t size)
{
    (void)opaque;
    (void)size;
    return NULL;
}

START_TEST(test_allocator)
{
    ibvi_allocator a = {count_alloc, count_free, NULL};
    ibvi_metrics *m = NULL;
    live_allocs = 0;
    ASSERT_OK(ibvi_metrics_create(&m, 4, &a));
    ck_assert_int_eq(live_allocs, 1);
    ibvi_metrics_free(m);
    ck_assert_int_eq(live_allocs, 0);

    ibvi_allocator failing = {null_alloc, count_free, NULL};
    m = (ibvi_metrics *)&a; /* must be overwritten with NULL */
    ASSERT_FAILS(IBVI_ERR_NOMEM, ibvi_metrics_create(&m, 4, &failing));
    ck_assert_ptr_null(m);
}
END_TEST

/* ---- error paths of the accumulator ------------------------------------ */

START_TEST(test_errors_create_free)
{
    ibvi_metrics *m = NULL;
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_create(NULL, 3, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_create(&m, 0, NULL));
    ck_assert_ptr_null(m);
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_create(&m, -2, NULL));
    ck_assert_ptr_null(m);
    ibvi_allocator half = {count_alloc, NULL, NULL};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_create(&m, 3, &half));
    ibvi_allocator half2 = {NULL, count_free, NULL};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_create(&m, 3, &half2));
    ck_assert_ptr_null(m);
    ibvi_metrics_free(NULL); /* accepted */
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_reset(NULL));
}
END_TEST

START_TEST(test_errors_add)
{
    const float p[] = {0.5f, 0.3f, 0.2f, 0.1f, 0.1f, 0.8f};
    const int32_t y[] = {0, 2};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(NULL, p, 2, y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, NULL, 2, y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, 2, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, 0, y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, -1, y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, INT64_MAX, y));

    const int32_t bad_neg[] = {0, -1};
    const int32_t bad_big[] = {3, 0};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, 2, bad_neg));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "labels"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, p, 2, bad_big));

    float q[6];
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        memcpy(q, p, sizeof q);
        q[4] = bad_values[k];
        ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_metrics_add(m3, q, 2, y));
        ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "probs[1][1]"));
    }
    const float out_of_range[] = {1.5f, -0.1f, 1.0001f, -0.0001f};
    for (int k = 0; k < 4; k++) {
        memcpy(q, p, sizeof q);
        q[2] = out_of_range[k];
        ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_add(m3, q, 2, y));
        ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "probs[0][2]"));
    }

    /* Nothing was added by the failed calls. */
    int64_t n = -1;
    ASSERT_OK(ibvi_metrics_count(m3, &n));
    ck_assert_int_eq(n, 0);

    /* A failure in the second row leaves the first row's data out too. */
    ASSERT_OK(ibvi_metrics_add(m3, p, 1, y));
    memcpy(q, p, sizeof q);
    q[5] = NAN;
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_metrics_add(m3, q, 2, y));
    ASSERT_OK(ibvi_metrics_count(m3, &n));
    ck_assert_int_eq(n, 1);
    double acc;
    ASSERT_OK(ibvi_metrics_accuracy(m3, &acc));
    ck_assert_double_eq(acc, 1.0);
}
END_TEST

START_TEST(test_errors_merge)
{
    ibvi_metrics *m2;
    ASSERT_OK(ibvi_metrics_create(&m2, 2, NULL));
    const float p[] = {0.5f, 0.5f};
    const int32_t y[] = {0};
    ASSERT_OK(ibvi_metrics_add(m2, p, 1, y));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_merge(NULL, m3));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_merge(m3, NULL));
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_metrics_merge(m3, m2));
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_metrics_merge(m2, m3));
    int64_t n;
    ASSERT_OK(ibvi_metrics_count(m2, &n));
    ck_assert_int_eq(n, 1);
    ASSERT_OK(ibvi_metrics_count(m3, &n));
    ck_assert_int_eq(n, 0);
    ibvi_metrics_free(m2);
}
END_TEST

START_TEST(test_errors_getters)
{
    double v = 123.0;
    int64_t counts[IBVI_METRICS_BINS];
    double acc[IBVI_METRICS_BINS], conf[IBVI_METRICS_BINS];

    /* Empty accumulator: IBVI_ERR_STATE, output untouched. */
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_accuracy(m3, &v));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_nll(m3, &v));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_brier(m3, &v));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_ece(m3, &v));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_metrics_mce(m3, &v));
    ASSERT_FAILS(IBVI_ERR_STATE,
                 ibvi_metrics_bins(m3, counts, acc, conf, IBVI_METRICS_BINS));
    ck_assert_double_eq(v, 123.0);
    int64_t n = -1;
    ASSERT_OK(ibvi_metrics_count(m3, &n)); /* count works when empty */
    ck_assert_int_eq(n, 0);

    /* NULL handle or output. */
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_count(NULL, &n));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_metrics_count(m3, NULL));
    int (*getters[])(const ibvi_metrics *, double *) = {
        ibvi_metrics_accuracy, ibvi_metrics_nll, ibvi_metrics_brier,
        ibvi_metrics_ece, ibvi_metrics_mce};
    const float p[] = {0.5f, 0.3f, 0.2f};
    const int32_t y[] = {0};
    ASSERT_OK(ibvi_metrics_add(m3, p, 1, y));
    for (size_t g = 0; g < sizeof getters / sizeof getters[0]; g++) {
        ASSERT_FAILS(IBVI_ERR_INVALID_ARG, getters[g](NULL, &v));
        ASSERT_FAILS(IBVI_ERR_INVALID_ARG, getters[g](m3, NULL));
    }
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(NULL, counts, acc, conf, IBVI_METRICS_BINS));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(m3, NULL, acc, conf, IBVI_METRICS_BINS));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(m3, counts, NULL, conf, IBVI_METRICS_BINS));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(m3, counts, acc, NULL, IBVI_METRICS_BINS));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(m3, counts, acc, conf, 10));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "nbins"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_metrics_bins(m3, counts, acc, conf, 0));
    ASSERT_OK(ibvi_metrics_bins(m3, counts, acc, conf, IBVI_METRICS_BINS));
    ck_assert_int_eq(counts[7], 1);
}
END_TEST

/* ---- AUROC ------------------------------------------------------------- */

START_TEST(test_auroc_hand_cases)
{
    double a = -1;
    const float lo[] = {0.1f, 0.2f, 0.3f};
    const float hi[] = {0.5f, 0.9f};
    ASSERT_OK(ibvi_auroc(&a, lo, 3, hi, 2));
    ck_assert_double_eq(a, 1.0);
    ASSERT_OK(ibvi_auroc(&a, hi, 2, lo, 3));
    ck_assert_double_eq(a, 0.0);

    const float same[] = {1.0f, 1.0f, 1.0f};
    ASSERT_OK(ibvi_auroc(&a, same, 3, same, 2));
    ck_assert_double_eq(a, 0.5);

    /* in {0.1, 0.4, 0.35, 0.8}, out {0.35, 0.9, 0.4}:
     * 0.35 beats 0.1 and ties 0.35 -> 1.5; 0.9 beats all -> 4;
     * 0.4 beats 0.1, 0.35 and ties 0.4 -> 2.5; total 8 of 12 -> 2/3. */
    const float in[] = {0.1f, 0.4f, 0.35f, 0.8f};
    const float out[] = {0.35f, 0.9f, 0.4f};
    ASSERT_OK(ibvi_auroc(&a, in, 4, out, 3));
    ck_assert_double_eq_tol(a, 2.0 / 3.0, 1e-15);

    /* One each; -0 and +0 tie; infinities order. */
    const float pz = 0.0f, nz = -0.0f, inf = INFINITY, ninf = -INFINITY;
    ASSERT_OK(ibvi_auroc(&a, &pz, 1, &nz, 1));
    ck_assert_double_eq(a, 0.5);
    ASSERT_OK(ibvi_auroc(&a, &ninf, 1, &inf, 1));
    ck_assert_double_eq(a, 1.0);
    ASSERT_OK(ibvi_auroc(&a, &inf, 1, &pz, 1));
    ck_assert_double_eq(a, 0.0);

    /* The inputs are not modified (sorting works on copies). */
    ck_assert(in[0] == 0.1f && in[1] == 0.4f && in[2] == 0.35f &&
              in[3] == 0.8f);
}
END_TEST

START_TEST(test_auroc_random_vs_pairwise)
{
    enum { NI = 613, NO = 389 };
    static float in[NI], out[NO];
    for (uint64_t seed = 1; seed <= 5; seed++) {
        rng_seed(seed);
        /* Coarse levels on some rounds so that ties are frequent. */
        double levels = seed % 2 ? 8.0 : 1e6;
        for (int i = 0; i < NI; i++)
            in[i] = (float)(floor(rng_uniform() * levels) / levels);
        for (int j = 0; j < NO; j++)
            out[j] = (float)(floor((0.3 + rng_uniform()) * levels) / levels);
        long long twice = 0;
        for (int i = 0; i < NI; i++)
            for (int j = 0; j < NO; j++)
                twice += out[j] > in[i] ? 2 : (out[j] == in[i] ? 1 : 0);
        double want = (double)twice / (2.0 * NI * NO);
        double got;
        ASSERT_OK(ibvi_auroc(&got, in, NI, out, NO));
        ck_assert_double_eq_tol(got, want, 1e-15);
    }
}
END_TEST

START_TEST(test_auroc_errors)
{
    const float s[] = {0.1f, 0.2f};
    const float with_nan[] = {0.1f, NAN};
    double a = 7.0;
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(NULL, s, 2, s, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, NULL, 2, s, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, s, 2, NULL, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, s, 0, s, 2));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "n_in"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, s, -1, s, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, s, 2, s, 0));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "n_out"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_auroc(&a, s, 2, s, -5));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_auroc(&a, s, INT64_MAX, s, INT64_MAX));
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_auroc(&a, with_nan, 2, s, 2));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "in_scores[1]"));
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_auroc(&a, s, 2, with_nan, 2));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "out_scores[1]"));
    ck_assert_double_eq(a, 7.0);
}
END_TEST

/* ---- entropy ----------------------------------------------------------- */

START_TEST(test_entropy_values)
{
    enum { C = 10 };
    float p[3 * C];
    for (int c = 0; c < C; c++) {
        p[c] = 1.0f / C;               /* uniform: log C       */
        p[C + c] = c == 3 ? 1.0f : 0;  /* one-hot: 0 (0 log 0) */
        p[2 * C + c] = c < 2 ? 0.5f : 0; /* two halves: log 2  */
    }
    float h[3] = {-1, -1, -1};
    ASSERT_OK(ibvi_entropy(h, p, 3, C));
    ck_assert_float_eq_tol(h[0], (float)log(10.0), 1e-6f);
    ck_assert_float_eq(h[1], 0.0f);
    ck_assert_float_eq_tol(h[2], (float)log(2.0), 1e-7f);

    for (int32_t classes = 1; classes <= 64; classes *= 2) {
        float u[64];
        for (int c = 0; c < classes; c++)
            u[c] = 1.0f / (float)classes;
        float hu;
        ASSERT_OK(ibvi_entropy(&hu, u, 1, classes));
        ck_assert_float_eq_tol(hu, (float)log((double)classes), 1e-6f);
    }

    /* Hand case: [0.7, 0.2, 0.1] -> 0.7*0.356675 + 0.2*1.609438 +
     * 0.1*2.302585 = 0.801819. */
    const float q[] = {0.7f, 0.2f, 0.1f};
    float hq;
    ASSERT_OK(ibvi_entropy(&hq, q, 1, 3));
    ck_assert_float_eq_tol(hq, 0.801819f, 1e-6f);
}
END_TEST

START_TEST(test_entropy_errors)
{
    const float p[] = {0.5f, 0.5f, 0.25f, 0.75f};
    float h[2] = {9, 9};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(NULL, p, 2, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, NULL, 2, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, p, 0, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, p, -3, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, p, 2, 0));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "classes"));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, p, 2, -1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, p, INT64_MAX, 2));
    const float with_nan[] = {0.5f, 0.5f, NAN, 0.75f};
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_entropy(h, with_nan, 2, 2));
    const float with_inf[] = {0.5f, INFINITY, 0.25f, 0.75f};
    ASSERT_FAILS(IBVI_ERR_NONFINITE, ibvi_entropy(h, with_inf, 2, 2));
    const float negative[] = {0.5f, 0.5f, -0.25f, 0.75f};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, negative, 2, 2));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "probs[1][0]"));
    const float above[] = {1.5f, 0.5f, 0.25f, 0.75f};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_entropy(h, above, 2, 2));
    ck_assert_float_eq(h[0], 9.0f); /* unchanged on failure */
    ck_assert_float_eq(h[1], 9.0f);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");

    TCase *acc = tcase_create("accumulator");
    tcase_add_checked_fixture(acc, setup3, teardown3);
    tcase_add_test(acc, test_basic_three_classes);
    tcase_add_test(acc, test_zero_probability_true_class);
    tcase_add_test(acc, test_argmax_ties_lowest_index);
    tcase_add_test(acc, test_perfect_predictions);
    tcase_add_test(acc, test_rounding_tolerance);
    tcase_add_test(acc, test_ece_mce_hand_example);
    tcase_add_test(acc, test_bin_edges);
    tcase_add_test(acc, test_one_class);
    tcase_add_test(acc, test_merge_equals_single);
    tcase_add_test(acc, test_random_against_reference);
    tcase_add_test(acc, test_allocator);
    tcase_add_test(acc, test_ece_adaptive_hand);
    tcase_add_test(acc, test_aurc_hand);
    tcase_add_test(acc, test_aurc_ties);
    tcase_add_test(acc, test_per_point_random_against_reference);
    tcase_add_test(acc, test_per_point_errors);
    tcase_add_test(acc, test_per_point_store_grows_and_fails_cleanly);
    suite_add_tcase(s, acc);

    TCase *err = tcase_create("accumulator_errors");
    tcase_add_checked_fixture(err, setup3, teardown3);
    tcase_add_test(err, test_errors_create_free);
    tcase_add_test(err, test_errors_add);
    tcase_add_test(err, test_errors_merge);
    tcase_add_test(err, test_errors_getters);
    suite_add_tcase(s, err);

    TCase *auroc = tcase_create("auroc");
    tcase_add_test(auroc, test_auroc_hand_cases);
    tcase_add_test(auroc, test_auroc_random_vs_pairwise);
    tcase_add_test(auroc, test_auroc_errors);
    suite_add_tcase(s, auroc);

    TCase *ent = tcase_create("entropy");
    tcase_add_test(ent, test_entropy_values);
    tcase_add_test(ent, test_entropy_errors);
    suite_add_tcase(s, ent);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

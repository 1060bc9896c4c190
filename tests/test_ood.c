/*
 * libibvi - tests of the out-of-distribution detection metrics
 * (ibvi_auroc, ibvi_auroc_ex, ibvi_aupr_in, ibvi_aupr_out, ibvi_fpr_at_tpr;
 * include/ibvi/metrics.h): hand-computed cases, tied scores across the two
 * sets, and random data against a naive O(n^2) computation.
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

typedef struct ood_all {
    double auroc, aupr_in, aupr_out, fpr95;
} ood_all;

static ood_all all_of(const float *in, int64_t n_in, const float *out,
                      int64_t n_out)
{
    ood_all r;
    ASSERT_OK(ibvi_auroc_ex(&r.auroc, in, n_in, out, n_out, NULL));
    ASSERT_OK(ibvi_aupr_in(&r.aupr_in, in, n_in, out, n_out, NULL));
    ASSERT_OK(ibvi_aupr_out(&r.aupr_out, in, n_in, out, n_out, NULL));
    ASSERT_OK(ibvi_fpr_at_tpr(&r.fpr95, in, n_in, out, n_out, 0.95, NULL));
    double plain;
    ASSERT_OK(ibvi_auroc(&plain, in, n_in, out, n_out));
    ck_assert(plain == r.auroc);
    return r;
}

#define EQ(a, b) ck_assert_double_eq_tol((a), (b), 1e-15)

/* sklearn's example: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]
 * (average_precision_score gives 0.8333...). OOD = positives {0.35, 0.8},
 * in = {0.1, 0.4}. */
START_TEST(test_hand_distinct)
{
    const float in[] = {0.1f, 0.4f}, out[] = {0.35f, 0.8f};
    ood_all r = all_of(in, 2, out, 2);
    /* AUROC: pairs (out > in): 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4: 3/4. */
    EQ(r.auroc, 0.75);
    /* AUPR-out, thresholds from the top: 0.8: TP 1 FP 0, P 1, R 1/2 ->
     * 1/2 * 1; 0.4: FP 1, R unchanged; 0.35: TP 2 FP 1, P 2/3, R 1 ->
     * 1/2 * 2/3. AP = 1/2 + 1/3 = 5/6. */
    EQ(r.aupr_out, 5.0 / 6.0);
    /* AUPR-in, scores negated, thresholds -0.1, -0.35, -0.4, -0.8:
     * -0.1: TP 1 -> 1/2 * 1; -0.35: FP 1; -0.4: TP 2 FP 1 -> 1/2 * 2/3.
     * AP = 5/6. */
    EQ(r.aupr_in, 5.0 / 6.0);
    /* FPR95: TPR 1/2 at 0.8, 1 at 0.35 (first >= 0.95) where FP = 1 of 2. */
    EQ(r.fpr95, 0.5);
    double v;
    /* TPR 1/2 is reached at 0.8 already, with no in-distribution point. */
    ASSERT_OK(ibvi_fpr_at_tpr(&v, in, 2, out, 2, 0.5, NULL));
    EQ(v, 0.0);
    ASSERT_OK(ibvi_fpr_at_tpr(&v, in, 2, out, 2, 0.51, NULL));
    EQ(v, 0.5);
}
END_TEST

/* Ties across the sets: in = {0.5, 0.5, 0.2}, out = {0.5, 0.9}. */
START_TEST(test_hand_ties)
{
    const float in[] = {0.5f, 0.5f, 0.2f}, out[] = {0.5f, 0.9f};
    ood_all r = all_of(in, 3, out, 2);
    /* AUROC: out 0.5 vs in: 1/2 + 1/2 + 1; out 0.9: 3. 5/6. */
    EQ(r.auroc, 5.0 / 6.0);
    /* AUPR-out: 0.9: TP 1 FP 0 -> 1/2 * 1; 0.5 (one group: 1 out, 2 in):
     * TP 2 FP 2 -> 1/2 * 2/4. AP = 3/4 (splitting the tie with the OOD
     * point first would give 1). */
    EQ(r.aupr_out, 0.75);
    /* AUPR-in (-s): -0.2: TP 1 -> 1/3 * 1; -0.5 (2 in, 1 out): TP 3 FP 1
     * -> 2/3 * 3/4 = 1/2. AP = 1/3 + 1/2 = 5/6. */
    EQ(r.aupr_in, 5.0 / 6.0);
    /* FPR95: 0.9: TPR 1/2; 0.5: TPR 1 with FP 2 of 3. */
    EQ(r.fpr95, 2.0 / 3.0);
}
END_TEST

START_TEST(test_hand_all_tied_and_signed_zero)
{
    const float in[] = {1, 1}, out[] = {1, 1, 1};
    ood_all r = all_of(in, 2, out, 3);
    /* One threshold holding everything: P = 3/5 for OOD, 2/5 for in. */
    EQ(r.auroc, 0.5);
    EQ(r.aupr_out, 0.6);
    EQ(r.aupr_in, 0.4);
    EQ(r.fpr95, 1.0);
    /* -0 and +0 are one score. */
    const float neg0[] = {-0.0f}, pos0[] = {0.0f};
    r = all_of(neg0, 1, pos0, 1);
    EQ(r.auroc, 0.5);
    EQ(r.aupr_out, 0.5);
    EQ(r.aupr_in, 0.5);
    EQ(r.fpr95, 1.0);
}
END_TEST

START_TEST(test_hand_perfect_and_reversed)
{
    const float in[] = {-INFINITY, 1.0f, 2.0f}, out[] = {3.0f, INFINITY};
    ood_all r = all_of(in, 3, out, 2);
    EQ(r.auroc, 1.0);
    EQ(r.aupr_out, 1.0);
    EQ(r.aupr_in, 1.0);
    EQ(r.fpr95, 0.0);
    /* Reversed: in = {3, inf}, out = {-inf, 1, 2}. AUPR-out from the top:
     * inf, 3: FP 1, 2; 2: TP 1 -> 1/3 * 1/3; 1: TP 2 -> 1/3 * 2/4;
     * -inf: TP 3 -> 1/3 * 3/5. AP = 1/9 + 1/6 + 1/5. */
    r = all_of(out, 2, in, 3);
    EQ(r.auroc, 0.0);
    EQ(r.aupr_out, 1.0 / 9.0 + 1.0 / 6.0 + 1.0 / 5.0);
    EQ(r.fpr95, 1.0);
}
END_TEST

/* ---- random data against naive definitions ------------------------------- */

static uint64_t state;
static uint64_t next(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

/* The distinct values of in and out, descending, and for each threshold t
 * the counts #{out >= t}, #{in >= t}, by brute force. */
static void naive(const float *in, int n_in, const float *out, int n_out,
                  double *aupr_out, double *aupr_in, double *fpr95,
                  double *auroc)
{
    float *all = malloc(sizeof(float) * (size_t)(n_in + n_out));
    int n = 0;
    for (int i = 0; i < n_in + n_out; i++) {
        float v = i < n_in ? in[i] : out[i - n_in];
        int seen = 0;
        for (int k = 0; k < n; k++)
            seen |= all[k] == v;
        if (!seen)
            all[n++] = v;
    }
    /* selection sort, descending */
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            if (all[k] > all[i]) {
                float t = all[i]; all[i] = all[k]; all[k] = t;
            }
    double ap = 0, r_prev = 0;
    *fpr95 = -1;
    for (int k = 0; k < n; k++) {
        int tp = 0, fp = 0;
        for (int i = 0; i < n_out; i++) tp += out[i] >= all[k];
        for (int i = 0; i < n_in; i++) fp += in[i] >= all[k];
        const double r = (double)tp / n_out;
        if (tp > 0)
            ap += (r - r_prev) * tp / (tp + fp);
        r_prev = r;
        if (*fpr95 < 0 && r >= 0.95)
            *fpr95 = (double)fp / n_in;
    }
    *aupr_out = ap;
    /* AUPR-in: thresholds ascending, in positive when s <= t */
    ap = 0, r_prev = 0;
    for (int k = n - 1; k >= 0; k--) {
        int tp = 0, fp = 0;
        for (int i = 0; i < n_in; i++) tp += in[i] <= all[k];
        for (int i = 0; i < n_out; i++) fp += out[i] <= all[k];
        const double r = (double)tp / n_in;
        if (tp > 0)
            ap += (r - r_prev) * tp / (tp + fp);
        r_prev = r;
    }
    *aupr_in = ap;
    double pairs = 0;
    for (int i = 0; i < n_in; i++)
        for (int j = 0; j < n_out; j++)
            pairs += out[j] > in[i] ? 1 : out[j] == in[i] ? 0.5 : 0;
    *auroc = pairs / n_in / n_out;
    free(all);
}

START_TEST(test_random_against_naive)
{
    enum { MAXN = 300 };
    static float in[MAXN], out[MAXN];
    state = 0x9e3779b97f4a7c15ULL;
    for (int trial = 0; trial < 60; trial++) {
        const int n_in = 1 + (int)(next() % MAXN), n_out = 1 + (int)(next() % MAXN);
        /* Coarse grids give many ties; the shift makes OOD score higher. */
        const int grid = trial % 3 == 0 ? 5 : trial % 3 == 1 ? 50 : 1 << 20;
        for (int i = 0; i < n_in; i++)
            in[i] = (float)(next() % (uint64_t)grid) / (float)grid;
        for (int j = 0; j < n_out; j++)
            out[j] = 0.2f + (float)(next() % (uint64_t)grid) / (float)grid;
        double ao, ai, f, a;
        naive(in, n_in, out, n_out, &ao, &ai, &f, &a);
        ood_all r = all_of(in, n_in, out, n_out);
        ck_assert_double_eq_tol(r.aupr_out, ao, 1e-12);
        ck_assert_double_eq_tol(r.aupr_in, ai, 1e-12);
        ck_assert_double_eq_tol(r.fpr95, f, 1e-15);
        ck_assert_double_eq_tol(r.auroc, a, 1e-15);
    }
}
END_TEST

/* ---- the caller's allocator ---------------------------------------------- */

static int64_t live, calls;
static int refuse;
static void *a_alloc(void *opaque, size_t size)
{
    (void)opaque;
    if (refuse)
        return NULL;
    calls++;
    live++;
    return malloc(size);
}
static void a_free(void *opaque, void *p)
{
    (void)opaque;
    live--;
    free(p);
}

START_TEST(test_allocator_used_and_refused)
{
    const ibvi_allocator a = {a_alloc, a_free, NULL};
    const float in[] = {0.1f, 0.4f}, out[] = {0.35f, 0.8f};
    double v = 3.0, w;
    refuse = 0;
    calls = live = 0;
    ASSERT_OK(ibvi_auroc_ex(&v, in, 2, out, 2, &a));
    ASSERT_OK(ibvi_aupr_in(&w, in, 2, out, 2, &a));
    ASSERT_OK(ibvi_aupr_out(&w, in, 2, out, 2, &a));
    ASSERT_OK(ibvi_fpr_at_tpr(&w, in, 2, out, 2, 0.95, &a));
    ck_assert_int_eq(calls, 4);
    ck_assert_int_eq(live, 0);
    refuse = 1;
    w = 3.0;
    ck_assert_int_eq(ibvi_auroc_ex(&w, in, 2, out, 2, &a), IBVI_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_auroc_ex"));
    ck_assert_int_eq(ibvi_aupr_in(&w, in, 2, out, 2, &a), IBVI_ERR_NOMEM);
    ck_assert_int_eq(ibvi_aupr_out(&w, in, 2, out, 2, &a), IBVI_ERR_NOMEM);
    ck_assert_int_eq(ibvi_fpr_at_tpr(&w, in, 2, out, 2, 0.95, &a),
                     IBVI_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_fpr_at_tpr"));
    ck_assert(w == 3.0);
    ck_assert_int_eq(live, 0);
    refuse = 0;
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ood");
    TCase *tc = tcase_create("ood");
    tcase_add_test(tc, test_hand_distinct);
    tcase_add_test(tc, test_hand_ties);
    tcase_add_test(tc, test_hand_all_tied_and_signed_zero);
    tcase_add_test(tc, test_hand_perfect_and_reversed);
    tcase_add_test(tc, test_random_against_naive);
    tcase_add_test(tc, test_allocator_used_and_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

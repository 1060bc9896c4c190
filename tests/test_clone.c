/*
 * libibvi tests - ibvi_net_create_like: a network built like another has
 * the same layers and shapes, every layer deterministic and uninitialised;
 * given the source's means it computes bitwise the source's mean network,
 * for an MLP and for a residual conv network (every kind of layer).
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"
#include "testutil.h"

/* conv(rank 2) - groupnorm - relu - residual(identity) - maxpool -
 * conv - residual(projection from the pool, stride 1) - avgpool -
 * global avgpool - flatten - dense(rank 3). */
static ibvi_net *deep_net(void)
{
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create_image(&n, 2, 8, 8, NULL));
    CK_OK(ibvi_net_add_conv2d(n, 4, 3, 1, 1, 2));
    CK_OK(ibvi_net_add_groupnorm(n, 2, 1e-5f));
    CK_OK(ibvi_net_add_activation(n, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_residual(n, 0, 0));
    CK_OK(ibvi_net_add_maxpool(n, 2, 2));
    CK_OK(ibvi_net_add_conv2d(n, 6, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_residual(n, 4, 1));
    CK_OK(ibvi_net_add_avgpool(n, 2, 2));
    CK_OK(ibvi_net_add_activation(n, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_global_avgpool(n));
    CK_OK(ibvi_net_add_flatten(n));
    CK_OK(ibvi_net_add_dense(n, 5, 3));
    return n;
}

static ibvi_net *mlp(void)
{
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create(&n, 7, NULL));
    CK_OK(ibvi_net_add_dense(n, 9, 2));
    CK_OK(ibvi_net_add_activation(n, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(n, 4, 0));
    return n;
}

static void check_like(ibvi_net *src)
{
    CK_OK(ibvi_net_init(src, IBVI_PARAM_MUP, 5));
    CK_OK(ibvi_net_set_threads(src, 1));
    ibvi_net *like = NULL;
    CK_OK(ibvi_net_create_like(&like, src));
    ck_assert_int_eq(ibvi_net_is_initialized(like), 0);
    ck_assert_int_eq(ibvi_net_layer_count(like), ibvi_net_layer_count(src));
    for (int32_t i = 0; i < ibvi_net_layer_count(src); i++) {
        ibvi_layer *a = tu_layer(src, i), *b = tu_layer(like, i);
        ck_assert_int_eq(ibvi_layer_get_kind(a), ibvi_layer_get_kind(b));
        ck_assert_int_eq(ibvi_layer_param_count(a), ibvi_layer_param_count(b));
        int32_t s[3], t[3];
        CK_OK(ibvi_layer_output_shape(a, &s[0], &s[1], &s[2]));
        CK_OK(ibvi_layer_output_shape(b, &t[0], &t[1], &t[2]));
        ck_assert_mem_eq(s, t, sizeof s);
        ck_assert_int_eq(ibvi_layer_covariance(b), IBVI_COVARIANCE_NONE);
    }
    /* Not initialised: a covariance can still be chosen. */
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    CK_OK(ibvi_net_set_covariance(like, 0, &o));
    CK_OK(ibvi_net_init(like, IBVI_PARAM_MUP, 99));
    for (int32_t i = 0; i < ibvi_net_layer_count(src); i++) {
        if (ibvi_layer_param_count(tu_layer(src, i)) == 0)
            continue;
        int64_t P;
        float *mu = tu_get_mean(tu_layer(src, i), &P);
        CK_OK(ibvi_layer_set_mean(tu_layer(like, i), mu, P));
        free(mu);
    }
    const int64_t n = 6, d = ibvi_net_input_dim(src),
                  out = ibvi_net_output_dim(src);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    float *ya = malloc((size_t)(n * out) * sizeof *ya);
    float *yb = malloc((size_t)(n * out) * sizeof *yb);
    ck_assert(x && ya && yb);
    tu_rng r;
    tu_rng_seed(&r, 3);
    tu_fill_normal_f(&r, x, n * d, 1.0);
    CK_OK(ibvi_net_forward_mean(src, x, n, ya));
    CK_OK(ibvi_net_forward_mean(like, x, n, yb));
    ck_assert_mem_eq(ya, yb, (size_t)(n * out) * sizeof *ya);
    /* The residual wiring came along: the same gradients (a skip whose
     * source did not count its reader would lose its gradient). */
    CK_OK(ibvi_net_backward(src, ya, n, (int32_t)out));
    CK_OK(ibvi_net_backward(like, ya, n, (int32_t)out));
    for (int32_t i = 0; i < ibvi_net_layer_count(src); i++) {
        const int64_t P = ibvi_layer_param_count(tu_layer(src, i));
        if (P == 0)
            continue;
        float *ga = malloc((size_t)P * sizeof *ga);
        float *gb = malloc((size_t)P * sizeof *gb);
        ck_assert(ga && gb);
        CK_OK(ibvi_layer_get_grad_mean(tu_layer(src, i), ga, P));
        CK_OK(ibvi_layer_get_grad_mean(tu_layer(like, i), gb, P));
        ck_assert_mem_eq(ga, gb, (size_t)P * sizeof *ga);
        free(ga);
        free(gb);
    }
    free(x);
    free(ya);
    free(yb);
    ibvi_net_free(like);
    ibvi_net_free(src);
}

START_TEST(test_like_mlp) { check_like(mlp()); }
END_TEST

START_TEST(test_like_deep) { check_like(deep_net()); }
END_TEST

START_TEST(test_like_uninitialised_source)
{
    ibvi_net *src = deep_net(), *like = NULL;
    CK_OK(ibvi_net_create_like(&like, src));
    CK_OK(ibvi_net_init(like, IBVI_PARAM_SP, 1));
    ibvi_net_free(like);
    ibvi_net_free(src);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clone");
    TCase *tc = tcase_create("create_like");
    tcase_add_test(tc, test_like_mlp);
    tcase_add_test(tc, test_like_deep);
    tcase_add_test(tc, test_like_uninitialised_source);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * libibvi tests - every error path of the public API, status strings,
 * versions, the per-thread error message and the allocator.
 *
 * Each failing call is checked for its status and for a non-empty
 * ibvi_last_error() (cleared before the call). Where the headers allow two
 * codes for one condition (a buffer length that does not match: "value out of
 * range" or "sizes do not agree"), either is accepted, and the set is written
 * at the call.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ibvi/io.h"
#include "testutil.h"

/* The call fails with `status` and leaves a message. */
#define EXPECT_ERR(expr, status)                                              \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        CK_STATUS(expr, status);                                              \
        ck_assert_msg(ibvi_last_error() != NULL && ibvi_last_error()[0] != 0, \
                      "%s failed without a message", #expr);                  \
    } while (0)

/* The call fails with one of two statuses and leaves a message. */
#define EXPECT_ERR2(expr, s1, s2)                                             \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        int e2_rc_ = (int)(expr);                                             \
        ck_assert_msg(e2_rc_ == (int)(s1) || e2_rc_ == (int)(s2),             \
                      "%s returned %d (%s), expected %d or %d", #expr,        \
                      e2_rc_, ibvi_status_string(e2_rc_), (int)(s1),          \
                      (int)(s2));                                             \
        ck_assert_msg(ibvi_last_error()[0] != 0,                              \
                      "%s failed without a message", #expr);                  \
    } while (0)

#define EXPECT_SHAPE_OR_ARG(expr)                                             \
    EXPECT_ERR2(expr, IBVI_ERR_SHAPE, IBVI_ERR_INVALID_ARG)
#define EXPECT_STATE_OR_ARG(expr)                                             \
    EXPECT_ERR2(expr, IBVI_ERR_STATE, IBVI_ERR_INVALID_ARG)

/* 3 -> dense(4, R 2) -> relu -> dense(2, R 1), initialised. Layers 0, 1, 2. */
static ibvi_net *small_net(void)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    return net;
}

static const float k_x[2 * 3] = {0.5f, -1.0f, 2.0f, 1.0f, 0.25f, -0.5f};
static const int32_t k_labels[2] = {1, 0};
static const float k_targets[2 * 2] = {0.5f, -0.5f, 1.0f, 0.0f};

/* ---- status strings and versions -------------------------------------------- */

START_TEST(test_status_strings)
{
    const char *s[11];
    for (int c = 0; c <= 10; c++) {
        s[c] = ibvi_status_string(-c);
        ck_assert_ptr_nonnull(s[c]);
        ck_assert_msg(s[c][0] != 0, "empty text for %d", -c);
    }
    for (int a = 0; a <= 10; a++)
        for (int b = a + 1; b <= 10; b++)
            ck_assert_msg(strcmp(s[a], s[b]) != 0, "codes %d and %d share \"%s\"",
                          -a, -b, s[a]);
    static const int32_t unknown[] = {1, 5, -11, -100, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *u = ibvi_status_string(unknown[i]);
        ck_assert_ptr_nonnull(u);
        ck_assert(u[0] != 0);
    }
    /* the numbers are ABI */
    ck_assert_int_eq(IBVI_OK, 0);
    ck_assert_int_eq(IBVI_ERR_INVALID_ARG, -1);
    ck_assert_int_eq(IBVI_ERR_SHAPE, -2);
    ck_assert_int_eq(IBVI_ERR_NOMEM, -3);
    ck_assert_int_eq(IBVI_ERR_STATE, -4);
    ck_assert_int_eq(IBVI_ERR_NONFINITE, -5);
    ck_assert_int_eq(IBVI_ERR_UNSUPPORTED, -10);
}
END_TEST

START_TEST(test_versions)
{
    ck_assert_int_eq(ibvi_version_number(), IBVI_VERSION_NUMBER);
    ck_assert_int_eq(IBVI_VERSION_NUMBER, IBVI_VERSION_MAJOR * 10000 +
                                              IBVI_VERSION_MINOR * 100 +
                                              IBVI_VERSION_PATCH);
    ck_assert_ptr_nonnull(ibvi_version_string());
    ck_assert_str_eq(ibvi_version_string(), IBVI_VERSION_STRING);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", IBVI_VERSION_MAJOR, IBVI_VERSION_MINOR,
             IBVI_VERSION_PATCH);
    ck_assert_str_eq(buf, IBVI_VERSION_STRING);
}
END_TEST

/* ---- the error message ----------------------------------------------------- */

static void *thread_fail(void *arg)
{
    char *copy = arg;
    const char *before = ibvi_last_error();
    int empty = before != NULL && before[0] == 0;
    ibvi_net *net = NULL;
    int rc = ibvi_net_create(&net, -7, NULL);
    snprintf(copy, 256, "%d|%d|%s", empty, rc, ibvi_last_error());
    return NULL;
}

START_TEST(test_last_error)
{
    /* "" before any failure: checked in a fresh thread below, and here
     * after clearing (a no-fork run may have failed calls before) */
    ck_assert_ptr_nonnull(ibvi_last_error());
    ibvi_clear_error();
    ck_assert_str_eq(ibvi_last_error(), "");
    ibvi_net *net = NULL;
    CK_STATUS(ibvi_net_create(&net, 0, NULL), IBVI_ERR_INVALID_ARG);
    ck_assert(ibvi_last_error()[0] != 0);
    char saved[256];
    snprintf(saved, sizeof saved, "%s", ibvi_last_error());
    /* successful calls do not clear it */
    net = small_net();
    ck_assert_int_eq(ibvi_net_input_dim(net), 3);
    ck_assert_str_eq(ibvi_last_error(), saved);
    ibvi_clear_error();
    ck_assert_str_eq(ibvi_last_error(), "");

    /* per thread: a failure in another thread is not seen here */
    CK_STATUS(ibvi_net_add_dense(NULL, 3, 0), IBVI_ERR_INVALID_ARG);
    snprintf(saved, sizeof saved, "%s", ibvi_last_error());
    char other[256] = {0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_fail, other), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_str_eq(ibvi_last_error(), saved);
    ck_assert_msg(strncmp(other, "1|-1|", 5) == 0 && strlen(other) > 5,
                  "other thread saw \"%s\"", other);
    ck_assert_str_ne(other + 5, saved);
    ibvi_net_free(net);
}
END_TEST

/* ---- creation, free ------------------------------------------------------------ */

static void *bad_alloc(void *o, size_t n)
{
    (void)o;
    return malloc(n);
}
static void bad_free(void *o, void *p)
{
    (void)o;
    free(p);
}

START_TEST(test_create_errors)
{
    ibvi_net *net = (ibvi_net *)&net; /* non-NULL sentinel */
    EXPECT_ERR(ibvi_net_create(NULL, 3, NULL), IBVI_ERR_INVALID_ARG);
    EXPECT_ERR(ibvi_net_create(&net, 0, NULL), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    net = (ibvi_net *)&net;
    EXPECT_ERR(ibvi_net_create(&net, -4, NULL), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    ibvi_allocator a = {NULL, bad_free, NULL};
    net = (ibvi_net *)&net;
    EXPECT_ERR(ibvi_net_create(&net, 3, &a), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    ibvi_allocator b = {bad_alloc, NULL, NULL};
    EXPECT_ERR(ibvi_net_create(&net, 3, &b), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    /* a complete allocator works */
    ibvi_allocator c = {bad_alloc, bad_free, NULL};
    CK_OK(ibvi_net_create(&net, 3, &c));
    ck_assert_ptr_nonnull(net);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_free_accepts_null)
{
    ibvi_net_free(NULL);
    ibvi_optimizer_free(NULL);
}
END_TEST

/* ---- NULL handles ---------------------------------------------------------------- */

START_TEST(test_null_handles)
{
    float buf[64] = {0};
    float out[64];
    uint64_t u;
    float a, b;
    int32_t i1;
    ibvi_layer *layer = NULL;
    ibvi_optimizer *opt = NULL;
    const int A = IBVI_ERR_INVALID_ARG;

    EXPECT_ERR(ibvi_net_add_dense(NULL, 3, 0), A);
    EXPECT_ERR(ibvi_net_add_activation(NULL, IBVI_ACT_RELU), A);
    EXPECT_ERR(ibvi_net_init(NULL, IBVI_PARAM_SP, 1), A);
    EXPECT_ERR(ibvi_net_set_threads(NULL, 1), A);
    EXPECT_ERR(ibvi_net_threads(NULL), A);
    EXPECT_ERR(ibvi_net_reserve(NULL, 10, 1), A);
    EXPECT_ERR(ibvi_net_input_dim(NULL), A);
    EXPECT_ERR(ibvi_net_output_dim(NULL), A);
    EXPECT_ERR(ibvi_net_layer_count(NULL), A);
    EXPECT_ERR(ibvi_net_is_initialized(NULL), A);
    EXPECT_ERR(ibvi_net_parameterization(NULL), A);
    EXPECT_ERR(ibvi_net_noise_size(NULL), A);
    EXPECT_ERR(ibvi_net_param_count(NULL), A);
    EXPECT_ERR(ibvi_net_seed(NULL, &u), A);
    EXPECT_ERR(ibvi_net_rng_position(NULL, &u), A);
    EXPECT_ERR(ibvi_net_set_rng_position(NULL, 0), A);
    EXPECT_ERR(ibvi_net_layer(NULL, 0, &layer), A);
    EXPECT_ERR(ibvi_net_forward(NULL, k_x, 2, 1, out), A);
    EXPECT_ERR(ibvi_net_forward_mean(NULL, k_x, 2, out), A);
    EXPECT_ERR(ibvi_net_forward_noise(NULL, k_x, 2, 1, buf, 3, out), A);
    EXPECT_ERR(ibvi_net_last_noise(NULL, buf, 3), A);
    EXPECT_ERR(ibvi_net_backward(NULL, buf, 2, 2), A);

    EXPECT_ERR(ibvi_layer_get_kind(NULL), A);
    EXPECT_ERR(ibvi_layer_get_role(NULL), A);
    EXPECT_ERR(ibvi_layer_get_activation(NULL), A);
    EXPECT_ERR(ibvi_layer_shape(NULL, &i1, &i1, &i1), A);
    EXPECT_ERR(ibvi_layer_param_count(NULL), A);
    EXPECT_ERR(ibvi_layer_init_std(NULL, &a, &b), A);
    EXPECT_ERR(ibvi_layer_get_mean(NULL, buf, 16), A);
    EXPECT_ERR(ibvi_layer_set_mean(NULL, buf, 16), A);
    EXPECT_ERR(ibvi_layer_get_factor(NULL, buf, 32), A);
    EXPECT_ERR(ibvi_layer_set_factor(NULL, buf, 32), A);
    EXPECT_ERR(ibvi_layer_get_grad_mean(NULL, buf, 16), A);
    EXPECT_ERR(ibvi_layer_get_grad_factor(NULL, buf, 32), A);
    EXPECT_ERR(ibvi_layer_lr_multipliers(NULL, IBVI_OPT_SGD, &a, &b), A);

    EXPECT_ERR(ibvi_optimizer_create(&opt, NULL, IBVI_OPT_SGD, 0.1f), A);
    ck_assert_ptr_null(opt);
    EXPECT_ERR(ibvi_optimizer_set_lr(NULL, 0.1f), A);
    EXPECT_ERR(ibvi_optimizer_get_lr(NULL, &a), A);
    EXPECT_ERR(ibvi_optimizer_set_momentum(NULL, 0.9f, 0), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(NULL, 0.9f, 0.999f, 1e-8f), A);
    EXPECT_ERR(ibvi_optimizer_step(NULL), A);
    EXPECT_ERR(ibvi_optimizer_step_count(NULL), A);
    EXPECT_ERR(ibvi_optimizer_reset(NULL), A);

    ibvi_net *net = small_net();
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    EXPECT_ERR(ibvi_train_step(NULL, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                               k_labels, NULL, &a),
               A);
    EXPECT_ERR(ibvi_train_step(net, NULL, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                               k_labels, NULL, &a),
               A);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- NULL buffers ------------------------------------------------------------------ */

START_TEST(test_null_pointers)
{
    const int A = IBVI_ERR_INVALID_ARG;
    ibvi_net *net = small_net();
    ibvi_layer *l0 = tu_layer(net, 0);
    float out[64], buf[64] = {0}, loss;
    int32_t ns = ibvi_net_noise_size(net);
    ck_assert_int_eq(ns, 3);

    EXPECT_ERR(ibvi_net_seed(net, NULL), A);
    EXPECT_ERR(ibvi_net_rng_position(net, NULL), A);
    EXPECT_ERR(ibvi_net_layer(net, 0, NULL), A);
    EXPECT_ERR(ibvi_net_forward(net, NULL, 2, 1, out), A);
    EXPECT_ERR(ibvi_net_forward(net, k_x, 2, 1, NULL), A);
    EXPECT_ERR(ibvi_net_forward_mean(net, NULL, 2, out), A);
    EXPECT_ERR(ibvi_net_forward_mean(net, k_x, 2, NULL), A);
    EXPECT_ERR(ibvi_net_forward_noise(net, NULL, 2, 1, buf, ns, out), A);
    EXPECT_ERR(ibvi_net_forward_noise(net, k_x, 2, 1, NULL, ns, out), A);
    EXPECT_ERR(ibvi_net_forward_noise(net, k_x, 2, 1, buf, ns, NULL), A);
    CK_OK(ibvi_net_forward(net, k_x, 2, 1, out));
    EXPECT_ERR(ibvi_net_last_noise(net, NULL, ns), A);
    EXPECT_ERR(ibvi_net_backward(net, NULL, 2, 2), A);

    EXPECT_ERR(ibvi_layer_init_std(NULL, NULL, NULL), A);
    EXPECT_ERR(ibvi_layer_get_mean(l0, NULL, 16), A);
    EXPECT_ERR(ibvi_layer_set_mean(l0, NULL, 16), A);
    EXPECT_ERR(ibvi_layer_get_factor(l0, NULL, 32), A);
    EXPECT_ERR(ibvi_layer_set_factor(l0, NULL, 32), A);
    EXPECT_ERR(ibvi_layer_get_grad_mean(l0, NULL, 16), A);
    EXPECT_ERR(ibvi_layer_get_grad_factor(l0, NULL, 32), A);
    /* shape outputs may be NULL */
    CK_OK(ibvi_layer_shape(l0, NULL, NULL, NULL));
    int32_t in = 0;
    CK_OK(ibvi_layer_shape(l0, &in, NULL, NULL));
    ck_assert_int_eq(in, 3);

    /* losses */
    EXPECT_ERR(ibvi_loss_softmax_xent(NULL, 2, 2, k_labels, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss_softmax_xent(k_targets, 2, 2, NULL, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss_squared(NULL, 2, 2, k_targets, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss_squared(k_targets, 2, 2, NULL, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss_binary_xent(NULL, 2, 2, k_targets, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss_binary_xent(k_targets, 2, 2, NULL, 2, &loss, NULL), A);
    EXPECT_ERR(ibvi_loss(IBVI_LOSS_SOFTMAX_XENT, k_targets, 2, 2, NULL,
                         k_targets, 2, &loss, NULL),
               A);
    EXPECT_ERR(ibvi_loss(IBVI_LOSS_SQUARED, k_targets, 2, 2, k_labels, NULL, 2,
                         &loss, NULL),
               A);
    EXPECT_ERR(ibvi_loss(IBVI_LOSS_BINARY_XENT, k_targets, 2, 2, k_labels,
                         NULL, 2, &loss, NULL),
               A);
    EXPECT_ERR(ibvi_loss(IBVI_LOSS_SQUARED, NULL, 2, 2, NULL, k_targets, 2,
                         &loss, NULL),
               A);
    /* the unused one may be NULL */
    CK_OK(ibvi_loss(IBVI_LOSS_SOFTMAX_XENT, k_targets, 2, 2, k_labels, NULL, 2,
                    &loss, NULL));
    CK_OK(ibvi_loss(IBVI_LOSS_SQUARED, k_targets, 2, 2, NULL, k_targets, 2,
                    &loss, NULL));

    /* optimizer */
    ibvi_optimizer *opt = NULL;
    EXPECT_ERR(ibvi_optimizer_create(NULL, net, IBVI_OPT_SGD, 0.1f), A);
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    EXPECT_ERR(ibvi_optimizer_get_lr(opt, NULL), A);
    EXPECT_ERR(ibvi_train_step(net, opt, NULL, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                               k_labels, NULL, &loss),
               A);
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                               NULL, k_targets, &loss),
               A);
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SQUARED, k_labels,
                               NULL, &loss),
               A);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    /* loss may be NULL in train_step */
    CK_OK(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                          k_targets, NULL));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 1);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- sizes ---------------------------------------------------------------------------- */

START_TEST(test_sizes)
{
    const int A = IBVI_ERR_INVALID_ARG;
    ibvi_net *net = tu_net_new(3, NULL);
    EXPECT_ERR(ibvi_net_add_dense(net, 0, 0), A);
    EXPECT_ERR(ibvi_net_add_dense(net, -2, 0), A);
    EXPECT_ERR(ibvi_net_add_dense(net, 2, -1), A);
    /* P = 2 * 3 + 2 = 8: rank 9 is too large, rank 8 is fine */
    EXPECT_ERR(ibvi_net_add_dense(net, 2, 9), A);
    ck_assert_int_eq(ibvi_net_layer_count(net), 0);
    CK_OK(ibvi_net_add_dense(net, 2, 8));
    ck_assert_int_eq(ibvi_net_layer_count(net), 1);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 2));
    ck_assert_int_eq(ibvi_net_noise_size(net), 8);
    ck_assert_int_eq(ibvi_net_param_count(net), 8 * 9);

    float out[64];
    EXPECT_ERR(ibvi_net_forward(net, k_x, 0, 1, out), A);
    EXPECT_ERR(ibvi_net_forward(net, k_x, -1, 1, out), A);
    EXPECT_ERR(ibvi_net_forward(net, k_x, 2, 0, out), A);
    EXPECT_ERR(ibvi_net_forward(net, k_x, 2, -3, out), A);
    EXPECT_ERR(ibvi_net_forward_mean(net, k_x, 0, out), A);
    float z[16] = {0};
    EXPECT_ERR(ibvi_net_forward_noise(net, k_x, 0, 1, z, 8, out), A);
    EXPECT_ERR(ibvi_net_forward_noise(net, k_x, 2, 0, z, 0, out), A);
    EXPECT_ERR(ibvi_net_reserve(net, 0, 1), A);
    EXPECT_ERR(ibvi_net_reserve(net, 10, 0), A);
    EXPECT_ERR(ibvi_net_set_threads(net, 0), A);
    EXPECT_ERR(ibvi_net_set_threads(net, -1), A);
    ck_assert_int_eq(ibvi_net_threads(net), 1);
    CK_OK(ibvi_net_set_threads(net, 2));
    /* the count in effect: capped by the CPUs the process may use */
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_le(ibvi_net_threads(net), 2);
    ck_assert_int_ge(ibvi_net_threads(net), 1);
    ck_assert_int_le(ibvi_net_threads(net), cpus);
    CK_OK(ibvi_net_reserve(net, 10, 2));

    ibvi_layer *l = NULL;
    EXPECT_ERR(ibvi_net_layer(net, -1, &l), A);
    EXPECT_ERR(ibvi_net_layer(net, 1, &l), A);

    float loss, g[16];
    const float f[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 0, 2, k_labels, 2, &loss, g), A);
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 2, 0, k_labels, 2, &loss, g), A);
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 2, 2, k_labels, 0, &loss, g), A);
    EXPECT_ERR(ibvi_loss_squared(f, 2, 2, k_targets, -1, &loss, g), A);
    EXPECT_ERR(ibvi_loss_squared(f, -2, 2, k_targets, 2, &loss, g), A);
    EXPECT_ERR(ibvi_loss_binary_xent(f, 2, 0, k_targets, 2, &loss, g), A);
    /* rows must be a multiple of n */
    const float f3[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    EXPECT_SHAPE_OR_ARG(ibvi_loss_squared(f3, 3, 2, k_targets, 2, &loss, g));
    EXPECT_SHAPE_OR_ARG(
        ibvi_loss_softmax_xent(f3, 3, 2, k_labels, 2, &loss, g));
    EXPECT_SHAPE_OR_ARG(ibvi_loss_binary_xent(f3, 3, 2, k_targets, 2, &loss, g));
    /* ... and at least n */
    EXPECT_SHAPE_OR_ARG(ibvi_loss_squared(f3, 1, 2, k_targets, 2, &loss, g));

    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 0, 1, IBVI_LOSS_SQUARED, NULL,
                               k_targets, &loss),
               A);
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 2, 0, IBVI_LOSS_SQUARED, NULL,
                               k_targets, &loss),
               A);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- unknown kinds -------------------------------------------------------------------- */

START_TEST(test_unknown_kinds)
{
    const int A = IBVI_ERR_INVALID_ARG;
    ibvi_net *net = tu_net_new(3, NULL);
    EXPECT_ERR(ibvi_net_add_activation(net, 0), A);
    EXPECT_ERR(ibvi_net_add_activation(net, 4), A);
    EXPECT_ERR(ibvi_net_add_activation(net, -1), A);
    ck_assert_int_eq(ibvi_net_layer_count(net), 0);
    CK_OK(ibvi_net_add_dense(net, 4, 1));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    EXPECT_ERR(ibvi_net_init(net, 2, 1), A);
    EXPECT_ERR(ibvi_net_init(net, -1, 1), A);
    ck_assert_int_eq(ibvi_net_is_initialized(net), 0);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    ck_assert_int_eq(ibvi_net_is_initialized(net), 1);

    /* a failed re-init changes nothing */
    ibvi_layer *l0 = tu_layer(net, 0);
    int64_t P;
    float *m0 = tu_get_mean(l0, &P);
    EXPECT_ERR(ibvi_net_init(net, 7, 99), A);
    float *m1 = tu_get_mean(l0, NULL);
    ck_assert(memcmp(m0, m1, sizeof(float) * (size_t)P) == 0);
    ck_assert_int_eq(ibvi_net_parameterization(net), IBVI_PARAM_MUP);
    ck_assert_int_eq(ibvi_net_is_initialized(net), 1);
    free(m0);
    free(m1);

    ibvi_optimizer *opt = (ibvi_optimizer *)&opt;
    EXPECT_ERR(ibvi_optimizer_create(&opt, net, 2, 0.1f), A);
    EXPECT_ERR(ibvi_optimizer_create(&opt, net, -1, 0.1f), A);
    float a, b, loss;
    EXPECT_ERR(ibvi_layer_lr_multipliers(l0, 2, &a, &b), A);
    EXPECT_ERR(ibvi_layer_lr_multipliers(l0, -1, &a, &b), A);
    EXPECT_ERR(ibvi_loss(4, k_targets, 2, 2, k_labels, k_targets, 2, &loss,
                         NULL),
               A);
    EXPECT_ERR(ibvi_loss(-1, k_targets, 2, 2, k_labels, k_targets, 2, &loss,
                         NULL),
               A);
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.1f));
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 2, 1, 4, k_labels, k_targets,
                               &loss),
               A);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- state ------------------------------------------------------------------------------ */

START_TEST(test_state_errors)
{
    const int S = IBVI_ERR_STATE;
    float out[64], buf[64] = {0};
    uint64_t pos;
    ibvi_net *net = tu_net_new(3, NULL);

    /* no dense layer yet */
    EXPECT_ERR(ibvi_net_output_dim(net), S);
    EXPECT_STATE_OR_ARG(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    ck_assert_int_eq(ibvi_net_is_initialized(net), 0);
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    /* the last layer must be dense */
    EXPECT_STATE_OR_ARG(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    ck_assert_int_eq(ibvi_net_is_initialized(net), 0);
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    ck_assert_int_eq(ibvi_net_output_dim(net), 2);

    /* before init */
    ibvi_layer *l0 = tu_layer(net, 0);
    EXPECT_ERR(ibvi_net_parameterization(net), S);
    EXPECT_ERR(ibvi_net_forward(net, k_x, 2, 1, out), S);
    EXPECT_ERR(ibvi_net_forward_mean(net, k_x, 2, out), S);
    EXPECT_ERR(ibvi_net_forward_noise(net, k_x, 2, 1, buf, 3, out), S);
    EXPECT_ERR(ibvi_net_reserve(net, 10, 1), S);
    EXPECT_ERR(ibvi_layer_get_mean(l0, buf, 16), S);
    EXPECT_ERR(ibvi_layer_set_mean(l0, buf, 16), S);
    EXPECT_ERR(ibvi_layer_get_factor(l0, buf, 32), S);
    EXPECT_ERR(ibvi_layer_get_grad_mean(l0, buf, 16), S);
    ibvi_optimizer *opt = NULL;
    EXPECT_ERR(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f), S);
    ck_assert_ptr_null(opt);

    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    /* after init the architecture is frozen */
    EXPECT_ERR(ibvi_net_add_dense(net, 3, 0), S);
    EXPECT_ERR(ibvi_net_add_activation(net, IBVI_ACT_RELU), S);
    ck_assert_int_eq(ibvi_net_layer_count(net), 3);

    /* backward and last_noise need a forward pass */
    EXPECT_ERR(ibvi_net_backward(net, buf, 2, 2), S);
    EXPECT_ERR(ibvi_net_last_noise(net, buf, 3), S);
    CK_OK(ibvi_net_rng_position(net, &pos));

    /* a step needs a backward */
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    EXPECT_ERR(ibvi_optimizer_step(opt), S);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    /* gradients are zeros before any backward */
    CK_OK(ibvi_layer_get_grad_mean(l0, buf, 16));
    for (int i = 0; i < 16; i++)
        ck_assert(buf[i] == 0.0f);
    CK_OK(ibvi_net_forward(net, k_x, 2, 1, out));
    EXPECT_ERR(ibvi_optimizer_step(opt), S); /* forward alone is not enough */
    float g[4] = {0.1f, -0.2f, 0.3f, 0.05f};
    CK_OK(ibvi_net_backward(net, g, 2, 2));
    CK_OK(ibvi_optimizer_step(opt));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 1);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_layer_kind_errors)
{
    const int A = IBVI_ERR_INVALID_ARG;
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    ibvi_layer *d0 = tu_layer(net, 0), *act = tu_layer(net, 1);
    ck_assert_int_eq(ibvi_layer_get_kind(d0), IBVI_LAYER_DENSE);
    ck_assert_int_eq(ibvi_layer_get_kind(act), IBVI_LAYER_ACTIVATION);
    ck_assert_int_eq(ibvi_layer_get_activation(act), IBVI_ACT_RELU);
    ck_assert_int_eq(ibvi_layer_get_role(act), IBVI_ROLE_NONE);
    ck_assert_int_eq(ibvi_layer_param_count(act), 0);
    int32_t in, out, rank;
    CK_OK(ibvi_layer_shape(act, &in, &out, &rank));
    ck_assert_int_eq(rank, 0);
    float buf[64] = {0}, a, b;

    EXPECT_ERR(ibvi_layer_get_activation(d0), A);
    EXPECT_ERR(ibvi_layer_init_std(act, &a, &b), A);
    EXPECT_ERR(ibvi_layer_lr_multipliers(act, IBVI_OPT_SGD, &a, &b), A);
    /* deterministic layer: no factor */
    EXPECT_ERR(ibvi_layer_get_factor(d0, buf, 16), A);
    EXPECT_ERR(ibvi_layer_set_factor(d0, buf, 16), A);
    EXPECT_ERR(ibvi_layer_get_grad_factor(d0, buf, 16), A);
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_factor(act, buf, 1));
    /* activation: no mean */
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_mean(act, buf, 1));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_set_mean(act, buf, 1));
    ibvi_net_free(net);
}
END_TEST

/* ---- shapes ------------------------------------------------------------------------------ */

START_TEST(test_shape_errors)
{
    ibvi_net *net = small_net();
    ibvi_layer *l0 = tu_layer(net, 0), *l2 = tu_layer(net, 2);
    ck_assert_int_eq(ibvi_layer_param_count(l0), 16);
    ck_assert_int_eq(ibvi_layer_param_count(l2), 10);
    float buf[128] = {0}, out[64];
    int32_t ns = ibvi_net_noise_size(net);
    ck_assert_int_eq(ns, 3);

    /* lengths of the layer buffers */
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_mean(l0, buf, 15));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_mean(l0, buf, 17));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_set_mean(l0, buf, 15));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_factor(l0, buf, 16));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_set_factor(l0, buf, 33));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_grad_mean(l2, buf, 11));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_get_grad_factor(l2, buf, 20));
    EXPECT_SHAPE_OR_ARG(ibvi_layer_set_mean(l0, buf, 0));

    /* noise length */
    EXPECT_SHAPE_OR_ARG(ibvi_net_forward_noise(net, k_x, 2, 1, buf, ns - 1, out));
    EXPECT_SHAPE_OR_ARG(ibvi_net_forward_noise(net, k_x, 2, 2, buf, ns, out));
    CK_OK(ibvi_net_forward(net, k_x, 2, 2, out));
    EXPECT_SHAPE_OR_ARG(ibvi_net_last_noise(net, buf, ns));
    CK_OK(ibvi_net_last_noise(net, buf, 2 * ns));

    /* backward: rows = samples * n = 4, cols = 2 */
    float g[16] = {0.1f, 0.2f, -0.1f, 0.3f, 0.0f, 0.1f, 0.2f, 0.1f};
    EXPECT_SHAPE_OR_ARG(ibvi_net_backward(net, g, 2, 2));
    EXPECT_SHAPE_OR_ARG(ibvi_net_backward(net, g, 4, 3));
    EXPECT_SHAPE_OR_ARG(ibvi_net_backward(net, g, 8, 1));
    EXPECT_SHAPE_OR_ARG(ibvi_net_backward(net, g, 4, 0));
    CK_OK(ibvi_net_backward(net, g, 4, 2));
    ibvi_net_free(net);
}
END_TEST

/* ---- labels, non-finite values ------------------------------------------------------------ */

START_TEST(test_labels_out_of_range)
{
    const int A = IBVI_ERR_INVALID_ARG;
    const float f[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    int32_t bad1[2] = {0, 3}, bad2[2] = {-1, 1};
    float loss, g[6];
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 2, 3, bad1, 2, &loss, g), A);
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 2, 3, bad2, 2, &loss, g), A);
    EXPECT_ERR(ibvi_loss(IBVI_LOSS_SOFTMAX_XENT, f, 2, 3, bad1, NULL, 2, &loss,
                         g),
               A);
    int32_t ok[2] = {2, 0};
    CK_OK(ibvi_loss_softmax_xent(f, 2, 3, ok, 2, &loss, g));

    /* through train_step: nothing changes */
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    int64_t P;
    float *m0 = tu_get_mean(tu_layer(net, 2), &P);
    int32_t lab[2] = {0, 2}; /* output_dim is 2 */
    EXPECT_ERR(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT, lab,
                               NULL, &loss),
               A);
    float *m1 = tu_get_mean(tu_layer(net, 2), NULL);
    ck_assert(memcmp(m0, m1, sizeof(float) * (size_t)P) == 0);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    free(m0);
    free(m1);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_nonfinite_losses)
{
    const int NF = IBVI_ERR_NONFINITE;
    float f[4] = {0.1f, NAN, 0.3f, 0.4f}, t[4] = {0, 1, 0, 1}, loss = 0.0f;
    int32_t lab[2] = {0, 1};
    EXPECT_ERR(ibvi_loss_squared(f, 2, 2, t, 2, &loss, NULL), NF);
    ck_assert(!isfinite(loss)); /* *loss holds the value */
    EXPECT_ERR(ibvi_loss_binary_xent(f, 2, 2, t, 2, &loss, NULL), NF);
    EXPECT_ERR(ibvi_loss_softmax_xent(f, 2, 2, lab, 2, &loss, NULL), NF);
    f[1] = INFINITY;
    EXPECT_ERR(ibvi_loss_squared(f, 2, 2, t, 2, &loss, NULL), NF);
    /* finite inputs whose squared loss overflows */
    float big[2] = {3e30f, -3e30f}, zt[2] = {0, 0};
    EXPECT_ERR(ibvi_loss_squared(big, 1, 2, zt, 1, &loss, NULL), NF);
}
END_TEST

START_TEST(test_nonfinite_grad_out)
{
    ibvi_net *net = small_net();
    ibvi_layer *l0 = tu_layer(net, 0);
    float out[8], g[4] = {0.1f, -0.2f, 0.3f, 0.05f};
    float gm[16], gf[32], gm2[16], gf2[32];
    CK_OK(ibvi_net_forward(net, k_x, 2, 1, out));
    CK_OK(ibvi_net_backward(net, g, 2, 2));
    CK_OK(ibvi_layer_get_grad_mean(l0, gm, 16));
    CK_OK(ibvi_layer_get_grad_factor(l0, gf, 32));
    CK_OK(ibvi_net_forward(net, k_x, 2, 1, out));
    float bad[4] = {0.5f, NAN, 0.1f, 0.2f};
    EXPECT_ERR(ibvi_net_backward(net, bad, 2, 2), IBVI_ERR_NONFINITE);
    bad[1] = -INFINITY;
    EXPECT_ERR(ibvi_net_backward(net, bad, 2, 2), IBVI_ERR_NONFINITE);
    CK_OK(ibvi_layer_get_grad_mean(l0, gm2, 16));
    CK_OK(ibvi_layer_get_grad_factor(l0, gf2, 32));
    ck_assert_msg(memcmp(gm, gm2, sizeof gm) == 0, "mean gradient changed");
    ck_assert_msg(memcmp(gf, gf2, sizeof gf) == 0, "factor gradient changed");
    ibvi_net_free(net);
}
END_TEST

/* A deterministic network (no sampling stream involved) trained by SGD with
 * momentum: a rejected step in the middle must not change parameters or
 * momentum, so the run equals one without it. */
static ibvi_net *det_net(void)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 5, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 8));
    return net;
}

static int nets_equal(ibvi_net *a, ibvi_net *b)
{
    int same = 1;
    for (int i = 0; i < 3; i += 2) {
        int64_t P;
        float *ma = tu_get_mean(tu_layer(a, i), &P);
        float *mb = tu_get_mean(tu_layer(b, i), NULL);
        same &= memcmp(ma, mb, sizeof(float) * (size_t)P) == 0;
        free(ma);
        free(mb);
    }
    return same;
}

START_TEST(test_train_step_nonfinite_input)
{
    ibvi_net *a = det_net(), *b = det_net();
    ibvi_optimizer *oa = NULL, *ob = NULL;
    CK_OK(ibvi_optimizer_create(&oa, a, _i ? IBVI_OPT_ADAM : IBVI_OPT_SGD, 0.1f));
    CK_OK(ibvi_optimizer_create(&ob, b, _i ? IBVI_OPT_ADAM : IBVI_OPT_SGD, 0.1f));
    if (!_i) {
        CK_OK(ibvi_optimizer_set_momentum(oa, 0.9f, 0));
        CK_OK(ibvi_optimizer_set_momentum(ob, 0.9f, 0));
    }
    float loss;
    CK_OK(ibvi_train_step(a, oa, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL, k_targets,
                          &loss));
    CK_OK(ibvi_train_step(b, ob, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL, k_targets,
                          &loss));
    float xnan[6] = {0.5f, NAN, 2.0f, 1.0f, 0.25f, -0.5f};
    EXPECT_ERR(ibvi_train_step(a, oa, xnan, 2, 1, IBVI_LOSS_SQUARED, NULL,
                               k_targets, &loss),
               IBVI_ERR_NONFINITE);
    ck_assert_int_eq(ibvi_optimizer_step_count(oa), 1);
    ck_assert_msg(nets_equal(a, b), "a rejected step changed the parameters");
    for (int t = 0; t < 3; t++) {
        CK_OK(ibvi_train_step(a, oa, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                              k_targets, &loss));
        CK_OK(ibvi_train_step(b, ob, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                              k_targets, &loss));
    }
    ck_assert_msg(nets_equal(a, b),
                  "a rejected step changed the optimizer's state");
    ck_assert_int_eq(ibvi_optimizer_step_count(oa), 4);
    ibvi_optimizer_free(oa);
    ibvi_optimizer_free(ob);
    ibvi_net_free(a);
    ibvi_net_free(b);
}
END_TEST

/* A huge learning rate: the first step gives huge (finite) weights, the
 * second step's loss overflows and is rejected. */
START_TEST(test_train_step_overflow)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 1e15f));
    float loss;
    CK_OK(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                          k_targets, &loss));
    float m0[16], m2[10], f0[32], c0[16], c2[10], d0[32];
    ibvi_layer *l0 = tu_layer(net, 0), *l2 = tu_layer(net, 2);
    CK_OK(ibvi_layer_get_mean(l0, m0, 16));
    CK_OK(ibvi_layer_get_mean(l2, m2, 10));
    CK_OK(ibvi_layer_get_factor(l0, f0, 32));
    int rc = IBVI_OK;
    for (int t = 0; t < 5 && rc == IBVI_OK; t++) {
        ibvi_clear_error();
        rc = ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                             k_targets, &loss);
        if (rc == IBVI_OK) {
            CK_OK(ibvi_layer_get_mean(l0, m0, 16));
            CK_OK(ibvi_layer_get_mean(l2, m2, 10));
            CK_OK(ibvi_layer_get_factor(l0, f0, 32));
        }
    }
    CK_STATUS(rc, IBVI_ERR_NONFINITE);
    ck_assert(ibvi_last_error()[0] != 0);
    CK_OK(ibvi_layer_get_mean(l0, c0, 16));
    CK_OK(ibvi_layer_get_mean(l2, c2, 10));
    CK_OK(ibvi_layer_get_factor(l0, d0, 32));
    ck_assert(memcmp(m0, c0, sizeof m0) == 0);
    ck_assert(memcmp(m2, c2, sizeof m2) == 0);
    ck_assert(memcmp(f0, d0, sizeof f0) == 0);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_set_mean_nonfinite)
{
    ibvi_net *net = small_net();
    ibvi_layer *l0 = tu_layer(net, 0);
    float m[16], orig[16], now[16];
    CK_OK(ibvi_layer_get_mean(l0, orig, 16));
    for (int i = 0; i < 16; i++)
        m[i] = 0.5f * (float)i;
    m[7] = NAN;
    EXPECT_ERR(ibvi_layer_set_mean(l0, m, 16), IBVI_ERR_NONFINITE);
    CK_OK(ibvi_layer_get_mean(l0, now, 16));
    ck_assert(memcmp(orig, now, sizeof now) == 0);
    m[7] = INFINITY;
    EXPECT_ERR(ibvi_layer_set_mean(l0, m, 16), IBVI_ERR_NONFINITE);
    m[7] = 1.0f;
    m[15] = -INFINITY;
    EXPECT_ERR(ibvi_layer_set_mean(l0, m, 16), IBVI_ERR_NONFINITE);
    CK_OK(ibvi_layer_get_mean(l0, now, 16));
    ck_assert(memcmp(orig, now, sizeof now) == 0);
    m[15] = 2.0f;
    CK_OK(ibvi_layer_set_mean(l0, m, 16));
    CK_OK(ibvi_layer_get_mean(l0, now, 16));
    ck_assert(memcmp(m, now, sizeof now) == 0);
    ibvi_net_free(net);
}
END_TEST

/* ---- optimizer arguments ------------------------------------------------------------------ */

START_TEST(test_optimizer_args)
{
    const int A = IBVI_ERR_INVALID_ARG;
    ibvi_net *net = small_net(), *other = small_net();
    ibvi_optimizer *sgd = NULL, *adam = NULL;
    EXPECT_ERR(ibvi_optimizer_create(&sgd, net, IBVI_OPT_SGD, 0.0f), A);
    EXPECT_ERR(ibvi_optimizer_create(&sgd, net, IBVI_OPT_SGD, -0.1f), A);
    EXPECT_ERR(ibvi_optimizer_create(&sgd, net, IBVI_OPT_SGD, NAN), A);
    EXPECT_ERR(ibvi_optimizer_create(&sgd, net, IBVI_OPT_ADAM, INFINITY), A);
    CK_OK(ibvi_optimizer_create(&sgd, net, IBVI_OPT_SGD, 0.1f));
    CK_OK(ibvi_optimizer_create(&adam, net, IBVI_OPT_ADAM, 0.01f));

    float lr;
    EXPECT_ERR(ibvi_optimizer_set_lr(sgd, 0.0f), A);
    EXPECT_ERR(ibvi_optimizer_set_lr(sgd, -1.0f), A);
    EXPECT_ERR(ibvi_optimizer_set_lr(sgd, NAN), A);
    EXPECT_ERR(ibvi_optimizer_set_lr(sgd, INFINITY), A);
    CK_OK(ibvi_optimizer_get_lr(sgd, &lr));
    ck_assert(lr == 0.1f);
    CK_OK(ibvi_optimizer_set_lr(sgd, 0.25f));
    CK_OK(ibvi_optimizer_get_lr(sgd, &lr));
    ck_assert(lr == 0.25f);

    EXPECT_ERR(ibvi_optimizer_set_momentum(sgd, 1.0f, 0), A);
    EXPECT_ERR(ibvi_optimizer_set_momentum(sgd, -0.1f, 0), A);
    EXPECT_ERR(ibvi_optimizer_set_momentum(sgd, NAN, 0), A);
    EXPECT_ERR(ibvi_optimizer_set_momentum(sgd, 0.9f, 2), A);
    EXPECT_ERR(ibvi_optimizer_set_momentum(sgd, 0.9f, -1), A);
    CK_OK(ibvi_optimizer_set_momentum(sgd, 0.0f, 1));
    CK_OK(ibvi_optimizer_set_momentum(sgd, 0.9f, 0));

    EXPECT_ERR(ibvi_optimizer_set_adam(adam, 1.0f, 0.999f, 1e-8f), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(adam, 0.9f, 1.0f, 1e-8f), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(adam, -0.1f, 0.999f, 1e-8f), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(adam, 0.9f, 0.999f, 0.0f), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(adam, 0.9f, 0.999f, -1e-8f), A);
    EXPECT_ERR(ibvi_optimizer_set_adam(adam, 0.9f, NAN, 1e-8f), A);
    CK_OK(ibvi_optimizer_set_adam(adam, 0.8f, 0.99f, 1e-6f));

    /* the setters of the other kind */
    EXPECT_STATE_OR_ARG(ibvi_optimizer_set_momentum(adam, 0.9f, 0));
    EXPECT_STATE_OR_ARG(ibvi_optimizer_set_adam(sgd, 0.9f, 0.999f, 1e-8f));

    /* reset zeroes the step count */
    float loss;
    CK_OK(ibvi_train_step(net, sgd, k_x, 2, 1, IBVI_LOSS_SQUARED, NULL,
                          k_targets, &loss));
    ck_assert_int_eq(ibvi_optimizer_step_count(sgd), 1);
    CK_OK(ibvi_optimizer_reset(sgd));
    ck_assert_int_eq(ibvi_optimizer_step_count(sgd), 0);

    /* an optimizer is bound to its network (which has gradients now, so a
     * missing check would show as a successful step) */
    int64_t P;
    float *m_net = tu_get_mean(tu_layer(net, 0), &P);
    float *m_other = tu_get_mean(tu_layer(other, 0), NULL);
    EXPECT_STATE_OR_ARG(ibvi_train_step(other, sgd, k_x, 2, 1,
                                        IBVI_LOSS_SQUARED, NULL, k_targets,
                                        &loss));
    ck_assert_int_eq(ibvi_optimizer_step_count(sgd), 0);
    float *m_net2 = tu_get_mean(tu_layer(net, 0), NULL);
    float *m_other2 = tu_get_mean(tu_layer(other, 0), NULL);
    ck_assert(memcmp(m_net, m_net2, sizeof(float) * (size_t)P) == 0);
    ck_assert(memcmp(m_other, m_other2, sizeof(float) * (size_t)P) == 0);
    free(m_net);
    free(m_net2);
    free(m_other);
    free(m_other2);
    ibvi_optimizer_free(sgd);
    ibvi_optimizer_free(adam);
    ibvi_net_free(net);
    ibvi_net_free(other);
}
END_TEST

/* ---- allocator ------------------------------------------------------------------------------ */

/* A full life cycle; returns the first failing status (or IBVI_OK). Every
 * handle is freed on every path. */
static int life_cycle(const ibvi_allocator *alloc)
{
    ibvi_net *net = NULL;
    ibvi_optimizer *opt = NULL;
    float out[3 * 4 * 2], g[3 * 4 * 2], loss;
    float x[4 * 3] = {1, 2, 3, -1, 0, 1, 0.5f, 0.5f, 0.5f, 0, 0, 1};
    int32_t labels[4] = {0, 1, 1, 0};
    int rc = ibvi_net_create(&net, 3, alloc);
    if (rc != IBVI_OK) {
        ck_assert_ptr_null(net);
        return rc;
    }
    if ((rc = ibvi_net_add_dense(net, 6, 2)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_add_activation(net, IBVI_ACT_SILU)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_add_dense(net, 5, 0)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_add_activation(net, IBVI_ACT_TANH)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_add_dense(net, 2, 3)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_init(net, IBVI_PARAM_MUP, 3)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_forward(net, x, 4, 3, out)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_loss_softmax_xent(out, 12, 2, labels, 4, &loss, g)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_backward(net, g, 12, 2)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f)) != IBVI_OK) {
        ck_assert_ptr_null(opt);
        goto done;
    }
    if ((rc = ibvi_optimizer_step(opt)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_train_step(net, opt, x, 4, 2, IBVI_LOSS_SOFTMAX_XENT, labels,
                              NULL, &loss)) != IBVI_OK)
        goto done;
    if ((rc = ibvi_net_forward_mean(net, x, 4, out)) != IBVI_OK)
        goto done;
done:
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return rc;
}

START_TEST(test_allocator_balances)
{
    tu_alloc_stats st;
    memset(&st, 0, sizeof st);
    st.fail_after = -1;
    ibvi_allocator a = tu_counting_allocator(&st);
    CK_OK(life_cycle(&a));
    ck_assert_msg(st.allocs > 0, "the allocator was not used");
    ck_assert_msg(st.allocs == st.frees, "%ld allocations, %ld frees",
                  st.allocs, st.frees);
    ck_assert_int_eq(st.live_bytes, 0);
    ck_assert_int_eq(st.misaligned, 0);
}
END_TEST

/* Out of memory at every allocation in turn: never a crash, the failure is
 * IBVI_ERR_NOMEM with a message, and everything is released. */
START_TEST(test_allocator_failures)
{
    tu_alloc_stats st;
    memset(&st, 0, sizeof st);
    st.fail_after = -1;
    ibvi_allocator a = tu_counting_allocator(&st);
    CK_OK(life_cycle(&a));
    long total = st.allocs;
    ck_assert(total > 0);
    for (long k = 0; k < total; k++) {
        memset(&st, 0, sizeof st);
        st.fail_after = k;
        ibvi_clear_error();
        int rc = life_cycle(&a);
        ck_assert_msg(rc == IBVI_ERR_NOMEM,
                      "failing allocation %ld of %ld: status %d (%s)", k, total,
                      rc, ibvi_status_string(rc));
        ck_assert(ibvi_last_error()[0] != 0);
        ck_assert_msg(st.allocs == st.frees,
                      "failing allocation %ld: %ld allocations, %ld frees", k,
                      st.allocs, st.frees);
        ck_assert_int_eq(st.live_bytes, 0);
    }
}
END_TEST

/* After ibvi_net_reserve, forward/backward/train calls within the reserved
 * sizes allocate nothing. */
START_TEST(test_reserve_no_alloc)
{
    tu_alloc_stats st;
    memset(&st, 0, sizeof st);
    st.fail_after = -1;
    ibvi_allocator a = tu_counting_allocator(&st);
    ibvi_net *net = tu_net_new(3, &a);
    CK_OK(ibvi_net_add_dense(net, 6, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
    CK_OK(ibvi_net_reserve(net, 8, 3));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.01f));
    CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
    long before = st.allocs;
    float x[8 * 3] = {0}, out[3 * 8 * 2], g[3 * 8 * 2], loss, z[9] = {0};
    int32_t labels[8] = {0, 1, 0, 1, 0, 1, 1, 0};
    for (int i = 0; i < 24; i++)
        x[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (int rep = 0; rep < 2; rep++) {
        CK_OK(ibvi_net_forward(net, x, 8, 3, out));
        CK_OK(ibvi_loss_softmax_xent(out, 24, 2, labels, 8, &loss, g));
        CK_OK(ibvi_net_backward(net, g, 24, 2));
        CK_OK(ibvi_optimizer_step(opt));
        CK_OK(ibvi_net_forward_mean(net, x, 5, out));
        CK_OK(ibvi_net_forward_noise(net, x, 8, 3, z, 9, out));
        CK_OK(ibvi_train_step(net, opt, x, 8, 3, IBVI_LOSS_SOFTMAX_XENT, labels,
                              NULL, &loss));
        CK_OK(ibvi_train_step(net, opt, x, 4, 1, IBVI_LOSS_SOFTMAX_XENT, labels,
                              NULL, &loss));
    }
    ck_assert_msg(st.allocs == before, "%ld allocations after reserve",
                  st.allocs - before);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    ck_assert_int_eq(st.allocs, st.frees);
}
END_TEST

/* Deferred factor updates (docs/deferred.md) after ibvi_net_reserve
 * allocate nothing either: the window is reserved by ibvi_net_reserve for
 * an optimizer created before it (_i = 0), at the creation of one created
 * after it (_i = 1), and by ibvi_optimizer_set_deferred (_i = 2, a fixed
 * window); and the window ran (the factors are not bitwise the per-step
 * twin's). */
static ibvi_net *deferred_net(const ibvi_allocator *a)
{
    ibvi_net *net = tu_net_new(6, a);
    CK_OK(ibvi_net_add_dense(net, 24, 10));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 3, 3));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 7));
    return net;
}

START_TEST(test_reserve_no_alloc_deferred)
{
    tu_alloc_stats st;
    memset(&st, 0, sizeof st);
    st.fail_after = -1;
    ibvi_allocator a = tu_counting_allocator(&st);
    ibvi_net *net = deferred_net(&a), *ref = deferred_net(NULL);
    ibvi_optimizer *opt = NULL, *oref = NULL;
    if (_i == 0) {
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.005f));
        CK_OK(ibvi_net_reserve(net, 16, 1));
    } else {
        CK_OK(ibvi_net_reserve(net, 16, 1));
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.005f));
    }
    if (_i == 2)
        CK_OK(ibvi_optimizer_set_deferred(opt, 6));
    CK_OK(ibvi_optimizer_create(&oref, ref, IBVI_OPT_SGD, 0.005f));
    CK_OK(ibvi_optimizer_set_deferred(oref, 0));
    float x[16 * 6], loss;
    int32_t labels[16];
    for (int i = 0; i < 16 * 6; i++)
        x[i] = 0.1f * (float)(i % 11) - 0.5f;
    for (int i = 0; i < 16; i++)
        labels[i] = i % 3;
    const long before = st.allocs;
    for (int t = 0; t < 40; t++) {
        CK_OK(ibvi_train_step(net, opt, x, 16, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &loss));
        CK_OK(ibvi_train_step(ref, oref, x, 16, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &loss));
    }
    ck_assert_msg(st.allocs == before, "%ld allocations after reserve",
                  st.allocs - before);
    const int64_t n = ibvi_net_param_count(net);
    float *p = malloc((size_t)n * sizeof(float));
    float *q = malloc((size_t)n * sizeof(float));
    ck_assert(p && q);
    CK_OK(ibvi_net_get_params(net, p, n));
    CK_OK(ibvi_net_get_params(ref, q, n));
    ck_assert_msg(memcmp(p, q, (size_t)n * sizeof(float)) != 0,
                  "bitwise the per-step values: no window ran");
    free(p), free(q);
    ibvi_optimizer_free(opt), ibvi_optimizer_free(oref);
    ibvi_net_free(net), ibvi_net_free(ref);
    ck_assert_int_eq(st.allocs, st.frees);
}
END_TEST

/* ---- queries on a valid network ----------------------------------------------------------- */

START_TEST(test_queries)
{
    ibvi_net *net = small_net();
    ck_assert_int_eq(ibvi_net_input_dim(net), 3);
    ck_assert_int_eq(ibvi_net_output_dim(net), 2);
    ck_assert_int_eq(ibvi_net_layer_count(net), 3);
    ck_assert_int_eq(ibvi_net_is_initialized(net), 1);
    ck_assert_int_eq(ibvi_net_parameterization(net), IBVI_PARAM_SP);
    ck_assert_int_eq(ibvi_net_noise_size(net), 3);
    ck_assert_int_eq(ibvi_net_param_count(net), 16 * 3 + 10 * 2);
    uint64_t seed = 0;
    CK_OK(ibvi_net_seed(net, &seed));
    ck_assert(seed == 1);
    int32_t in, out, rank;
    CK_OK(ibvi_layer_shape(tu_layer(net, 2), &in, &out, &rank));
    ck_assert(in == 4 && out == 2 && rank == 1);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 0)), IBVI_ROLE_INPUT);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 2)), IBVI_ROLE_OUTPUT);
    ibvi_net_free(net);
}
END_TEST

/* ---- issue 10 ------------------------------------------------------------ */

/* Freeing order (item 9): an optimizer and a predictor may be freed before
 * or after their network. ibvi_optimizer_free used to read the freed
 * network's allocator (a use after free: ASan reports it, and with
 * MALLOC_PERTURB_ the allocator's pointers are garbage). The counting
 * allocator proves every block comes back. */
START_TEST(test_free_order)
{
    for (int order = 0; order < 2; order++) {
        tu_alloc_stats stats = {.fail_after = -1};
        const ibvi_allocator alloc = tu_counting_allocator(&stats);
        ibvi_net *net = tu_net_new(3, &alloc);
        CK_OK(ibvi_net_add_dense(net, 2, 1));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
        ibvi_optimizer *opt = NULL;
        ibvi_predictor *pred = NULL;
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
        CK_OK(ibvi_predictor_create(&pred, net, 2, 1));
        float loss;
        CK_OK(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                              k_labels, NULL, &loss));
        if (order == 0) {
            ibvi_net_free(net);
            ibvi_optimizer_free(opt);
            ibvi_predictor_free(pred);
        } else {
            ibvi_predictor_free(pred);
            ibvi_optimizer_free(opt);
            ibvi_net_free(net);
        }
        ck_assert_int_eq(stats.allocs, stats.frees);
        ck_assert_uint_eq(stats.live_bytes, 0);
    }
}
END_TEST

static uint8_t *saved(const ibvi_net *net, const ibvi_optimizer *opt,
                      int64_t *size)
{
    CK_OK(ibvi_net_save_size(net, opt, size));
    uint8_t *buf = malloc((size_t)*size);
    ck_assert_ptr_nonnull(buf);
    CK_OK(ibvi_net_save_buffer(net, opt, buf, *size));
    return buf;
}

/* Defaults (item 10): a new SGD optimizer follows the method's recipe,
 * momentum 0.9 without Nesterov: it trains bit for bit like one given
 * ibvi_optimizer_set_momentum(opt, 0.9f, 0), unlike plain SGD. */
START_TEST(test_sgd_default_is_recipe)
{
    uint8_t *buf[3];
    int64_t size[3];
    for (int k = 0; k < 3; k++) {
        ibvi_net *net = small_net();
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.05f));
        if (k == 1)
            CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));
        if (k == 2)
            CK_OK(ibvi_optimizer_set_momentum(opt, 0.0f, 0));
        for (int t = 0; t < 3; t++) {
            float loss;
            CK_OK(ibvi_train_step(net, opt, k_x, 2, 1,
                                  IBVI_LOSS_SOFTMAX_XENT, k_labels, NULL,
                                  &loss));
        }
        buf[k] = saved(net, opt, &size[k]);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
    ck_assert_msg(size[0] == size[1] &&
                      memcmp(buf[0], buf[1], (size_t)size[0]) == 0,
                  "the default SGD optimizer is not momentum 0.9, Nesterov "
                  "off");
    ck_assert(size[0] != size[2] ||
              memcmp(buf[0], buf[2], (size_t)size[0]) != 0);
    for (int k = 0; k < 3; k++)
        free(buf[k]);
}
END_TEST

/* Rejected training steps (item 6): every bad argument of ibvi_train_step
 * is refused before anything changes (no forward: the noise position stays;
 * parameters, optimizer state and step count stay), under the name
 * ibvi_train_step. */
START_TEST(test_train_step_rejects_without_side_effects)
{
    ibvi_net *net = small_net(), *other = small_net();
    ibvi_optimizer *opt = NULL, *foreign = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.05f));
    CK_OK(ibvi_optimizer_create(&foreign, other, IBVI_OPT_SGD, 0.05f));
    float loss;
    CK_OK(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                          k_labels, NULL, &loss));
    const int32_t bad_label[2] = {1, 2}, negative_label[2] = {-1, 0};
    const float nan_targets[4] = {0.5f, NAN, 1.0f, 0.0f};
    const float inf_targets[4] = {0.5f, 0.0f, INFINITY, 0.0f};
    const float out_of_range[4] = {0.5f, 0.0f, 1.5f, 0.0f};
    const float nan_x[6] = {0.5f, -1.0f, NAN, 1.0f, 0.25f, -0.5f};
    struct {
        int32_t kind;
        const float *x;
        int64_t n;
        int32_t samples;
        const int32_t *labels;
        const float *targets;
        ibvi_optimizer *opt;
    } cases[] = {
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 1, bad_label, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 1, negative_label, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 1, NULL, k_targets, opt},
        {7, k_x, 2, 1, k_labels, k_targets, opt},
        {-1, k_x, 2, 1, k_labels, k_targets, opt},
        {IBVI_LOSS_SQUARED, k_x, 2, 1, k_labels, NULL, opt},
        {IBVI_LOSS_SQUARED, k_x, 2, 1, NULL, nan_targets, opt},
        {IBVI_LOSS_SQUARED, k_x, 2, 1, NULL, inf_targets, opt},
        {IBVI_LOSS_BINARY_XENT, k_x, 2, 1, NULL, NULL, opt},
        {IBVI_LOSS_BINARY_XENT, k_x, 2, 1, NULL, nan_targets, opt},
        {IBVI_LOSS_BINARY_XENT, k_x, 2, 1, NULL, out_of_range, opt},
        {IBVI_LOSS_SOFTMAX_XENT, NULL, 2, 1, k_labels, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, nan_x, 2, 1, k_labels, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 0, 1, k_labels, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, -3, 1, k_labels, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 0, k_labels, NULL, opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, IBVI_MAX_SAMPLES + 1, k_labels, NULL,
         opt},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 1, k_labels, NULL, NULL},
        {IBVI_LOSS_SOFTMAX_XENT, k_x, 2, 1, k_labels, NULL, foreign},
    };
    const int count = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < count; i++) {
        uint64_t pos0, pos1;
        int64_t s0, s1;
        CK_OK(ibvi_net_rng_position(net, &pos0));
        uint8_t *before = saved(net, opt, &s0);
        const int64_t steps = ibvi_optimizer_step_count(opt);
        ibvi_clear_error();
        const int rc = ibvi_train_step(net, cases[i].opt, cases[i].x,
                                       cases[i].n, cases[i].samples,
                                       cases[i].kind, cases[i].labels,
                                       cases[i].targets, &loss);
        ck_assert_msg(rc < 0, "case %d accepted", i);
        ck_assert_msg(strncmp(ibvi_last_error(), "ibvi_train_step: ", 17) ==
                          0, "case %d: message \"%s\"", i, ibvi_last_error());
        CK_OK(ibvi_net_rng_position(net, &pos1));
        ck_assert_msg(pos0 == pos1, "case %d advanced the noise stream", i);
        ck_assert_int_eq(ibvi_optimizer_step_count(opt), steps);
        uint8_t *after = saved(net, opt, &s1);
        ck_assert_msg(s0 == s1 && memcmp(before, after, (size_t)s0) == 0,
                      "case %d changed the network or optimizer", i);
        free(before);
        free(after);
    }
    /* The network still trains. */
    CK_OK(ibvi_train_step(net, opt, k_x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                          k_labels, NULL, &loss));
    ibvi_optimizer_free(foreign);
    ibvi_optimizer_free(opt);
    ibvi_net_free(other);
    ibvi_net_free(net);
}
END_TEST

static Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tu_tcase("basic");
    tcase_add_test(tc, test_status_strings);
    tcase_add_test(tc, test_versions);
    tcase_add_test(tc, test_last_error);
    tcase_add_test(tc, test_create_errors);
    tcase_add_test(tc, test_free_accepts_null);
    tcase_add_test(tc, test_null_handles);
    tcase_add_test(tc, test_null_pointers);
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_unknown_kinds);
    tcase_add_test(tc, test_state_errors);
    tcase_add_test(tc, test_layer_kind_errors);
    tcase_add_test(tc, test_shape_errors);
    tcase_add_test(tc, test_queries);
    suite_add_tcase(s, tc);
    TCase *tn = tu_tcase("nonfinite");
    tcase_add_test(tn, test_labels_out_of_range);
    tcase_add_test(tn, test_nonfinite_losses);
    tcase_add_test(tn, test_nonfinite_grad_out);
    tcase_add_loop_test(tn, test_train_step_nonfinite_input, 0, 2);
    tcase_add_test(tn, test_train_step_overflow);
    tcase_add_test(tn, test_set_mean_nonfinite);
    tcase_add_test(tn, test_optimizer_args);
    tcase_add_test(tn, test_train_step_rejects_without_side_effects);
    tcase_add_test(tn, test_free_order);
    tcase_add_test(tn, test_sgd_default_is_recipe);
    suite_add_tcase(s, tn);
    TCase *ta = tu_tcase("allocator");
    tcase_add_test(ta, test_allocator_balances);
    tcase_add_test(ta, test_allocator_failures);
    tcase_add_test(ta, test_reserve_no_alloc);
    tcase_add_loop_test(ta, test_reserve_no_alloc_deferred, 0, 3);
    suite_add_tcase(s, ta);
    return s;
}

int main(void) { return tu_run_suite(errors_suite()); }

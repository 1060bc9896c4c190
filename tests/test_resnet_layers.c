/*
 * libibvi tests - group normalisation and residual connections as layers of
 * a network, through the public API: finite-difference gradients of every
 * mean and factor entry through networks holding them (variational layers
 * before and after, identity and projected skips, skips from the input and
 * from earlier layers, two skips reading one source), the builders' errors,
 * the predictor against the naive average of ibvi_net_forward_noise with
 * the predictor's own noise (K = 1, 4, the mean network, an ensemble; a
 * variational first conv through both of its paths, materialised samples
 * and the low-rank identity), and a small ResNet-style stack whose loss
 * falls under ibvi_train_step.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- networks -------------------------------------------------------------- */

typedef ibvi_net *(*builder)(void);

static ibvi_net *finish(ibvi_net *net, uint64_t seed)
{
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

/* dense (variational) -> tanh -> group norm on a flat (12, 1, 1) -> dense:
 * the group norm's input gradient reaches the first dense layer. */
static ibvi_net *net_gn_flat(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 5, NULL));
    CK_OK(ibvi_net_add_dense(net, 12, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_groupnorm(net, 3, 1e-5f));
    CK_OK(ibvi_net_add_dense(net, 4, 1));
    return finish(net, 11);
}

/* Image input: tanh -> group norm (2 groups of (2, 3, 3)) -> projected
 * skip from the input with stride 1 -> dense. */
static ibvi_net *net_gn_image(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 4, 3, 3, NULL));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-3f));
    CK_OK(ibvi_net_add_residual(net, -1, 1));
    CK_OK(ibvi_net_add_dense(net, 3, 2));
    return finish(net, 12);
}

/* Identity skips: from an earlier layer (1) and from the input, with
 * variational layers before and after. */
static ibvi_net *net_identity(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 6, NULL));
    CK_OK(ibvi_net_add_dense(net, 6, 2));        /* 0 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 1 */
    CK_OK(ibvi_net_add_dense(net, 6, 1));        /* 2 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 3 */
    CK_OK(ibvi_net_add_residual(net, 1, 0));     /* 4: 3's output + 1's */
    CK_OK(ibvi_net_add_residual(net, -1, 0));    /* 5: + x */
    CK_OK(ibvi_net_add_dense(net, 3, 2));        /* 6 */
    return finish(net, 13);
}

/* Projections with stride 2 from a (2, 2, 2) group norm output to (4, 1, 1)
 * (the stride keeps pixel (0, 0)), two residuals reading that one source,
 * one from the (2, 2, 2) input with stride 2 and an identity skip from a
 * residual's output. */
static ibvi_net *net_projection(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 2, 2, NULL));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 0: (2,2,2) */
    CK_OK(ibvi_net_add_groupnorm(net, 1, 1e-3f));       /* 1: (2,2,2) */
    CK_OK(ibvi_net_add_dense(net, 4, 2));               /* 2: (4,1,1) */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 3 */
    CK_OK(ibvi_net_add_residual(net, 1, 2));            /* 4: proj of 1 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 5 */
    CK_OK(ibvi_net_add_residual(net, 1, 2));            /* 6: 1 again */
    CK_OK(ibvi_net_add_residual(net, -1, 2));           /* 7: x, stride 2 */
    CK_OK(ibvi_net_add_residual(net, 4, 0));            /* 8: identity of 4 */
    CK_OK(ibvi_net_add_dense(net, 3, 1));               /* 9 */
    return finish(net, 14);
}

/* Residual as the first layer, reading the input (output 2x). */
static ibvi_net *net_first(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 4, NULL));
    CK_OK(ibvi_net_add_residual(net, -1, 0));
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-3f));
    CK_OK(ibvi_net_add_dense(net, 5, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_residual(net, 0, 1)); /* (4,1,1) -> (5,1,1) */
    CK_OK(ibvi_net_add_dense(net, 3, 2));
    return finish(net, 15);
}

/* Identity skips whose source runs before the first variational layer
 * and whose residual after it: the predictor broadcasts the source's n
 * shared rows to the K blocks (a ReLU source, fused into nothing). */
static ibvi_net *net_broadcast(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 6, NULL));
    CK_OK(ibvi_net_add_dense(net, 6, 0));                /* 0 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));  /* 1: source */
    CK_OK(ibvi_net_add_dense(net, 6, 2));                /* 2: fan-out */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));  /* 3: source */
    CK_OK(ibvi_net_add_residual(net, 1, 0));             /* 4 */
    CK_OK(ibvi_net_add_dense(net, 6, 0));                /* 5 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));  /* 6 */
    CK_OK(ibvi_net_add_residual(net, 3, 0));             /* 7 */
    CK_OK(ibvi_net_add_residual(net, 1, 0));             /* 8 */
    CK_OK(ibvi_net_add_dense(net, 3, 0));                /* 9 */
    return finish(net, 17);
}

/* A conv-first ResNet block: a variational conv (linear in its weights:
 * the predictor's low-rank identity applies), group norm, an identity skip
 * over a conv, a strided conv with a stride-2 1x1 projection of the
 * block's input (a real spatial subsampling, 6x6 -> 3x3), global average
 * pooling and a variational dense layer. */
static ibvi_net *net_conv(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 6, 6, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 2));     /* 0: (4,6,6) */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 1 */
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-3f));       /* 2 */
    CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 0));     /* 3: (4,6,6) */
    CK_OK(ibvi_net_add_residual(net, 1, 0));            /* 4: + 1 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH)); /* 5 */
    CK_OK(ibvi_net_add_conv2d(net, 6, 3, 2, 1, 0));     /* 6: (6,3,3) */
    CK_OK(ibvi_net_add_residual(net, 5, 2));            /* 7: proj of 5 */
    CK_OK(ibvi_net_add_residual(net, -1, 2));           /* 8: x, 2 -> 6 */
    CK_OK(ibvi_net_add_global_avgpool(net));            /* 9: (6,1,1) */
    CK_OK(ibvi_net_add_dense(net, 3, 1));               /* 10 */
    return finish(net, 16);
}

/* The composition of examples/mnist_train.c's add_resnet on an 8x8 image
 * at a quarter of its widths: a variational stem conv 4@3x3 pad 1, group
 * norm, ReLU, then three basic blocks (conv3x3 - GN - ReLU - conv3x3 - GN -
 * residual - ReLU) of 4 channels (identity skip), 8 with stride 2 and 8
 * with stride 2 (1x1 projected skips), global average pooling and a
 * variational dense classifier. SiLU stands in for the example's ReLU:
 * with ReLU's kinks the central differences of the stem's weights miss by
 * up to 8% at eps 1e-2 (they converge to the backward's values as eps
 * shrinks), while the backward of the ReLU layer itself is checked in
 * test_grad.c. */
/* A 3x3 pad 1 convolution, with or without a bias. */
static void add_conv3(ibvi_net *net, int32_t channels, int32_t stride,
                      int32_t rank, int no_bias)
{
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = channels;
    o.kernel_h = o.kernel_w = 3;
    o.stride_h = o.stride_w = stride;
    o.pad_h = o.pad_w = 1;
    o.rank = rank;
    o.no_bias = no_bias;
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));
}

static void add_mnist_block(ibvi_net *net, int32_t channels, int32_t stride,
                            int projection, int no_bias)
{
    const int32_t src = ibvi_net_layer_count(net) - 1;
    add_conv3(net, channels, stride, 0, no_bias);
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    add_conv3(net, channels, 1, 0, no_bias);
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));
    ibvi_residual_options r = IBVI_RESIDUAL_OPTIONS_INIT;
    r.from = src;
    r.projection_stride = projection ? stride : 0;
    r.projection_no_bias = no_bias;
    CK_OK(ibvi_net_add_residual_ex(net, &r));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
}

static ibvi_net *mnist_resnet(int no_bias, uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 1, 8, 8, NULL));
    add_conv3(net, 4, 1, 2, no_bias);
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    add_mnist_block(net, 4, 1, 0, no_bias);
    add_mnist_block(net, 8, 2, 1, no_bias);
    add_mnist_block(net, 8, 2, 1, no_bias);
    CK_OK(ibvi_net_add_global_avgpool(net));
    CK_OK(ibvi_net_add_dense(net, 3, 2));
    return finish(net, seed);
}

static ibvi_net *net_mnist_resnet(void) { return mnist_resnet(0, 18); }

/* mnist_train's ResNet as it is built since 0.6.0: no conv or projection
 * has a bias (theta is the weights alone; the stem's factor has no bias
 * rows), as in the authors' ResNet. */
static ibvi_net *net_mnist_resnet_no_bias(void) { return mnist_resnet(1, 19); }

/* Moves every mean and factor away from the prior (gains != 1, shifts
 * != 0), so no gradient is zero by symmetry. */
static void perturb(ibvi_net *net, uint64_t seed)
{
    tu_rng r;
    tu_rng_seed(&r, seed);
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        int64_t P = ibvi_layer_param_count(l);
        if (P == 0)
            continue;
        float *m = tu_get_mean(l, &P);
        for (int64_t p = 0; p < P; p++)
            m[p] += (float)(0.3 * tu_rng_normal(&r));
        CK_OK(ibvi_layer_set_mean(l, m, P));
        free(m);
        int32_t R = 0;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        if (R > 0) {
            int64_t len = 0;
            float *s = tu_get_factor(l, &len);
            for (int64_t p = 0; p < len; p++)
                s[p] += (float)(0.2 * tu_rng_normal(&r));
            CK_OK(ibvi_layer_set_factor(l, s, len));
            free(s);
        }
    }
}

/* ---- finite differences ---------------------------------------------------- */

typedef struct fd_problem {
    ibvi_net *net;
    int64_t n;
    int32_t samples;
    float *x, *z, *out, *w;
    int64_t z_len, out_len;
} fd_problem;

/* L = sum out * w at the fixed noise, in double. */
static double fd_loss(fd_problem *f)
{
    CK_OK(ibvi_net_forward_noise(f->net, f->x, f->n, f->samples, f->z,
                                 f->z_len, f->out));
    double l = 0.0;
    for (int64_t k = 0; k < f->out_len; k++)
        l += (double)f->out[k] * f->w[k];
    return l;
}

typedef int (*get_fn)(const ibvi_layer *, float *, int64_t);
typedef int (*set_fn)(ibvi_layer *, const float *, int64_t);

/* Every entry of one buffer (mean or factor) of layer l against central
 * differences; returns the number of entries checked. */
static int64_t fd_buffer(fd_problem *f, ibvi_layer *l, int64_t len,
                         get_fn get, set_fn set, const float *analytic,
                         const char *what, int32_t index)
{
    float *buf = malloc(sizeof(float) * (size_t)len);
    ck_assert_ptr_nonnull(buf);
    CK_OK(get(l, buf, len));
    const double eps = 1e-2;
    for (int64_t p = 0; p < len; p++) {
        const float orig = buf[p];
        buf[p] = orig + (float)eps;
        const double hp = (double)buf[p] - orig;
        CK_OK(set(l, buf, len));
        const double lp = fd_loss(f);
        buf[p] = orig - (float)eps;
        const double hm = orig - (double)buf[p];
        CK_OK(set(l, buf, len));
        const double lm = fd_loss(f);
        buf[p] = orig;
        CK_OK(set(l, buf, len));
        const double fd = (lp - lm) / (hp + hm), a = analytic[p];
        const double scale = fabs(fd) > fabs(a) ? fabs(fd) : fabs(a);
        ck_assert_msg(fabs(fd - a) <= 2e-2 * scale + 3e-3,
                      "layer %d %s[%lld]: analytic %.6g, finite differences "
                      "%.6g", (int)index, what, (long long)p, a, fd);
    }
    free(buf);
    return len;
}

static int fd_get_factor(const ibvi_layer *l, float *b, int64_t len)
{
    return ibvi_layer_get_factor(l, b, len);
}

/* The backward's mean and factor gradients of every layer against finite
 * differences, for `samples` samples of fixed noise on n inputs. */
static void check_gradients(builder build, int64_t n, int32_t samples,
                            uint64_t seed)
{
    fd_problem f = {.net = build(), .n = n, .samples = samples};
    perturb(f.net, seed);
    tu_rng r;
    tu_rng_seed(&r, seed + 1);
    const int32_t in = ibvi_net_input_dim(f.net);
    const int32_t out = ibvi_net_output_dim(f.net);
    f.z_len = (int64_t)samples * ibvi_net_noise_size(f.net);
    f.out_len = n * samples * out;
    f.x = malloc(sizeof(float) * (size_t)(n * in));
    f.z = malloc(sizeof(float) * (size_t)(f.z_len + 1));
    f.out = malloc(sizeof(float) * (size_t)f.out_len);
    f.w = malloc(sizeof(float) * (size_t)f.out_len);
    tu_fill_normal_f(&r, f.x, n * in, 1.0);
    tu_fill_normal_f(&r, f.z, f.z_len, 1.0);
    tu_fill_normal_f(&r, f.w, f.out_len, 1.0);
    fd_loss(&f);
    CK_OK(ibvi_net_backward(f.net, f.w, n * samples, out));
    int64_t checked = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(f.net); i++) {
        ibvi_layer *l = tu_layer(f.net, i);
        const int64_t P = ibvi_layer_param_count(l);
        if (P == 0)
            continue;
        int32_t R = 0;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        float *gm = malloc(sizeof(float) * (size_t)P);
        float *gf = malloc(sizeof(float) * (size_t)(P * R + 1));
        CK_OK(ibvi_layer_get_grad_mean(l, gm, P));
        if (R > 0)
            CK_OK(ibvi_layer_get_grad_factor(l, gf, P * R));
        checked += fd_buffer(&f, l, P, ibvi_layer_get_mean,
                             ibvi_layer_set_mean, gm, "mean", i);
        if (R > 0)
            checked += fd_buffer(&f, l, P * R, fd_get_factor,
                                 ibvi_layer_set_factor, gf, "factor", i);
        free(gm);
        free(gf);
    }
    ck_assert_int_gt(checked, 0);
    ibvi_net_free(f.net);
    free(f.x);
    free(f.z);
    free(f.out);
    free(f.w);
}

static const builder all_nets[] = {net_gn_flat, net_gn_image, net_identity,
                                   net_projection, net_first,
                                   net_broadcast, net_conv,
                                   net_mnist_resnet, net_mnist_resnet_no_bias};
#define NET_COUNT ((int)(sizeof all_nets / sizeof all_nets[0]))

START_TEST(gradients_one_sample)
{
    check_gradients(all_nets[_i], 3, 1, 100 + (uint64_t)_i);
}
END_TEST

START_TEST(gradients_three_samples)
{
    check_gradients(all_nets[_i], 2, 3, 200 + (uint64_t)_i);
}
END_TEST

/* The mean network (no noise): ibvi_net_forward_mean's backward. */
START_TEST(gradients_mean_network)
{
    ibvi_net *net = net_projection();
    perturb(net, 7);
    const int32_t in = ibvi_net_input_dim(net), out = ibvi_net_output_dim(net);
    float x[3 * 8], y[3 * 3], w[3 * 3];
    tu_rng r;
    tu_rng_seed(&r, 8);
    tu_fill_normal_f(&r, x, 3 * in, 1.0);
    tu_fill_normal_f(&r, w, 3 * out, 1.0);
    CK_OK(ibvi_net_forward_mean(net, x, 3, y));
    CK_OK(ibvi_net_backward(net, w, 3, out));
    /* The mean network is forward_noise with z = 0. */
    float g0[64], g1[64];
    ibvi_layer *l = tu_layer(net, 4);
    const int64_t P = ibvi_layer_param_count(l);
    ck_assert_int_le(P, 64);
    CK_OK(ibvi_layer_get_grad_mean(l, g0, P));
    float z[16] = {0};
    const int32_t ns = ibvi_net_noise_size(net);
    CK_OK(ibvi_net_forward_noise(net, x, 3, 1, z, ns, y));
    CK_OK(ibvi_net_backward(net, w, 3, out));
    CK_OK(ibvi_layer_get_grad_mean(l, g1, P));
    for (int64_t p = 0; p < P; p++)
        ck_assert_float_eq_tol(g0[p], g1[p], 1e-6f);
    ibvi_net_free(net);
}
END_TEST

/* ---- builders --------------------------------------------------------------- */

static void assert_error_names(const char *needle)
{
    const char *msg = ibvi_last_error();
    ck_assert_msg(strstr(msg, "ibvi_net_add_") != NULL, "message: %s", msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg,
                  needle);
}

START_TEST(groupnorm_errors)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 6, 2, 2, NULL));
    CK_STATUS(ibvi_net_add_groupnorm(net, 4, 1e-5f), IBVI_ERR_SHAPE);
    assert_error_names("channels 6 not divisible by groups 4");
    CK_STATUS(ibvi_net_add_groupnorm(net, 0, 1e-5f), IBVI_ERR_INVALID_ARG);
    assert_error_names("groups");
    CK_STATUS(ibvi_net_add_groupnorm(net, 3, 0.0f), IBVI_ERR_INVALID_ARG);
    assert_error_names("eps");
    CK_STATUS(ibvi_net_add_groupnorm(net, 3, -1e-5f), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_add_groupnorm(net, 3, NAN), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_add_groupnorm(net, 3, INFINITY), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_add_groupnorm(NULL, 3, 1e-5f), IBVI_ERR_INVALID_ARG);
    ck_assert_int_eq(ibvi_net_layer_count(net), 0);
    CK_OK(ibvi_net_add_groupnorm(net, 3, 1e-5f));
    CK_OK(ibvi_net_add_groupnorm(net, 6, 1e-5f));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    CK_STATUS(ibvi_net_add_groupnorm(net, 2, 1e-5f), IBVI_ERR_STATE);
    /* The layer: kind, shape, gamma = 1 and beta = 0, bias-like lr. */
    ibvi_layer *l = tu_layer(net, 0);
    ck_assert_int_eq(ibvi_layer_get_kind(l), IBVI_LAYER_GROUPNORM);
    ck_assert_int_eq(ibvi_layer_get_role(l), IBVI_ROLE_NONE);
    int32_t c = 0, h = 0, w = 0, rank = -1;
    CK_OK(ibvi_layer_output_shape(l, &c, &h, &w));
    ck_assert(c == 6 && h == 2 && w == 2);
    CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
    ck_assert_int_eq(rank, 0);
    ck_assert_int_eq(ibvi_layer_param_count(l), 12);
    float theta[12];
    CK_OK(ibvi_layer_get_mean(l, theta, 12));
    for (int k = 0; k < 12; k++)
        ck_assert_float_eq(theta[k], k < 6 ? 1.0f : 0.0f);
    float wm = 0, bm = 0;
    CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_SGD, &wm, &bm));
    ck_assert_float_eq(bm, 6.0f); /* gains and shifts: SGD x C under muP */
    CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_ADAM, &wm, &bm));
    ck_assert_float_eq(bm, 1.0f);
    CK_STATUS(ibvi_layer_get_activation(l), IBVI_ERR_INVALID_ARG);
    ibvi_net_free(net);
    /* A rank is not accepted: there is no rank argument, and SP gives 1. */
    CK_OK(ibvi_net_create(&net, 4, NULL));
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    CK_OK(ibvi_layer_lr_multipliers(tu_layer(net, 0), IBVI_OPT_SGD, &wm, &bm));
    ck_assert_float_eq(bm, 1.0f);
    ibvi_net_free(net);
}
END_TEST

START_TEST(residual_errors)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 3, 4, 4, NULL));
    CK_STATUS(ibvi_net_add_residual(net, 0, 0), IBVI_ERR_INVALID_ARG);
    assert_error_names("from = 0");
    CK_STATUS(ibvi_net_add_residual(net, -2, 0), IBVI_ERR_INVALID_ARG);
    assert_error_names("from = -2");
    CK_STATUS(ibvi_net_add_residual(net, -1, -1), IBVI_ERR_INVALID_ARG);
    assert_error_names("projection_stride");
    CK_STATUS(ibvi_net_add_residual(NULL, -1, 0), IBVI_ERR_INVALID_ARG);
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU)); /* 0: (3,4,4) */
    CK_OK(ibvi_net_add_dense(net, 5, 0));               /* 1: (5,1,1) */
    CK_STATUS(ibvi_net_add_residual(net, 2, 0), IBVI_ERR_INVALID_ARG);
    assert_error_names("from = 2");
    /* Identity: the shapes differ. */
    CK_STATUS(ibvi_net_add_residual(net, 0, 0), IBVI_ERR_SHAPE);
    assert_error_names("the skip from layer 0 has shape (3, 4, 4)");
    assert_error_names("(5, 1, 1)");
    /* Projection: stride 2 of 4x4 is 2x2, not 1x1; stride 4 fits. */
    CK_STATUS(ibvi_net_add_residual(net, -1, 2), IBVI_ERR_SHAPE);
    assert_error_names("(5, 2, 2)");
    assert_error_names("the skip from the network input of shape (3, 4, 4)");
    CK_STATUS(ibvi_net_add_residual(net, 0, 3), IBVI_ERR_SHAPE);
    ck_assert_int_eq(ibvi_net_layer_count(net), 2);
    CK_OK(ibvi_net_add_residual(net, 0, 4));  /* 2 */
    CK_OK(ibvi_net_add_residual(net, 1, 0));  /* 3: identity of 1 */
    CK_OK(ibvi_net_add_residual(net, -1, 5)); /* 4: (3,4,4) stride 5: 1x1 */
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
    CK_STATUS(ibvi_net_add_residual(net, 5, 0), IBVI_ERR_STATE);
    ibvi_layer *proj = tu_layer(net, 2), *id = tu_layer(net, 3);
    ck_assert_int_eq(ibvi_layer_get_kind(proj), IBVI_LAYER_RESIDUAL);
    ck_assert_int_eq(ibvi_layer_param_count(proj), 5 * 3 + 5);
    ck_assert_int_eq(ibvi_layer_param_count(id), 0);
    /* The projection is a hidden weight matrix for muP (fan_in 3); the
     * dense layers keep their roles (input, output). */
    float ws = 0, bs = 0, wm = 0, bm = 0;
    CK_OK(ibvi_layer_init_std(proj, &ws, &bs));
    ck_assert_float_eq_tol(ws, 1.0f / sqrtf(3.0f), 1e-6f);
    CK_OK(ibvi_layer_lr_multipliers(proj, IBVI_OPT_ADAM, &wm, &bm));
    ck_assert_float_eq_tol(wm, 1.0f / 3.0f, 1e-6f);
    CK_OK(ibvi_layer_lr_multipliers(proj, IBVI_OPT_SGD, &wm, &bm));
    ck_assert_float_eq(wm, 1.0f);
    ck_assert_float_eq(bm, 5.0f);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 1)), IBVI_ROLE_INPUT);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 5)), IBVI_ROLE_OUTPUT);
    /* The identity has no parameters. */
    float t[1];
    ck_assert_int_lt(ibvi_layer_get_mean(id, t, 0), 0);
    ibvi_net_free(net);
    /* A network cannot end with a residual. */
    CK_OK(ibvi_net_create(&net, 3, NULL));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_add_residual(net, -1, 0));
    CK_STATUS(ibvi_net_init(net, IBVI_PARAM_MUP, 1), IBVI_ERR_STATE);
    ibvi_net_free(net);
}
END_TEST

/* Forward values by hand: residual identity = input + skip; projection
 * with stride 2 picks pixel (0, 0) of each channel. */
START_TEST(residual_values)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 2, 2, NULL));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_add_residual(net, -1, 2));
    CK_OK(ibvi_net_add_residual(net, 0, 0));
    CK_OK(ibvi_net_add_dense(net, 1, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 5));
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y;
    float dense[3 * 8 + 3] = {0};
    for (int j = 0; j < 3; j++)
        dense[j * 8 + j] = 1.0f; /* d = (x0, x1, x2) */
    CK_OK(ibvi_layer_set_mean(tu_layer(net, 0), dense, 27));
    /* projection W (3 x 2), b: p = W (x[0], x[4]) + b */
    const float proj[3 * 2 + 3] = {1, 0, 0, 1, 1, 1, 0.5f, 0.25f, 0.125f};
    CK_OK(ibvi_layer_set_mean(tu_layer(net, 1), proj, 9));
    const float last[4] = {1, 10, 100, 0};
    CK_OK(ibvi_layer_set_mean(tu_layer(net, 3), last, 4));
    CK_OK(ibvi_net_forward_mean(net, x, 1, &y));
    /* r1 = d + p = (1 + 1.5, 2 + 5.25, 3 + 6.125); r2 = r1 + d. */
    const double r2[3] = {2.5 + 1, 7.25 + 2, 9.125 + 3};
    ck_assert_double_eq_tol(y, r2[0] + 10 * r2[1] + 100 * r2[2], 1e-3);
    ibvi_net_free(net);
}
END_TEST

/* ---- the predictor ----------------------------------------------------------- */

/* Naive predictive probabilities: the average over the predictor's noise of
 * softmax(ibvi_net_forward_noise), in double, for members nets[0..count). */
static void naive_probs(ibvi_net *const *nets, int32_t count, int32_t K,
                        const float *noise, int mean, const float *x,
                        int64_t n, double *probs)
{
    const int32_t C = ibvi_net_output_dim(nets[0]);
    const int32_t ns = ibvi_net_noise_size(nets[0]);
    float *out = malloc(sizeof(float) * (size_t)(n * K * C));
    memset(probs, 0, sizeof(double) * (size_t)(n * C));
    for (int32_t m = 0; m < count; m++) {
        if (mean)
            CK_OK(ibvi_net_forward_mean(nets[m], x, n, out));
        else
            CK_OK(ibvi_net_forward_noise(nets[m], x, n, K,
                                         noise + (int64_t)m * K * ns,
                                         (int64_t)K * ns, out));
        const int32_t blocks = mean ? 1 : K;
        for (int64_t row = 0; row < blocks * n; row++) {
            const float *f = out + row * C;
            double mx = f[0], z = 0.0;
            for (int c = 1; c < C; c++)
                mx = f[c] > mx ? f[c] : mx;
            for (int c = 0; c < C; c++)
                z += exp(f[c] - mx);
            for (int c = 0; c < C; c++)
                probs[(row % n) * C + c] +=
                    exp(f[c] - mx) / z / ((double)blocks * count);
        }
    }
    free(out);
}

static void check_predictor(ibvi_net *const *nets, int32_t count, int32_t K,
                            int mean, int64_t n, int64_t batch)
{
    ibvi_predictor *p = NULL;
    if (count == 1)
        CK_OK(ibvi_predictor_create(&p, nets[0], K, 77));
    else
        CK_OK(ibvi_predictor_create_ensemble(&p, nets, count, K, 77));
    if (mean)
        CK_OK(ibvi_predictor_set_mean_network(p, 1));
    if (batch > 0)
        CK_OK(ibvi_predictor_set_batch_size(p, batch));
    const int32_t in = ibvi_net_input_dim(nets[0]);
    const int32_t C = ibvi_net_output_dim(nets[0]);
    const int64_t z_len = (int64_t)count * K * ibvi_net_noise_size(nets[0]);
    float *noise = malloc(sizeof(float) * (size_t)(z_len + 1));
    CK_OK(ibvi_predictor_noise(p, noise, z_len));
    float *x = malloc(sizeof(float) * (size_t)(n * in));
    float *probs = malloc(sizeof(float) * (size_t)(n * C));
    double *want = malloc(sizeof(double) * (size_t)(n * C));
    tu_rng r;
    tu_rng_seed(&r, 31);
    tu_fill_normal_f(&r, x, n * in, 1.0);
    CK_OK(ibvi_predictor_run(p, x, n, probs, NULL, NULL, NULL));
    naive_probs(nets, count, K, noise, mean, x, n, want);
    for (int64_t k = 0; k < n * C; k++)
        ck_assert_msg(fabs(probs[k] - want[k]) <= 1e-5,
                      "K %d mean %d count %d: probs[%lld] = %.8g, naive "
                      "%.8g", (int)K, mean, (int)count, (long long)k,
                      (double)probs[k], want[k]);
    ibvi_predictor_free(p);
    free(noise);
    free(x);
    free(probs);
    free(want);
}

START_TEST(predictor_matches_naive)
{
    ibvi_net *net = all_nets[_i]();
    perturb(net, 40 + (uint64_t)_i);
    const int32_t Ks[] = {1, 4};
    for (int k = 0; k < 2; k++) {
        check_predictor(&net, 1, Ks[k], 0, 7, 0);
        check_predictor(&net, 1, Ks[k], 0, 7, 3); /* several chunks */
    }
    check_predictor(&net, 1, 4, 1, 7, 0);
    ibvi_net_free(net);
}
END_TEST

/* A variational first conv on a shared input: with R = 2 (2 x 3 x 3 -> 4
 * filters at 6 x 6 positions) the predictor's cost model (multiply-adds of
 * the GEMMs and im2cols) takes K materialised samples for K = 1 and 2 and
 * the low-rank identity (one convolution with 3 x 4 filters, then the
 * mixing) for K = 4 and 16; both must give the naive average, also over
 * several chunks and for an ensemble (the identity's buffers are prepared
 * again per member). */
START_TEST(predictor_conv_first)
{
    const int32_t Ks[] = {1, 2, 4, 16};
    ibvi_net *nets[2] = {net_conv(), net_conv()};
    perturb(nets[0], 90);
    perturb(nets[1], 91);
    for (int k = 0; k < 4; k++) {
        check_predictor(nets, 1, Ks[k], 0, 6, 0);
        check_predictor(nets, 1, Ks[k], 0, 6, 4);
        check_predictor(nets, 2, Ks[k], 0, 5, 2);
    }
    ibvi_net_free(nets[0]);
    ibvi_net_free(nets[1]);
    /* The same two paths for a variational first conv without a bias: the
     * identity's big convolution then has no bias either. */
    ibvi_net *bare = net_mnist_resnet_no_bias();
    perturb(bare, 93);
    for (int k = 0; k < 4; k++) {
        check_predictor(&bare, 1, Ks[k], 0, 6, 0);
        check_predictor(&bare, 1, Ks[k], 0, 6, 4);
    }
    ibvi_net_free(bare);
    /* A variational conv that is also the last layer: no identity (its
     * logits go class-major), materialised. */
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 1, 4, 4, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 4, 1, 0, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
    perturb(net, 92);
    check_predictor(&net, 1, 8, 0, 5, 0);
    ibvi_net_free(net);
}
END_TEST

/* A conv and a projection without a bias compute what the same layers with
 * their biases held at 0 compute, bit for bit, forward and backward, with
 * c_out fewer parameters; ibvi_layer_has_bias tells them apart. */
START_TEST(no_bias_equals_zero_bias)
{
    ibvi_net *with = mnist_resnet(0, 21), *bare = mnist_resnet(1, 21);
    const int32_t L = ibvi_net_layer_count(with);
    for (int32_t i = 0; i < L; i++) {
        ibvi_layer *a = tu_layer(with, i), *b = tu_layer(bare, i);
        const int64_t Pa = ibvi_layer_param_count(a),
                      Pb = ibvi_layer_param_count(b);
        const int32_t kind = ibvi_layer_get_kind(a);
        int32_t c = 0, h, w, R = 0;
        CK_OK(ibvi_layer_output_shape(a, &c, &h, &w));
        CK_OK(ibvi_layer_shape(a, NULL, NULL, &R));
        const int weights = kind == IBVI_LAYER_CONV2D ||
                            (kind == IBVI_LAYER_RESIDUAL && Pa > 0);
        ck_assert_int_eq(ibvi_layer_has_bias(a), weights || kind == IBVI_LAYER_DENSE);
        ck_assert_int_eq(ibvi_layer_has_bias(b), kind == IBVI_LAYER_DENSE);
        ck_assert_int_eq(Pa - Pb, weights ? c : 0);
        if (Pa == 0)
            continue;
        /* b's theta = a's weights (a's biases set to 0), same factor rows */
        float *ta = malloc(sizeof(float) * (size_t)Pa);
        float *sa = malloc(sizeof(float) * (size_t)(Pa * R + 1));
        float *sb = malloc(sizeof(float) * (size_t)(Pb * R + 1));
        CK_OK(ibvi_layer_get_mean(a, ta, Pa));
        if (weights)
            for (int64_t p = Pb; p < Pa; p++)
                ta[p] = 0.0f;
        CK_OK(ibvi_layer_set_mean(a, ta, Pa));
        CK_OK(ibvi_layer_set_mean(b, ta, Pb));
        if (R > 0) {
            CK_OK(ibvi_layer_get_factor(a, sa, Pa * R));
            if (weights)
                for (int64_t p = Pb * R; p < Pa * R; p++)
                    sa[p] = 0.0f;
            CK_OK(ibvi_layer_set_factor(a, sa, Pa * R));
            memcpy(sb, sa, sizeof(float) * (size_t)(Pb * R));
            CK_OK(ibvi_layer_set_factor(b, sb, Pb * R));
        }
        free(ta);
        free(sa);
        free(sb);
    }
    const int32_t in = ibvi_net_input_dim(with), out = ibvi_net_output_dim(with);
    const int32_t n = 3, ns = ibvi_net_noise_size(with);
    ck_assert_int_eq(ns, ibvi_net_noise_size(bare));
    float *x = malloc(sizeof(float) * (size_t)(n * in));
    float *z = malloc(sizeof(float) * (size_t)ns);
    float *ya = malloc(sizeof(float) * (size_t)(n * out));
    float *yb = malloc(sizeof(float) * (size_t)(n * out));
    tu_rng r;
    tu_rng_seed(&r, 22);
    tu_fill_normal_f(&r, x, n * in, 1.0);
    tu_fill_normal_f(&r, z, ns, 1.0);
    CK_OK(ibvi_net_forward_noise(with, x, n, 1, z, ns, ya));
    CK_OK(ibvi_net_forward_noise(bare, x, n, 1, z, ns, yb));
    for (int64_t k = 0; k < n * out; k++)
        ck_assert_msg(ya[k] == yb[k], "output %lld: %g vs %g", (long long)k,
                      (double)ya[k], (double)yb[k]);
    tu_fill_normal_f(&r, ya, n * out, 1.0);
    CK_OK(ibvi_net_backward(with, ya, n, out));
    CK_OK(ibvi_net_backward(bare, ya, n, out));
    for (int32_t i = 0; i < L; i++) {
        ibvi_layer *a = tu_layer(with, i), *b = tu_layer(bare, i);
        const int64_t Pb = ibvi_layer_param_count(b);
        if (Pb == 0)
            continue;
        float *ga = malloc(sizeof(float) * (size_t)ibvi_layer_param_count(a));
        float *gb = malloc(sizeof(float) * (size_t)Pb);
        CK_OK(ibvi_layer_get_grad_mean(a, ga, ibvi_layer_param_count(a)));
        CK_OK(ibvi_layer_get_grad_mean(b, gb, Pb));
        for (int64_t p = 0; p < Pb; p++)
            ck_assert_msg(ga[p] == gb[p], "layer %d grad %lld: %g vs %g",
                          (int)i, (long long)p, (double)ga[p], (double)gb[p]);
        free(ga);
        free(gb);
    }
    free(x);
    free(z);
    free(ya);
    free(yb);
    ibvi_net_free(with);
    ibvi_net_free(bare);
}
END_TEST

START_TEST(predictor_ensemble)
{
    ibvi_net *nets[3];
    for (int m = 0; m < 3; m++) {
        nets[m] = net_projection();
        perturb(nets[m], 60 + (uint64_t)m);
    }
    check_predictor(nets, 3, 2, 0, 5, 0);
    check_predictor(nets, 3, 1, 1, 5, 2);
    /* Another residual source: another architecture. */
    ibvi_net *other = NULL;
    CK_OK(ibvi_net_create_image(&other, 2, 2, 2, NULL));
    CK_OK(ibvi_net_add_activation(other, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_groupnorm(other, 1, 1e-3f));
    CK_OK(ibvi_net_add_dense(other, 4, 2));
    CK_OK(ibvi_net_add_activation(other, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_residual(other, 1, 2));
    CK_OK(ibvi_net_add_activation(other, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_residual(other, 1, 2));
    CK_OK(ibvi_net_add_residual(other, -1, 2));
    CK_OK(ibvi_net_add_residual(other, 3, 0)); /* 3, not 4 */
    CK_OK(ibvi_net_add_dense(other, 3, 1));
    CK_OK(ibvi_net_init(other, IBVI_PARAM_MUP, 1));
    ibvi_net *mixed[2] = {nets[0], other};
    ibvi_predictor *p = NULL;
    CK_STATUS(ibvi_predictor_create_ensemble(&p, mixed, 2, 2, 1),
              IBVI_ERR_SHAPE);
    ibvi_net_free(other);
    for (int m = 0; m < 3; m++)
        ibvi_net_free(nets[m]);
}
END_TEST

/* ---- training ------------------------------------------------------------------ */

START_TEST(resnet_trains)
{
    ibvi_net *net = NULL;
    const int32_t D = 8, C = 3, H = 16;
    CK_OK(ibvi_net_create(&net, D, NULL));
    CK_OK(ibvi_net_add_dense(net, H, 2));                  /* 0 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));    /* 1 */
    for (int b = 0; b < 2; b++) {
        const int32_t src = ibvi_net_layer_count(net) - 1;
        CK_OK(ibvi_net_add_groupnorm(net, 4, 1e-5f));
        CK_OK(ibvi_net_add_dense(net, H, 0));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_residual(net, src, 0));
    }
    CK_OK(ibvi_net_add_residual(net, -1, 1)); /* the input, projected */
    CK_OK(ibvi_net_add_dense(net, C, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 9));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 3e-3f));
    enum { N = 96 };
    float x[N * 8];
    int32_t y[N];
    tu_rng r;
    tu_rng_seed(&r, 5);
    tu_fill_normal_f(&r, x, N * D, 1.0);
    for (int i = 0; i < N; i++) /* labels from a fixed nonlinear rule */
        y[i] = (x[i * D] * x[i * D + 1] > 0.0f) + (x[i * D + 2] > 0.5f);
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 300; step++) {
        float loss = NAN;
        CK_OK(ibvi_train_step(net, opt, x, N, 1, IBVI_LOSS_SOFTMAX_XENT, y,
                              NULL, &loss));
        ck_assert(isfinite(loss));
        if (step < 10)
            first += loss / 10.0;
        if (step >= 290)
            last += loss / 10.0;
    }
    printf("%s: loss %.4f -> %.4f\n", "training", first, last);
    ck_assert_msg(last < 0.75 * first, "loss %.4f -> %.4f", first, last);
    /* The trained stack still predicts like the naive average. */
    check_predictor(&net, 1, 4, 0, 9, 4);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* A conv ResNet: a variational stem conv, a block with group norm and an
 * identity skip, a strided block with a projected skip, global average
 * pooling, a variational classifier; the labels say which half of the
 * image is brighter. */
START_TEST(conv_resnet_trains)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 1, 8, 8, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 8, 3, 1, 1, 2));      /* 0: (8,8,8) */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));  /* 1 */
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));        /* 2 */
    CK_OK(ibvi_net_add_conv2d(net, 8, 3, 1, 1, 0));      /* 3 */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));  /* 4 */
    CK_OK(ibvi_net_add_residual(net, 1, 0));             /* 5 */
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-5f));        /* 6 */
    CK_OK(ibvi_net_add_conv2d(net, 16, 3, 2, 1, 0));     /* 7: (16,4,4) */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));  /* 8 */
    CK_OK(ibvi_net_add_residual(net, 5, 2));             /* 9 */
    CK_OK(ibvi_net_add_global_avgpool(net));             /* 10 */
    CK_OK(ibvi_net_add_dense(net, 2, 2));                /* 11 */
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 21));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 1e-2f));
    enum { N = 64, D = 64 };
    float x[N * D];
    int32_t y[N];
    tu_rng r;
    tu_rng_seed(&r, 22);
    tu_fill_normal_f(&r, x, N * D, 1.0);
    for (int i = 0; i < N; i++) {
        double top = 0.0, bottom = 0.0;
        for (int k = 0; k < D / 2; k++) {
            top += x[i * D + k];
            bottom += x[i * D + D / 2 + k];
        }
        y[i] = top > bottom;
    }
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 200; step++) {
        float loss = NAN;
        CK_OK(ibvi_train_step(net, opt, x, N, 1, IBVI_LOSS_SOFTMAX_XENT, y,
                              NULL, &loss));
        ck_assert(isfinite(loss));
        if (step < 10)
            first += loss / 10.0;
        if (step >= 190)
            last += loss / 10.0;
    }
    printf("%s: loss %.4f -> %.4f\n", "training", first, last);
    ck_assert_msg(last < 0.75 * first, "loss %.4f -> %.4f", first, last);
    check_predictor(&net, 1, 8, 0, 9, 4);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("resnet_layers");
    TCase *tc = tu_tcase("gradients");
    tcase_add_loop_test(tc, gradients_one_sample, 0, NET_COUNT);
    tcase_add_loop_test(tc, gradients_three_samples, 0, NET_COUNT);
    tcase_add_test(tc, gradients_mean_network);
    suite_add_tcase(s, tc);
    tc = tu_tcase("builders");
    tcase_add_test(tc, groupnorm_errors);
    tcase_add_test(tc, residual_errors);
    tcase_add_test(tc, residual_values);
    suite_add_tcase(s, tc);
    tc = tu_tcase("predictor");
    tcase_add_loop_test(tc, predictor_matches_naive, 0, NET_COUNT);
    tcase_add_test(tc, no_bias_equals_zero_bias);
    tcase_add_test(tc, predictor_ensemble);
    tcase_add_test(tc, predictor_conv_first);
    suite_add_tcase(s, tc);
    tc = tu_tcase("training");
    tcase_add_test(tc, resnet_trains);
    tcase_add_test(tc, conv_resnet_trains);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }

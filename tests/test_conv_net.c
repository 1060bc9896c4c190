/*
 * libibvi tests - convolution, pooling and flatten layers end to end through
 * the public API (include/ibvi/net.h, docs/image-layers.md).
 *
 * - Gradients: central differences of the loss with respect to every mean
 *   and factor entry of every layer with parameters, through networks that
 *   hold each image kind (conv2d deterministic and variational, max, average
 *   and global average pooling, flatten), with fixed noise
 *   (ibvi_net_forward_noise) so perturbed passes see the same z; and stride
 *   and padding edge cases (kernel as large as the padded input, stride
 *   larger than the kernel, overlapping pools, a conv after a dense layer).
 * - A conv layer's output against a naive direct convolution in double,
 *   from the layer's mean (and mean + S z for a variational one).
 * - Shapes of a LeNet-5 stack, builder errors and their messages.
 * - Training lowers the loss; the predictor and an ensemble of conv nets
 *   equal the average of softmax(forward_noise) with the predictor's noise.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/predictor.h"
#include "testutil.h"

#define REL_TOL 2e-2
#define ABS_TOL 2e-3

static int close_enough(double a, double b)
{
    const double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= REL_TOL * m + ABS_TOL;
}

static float *alloc_f(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    ck_assert_ptr_nonnull(p);
    return p;
}

static ibvi_net *image_net(int32_t c, int32_t h, int32_t w)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, c, h, w, NULL));
    return net;
}

static void check_shape(ibvi_net *net, int32_t i, int32_t c, int32_t h,
                        int32_t w)
{
    int32_t oc = -1, oh = -1, ow = -1;
    CK_OK(ibvi_layer_output_shape(tu_layer(net, i), &oc, &oh, &ow));
    ck_assert_msg(oc == c && oh == h && ow == w,
                  "layer %d: shape (%d,%d,%d), expected (%d,%d,%d)", (int)i,
                  (int)oc, (int)oh, (int)ow, (int)c, (int)h, (int)w);
}

/* ---- finite differences ------------------------------------------------- */

typedef struct problem {
    ibvi_net *net;
    int32_t loss_kind;
    int64_t n;
    int32_t samples, in_dim, out_dim;
    float *x, *targets, *z, *out, *grad_out;
    int32_t *labels;
    int64_t z_len;
} problem;

static void problem_init(problem *pr, ibvi_net *net, int32_t loss_kind,
                         int64_t n, int32_t samples, uint64_t seed)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    memset(pr, 0, sizeof *pr);
    pr->net = net;
    pr->loss_kind = loss_kind;
    pr->n = n;
    pr->samples = samples;
    pr->in_dim = ibvi_net_input_dim(net);
    pr->out_dim = ibvi_net_output_dim(net);
    pr->x = alloc_f(n * pr->in_dim);
    tu_fill_normal_f(&rng, pr->x, n * pr->in_dim, 1.0);
    pr->targets = alloc_f(n * pr->out_dim);
    tu_fill_normal_f(&rng, pr->targets, n * pr->out_dim, 1.0);
    pr->labels = malloc(sizeof(int32_t) * (size_t)n);
    ck_assert_ptr_nonnull(pr->labels);
    for (int64_t i = 0; i < n; i++)
        pr->labels[i] = (int32_t)(i % pr->out_dim);
    pr->z_len = (int64_t)ibvi_net_noise_size(net) * samples;
    pr->z = alloc_f(pr->z_len);
    tu_fill_normal_f(&rng, pr->z, pr->z_len, 1.0);
    pr->out = alloc_f(n * samples * pr->out_dim);
    pr->grad_out = alloc_f(n * samples * pr->out_dim);
}

static void problem_free(problem *pr)
{
    ibvi_net_free(pr->net);
    free(pr->x);
    free(pr->targets);
    free(pr->labels);
    free(pr->z);
    free(pr->out);
    free(pr->grad_out);
}

static double problem_loss(problem *pr, float *grad)
{
    CK_OK(ibvi_net_forward_noise(pr->net, pr->x, pr->n, pr->samples,
                                 pr->z_len ? pr->z : NULL, pr->z_len,
                                 pr->out));
    float loss = NAN;
    CK_OK(ibvi_loss(pr->loss_kind, pr->out, pr->n * pr->samples, pr->out_dim,
                    pr->labels, pr->targets, pr->n, &loss, grad));
    ck_assert(isfinite(loss));
    return loss;
}

typedef int (*setter_fn)(ibvi_layer *, const float *, int64_t);

/* Compares every mean and factor gradient entry of every layer with
 * parameters against central differences; a max-pool switch or ReLU kink
 * inside [theta - eps, theta + eps] is accepted when the one-sided
 * differences disagree and the analytic value matches one of them. */
static void check_gradients(problem *pr, double eps, const char *what)
{
    problem_loss(pr, pr->grad_out);
    CK_OK(ibvi_net_backward(pr->net, pr->grad_out, pr->n * pr->samples,
                            pr->out_dim));
    int checked = 0;
    const int32_t layers = ibvi_net_layer_count(pr->net);
    for (int32_t li = 0; li < layers; li++) {
        ibvi_layer *layer = tu_layer(pr->net, li);
        const int64_t P = ibvi_layer_param_count(layer);
        if (P == 0)
            continue;
        int32_t rank = -1;
        CK_OK(ibvi_layer_shape(layer, NULL, NULL, &rank));
        for (int part = 0; part < 2 && (part == 0 || rank > 0); part++) {
            const int64_t len = part == 0 ? P : P * rank;
            float *buf = alloc_f(len), *g = alloc_f(len);
            setter_fn set;
            if (part == 0) {
                CK_OK(ibvi_layer_get_mean(layer, buf, len));
                CK_OK(ibvi_layer_get_grad_mean(layer, g, len));
                set = ibvi_layer_set_mean;
            } else {
                CK_OK(ibvi_layer_get_factor(layer, buf, len));
                CK_OK(ibvi_layer_get_grad_factor(layer, g, len));
                set = ibvi_layer_set_factor;
            }
            double gnorm = 0.0;
            for (int64_t p = 0; p < len; p++) {
                gnorm += (double)g[p] * g[p];
                const float orig = buf[p];
                const double l0 = problem_loss(pr, NULL);
                buf[p] = orig + (float)eps;
                const double hp = (double)buf[p] - orig;
                CK_OK(set(layer, buf, len));
                const double lp = problem_loss(pr, NULL);
                buf[p] = orig - (float)eps;
                const double hm = orig - (double)buf[p];
                CK_OK(set(layer, buf, len));
                const double lm = problem_loss(pr, NULL);
                buf[p] = orig;
                CK_OK(set(layer, buf, len));
                const double c = (lp - lm) / (hp + hm);
                const double f = (lp - l0) / hp, b = (l0 - lm) / hm;
                if (close_enough(g[p], c))
                    continue;
                ck_assert_msg(!close_enough(f, b) &&
                                  (close_enough(g[p], f) ||
                                   close_enough(g[p], b)),
                              "%s: layer %d %s[%lld]: analytic %.6g, finite "
                              "difference %.6g (fwd %.6g, bwd %.6g)",
                              what, (int)li, part ? "factor" : "mean",
                              (long long)p, g[p], c, f, b);
            }
            ck_assert_msg(sqrt(gnorm) > 1e-4,
                          "%s: layer %d %s gradient is (near) zero", what,
                          (int)li, part ? "factor" : "mean");
            checked++;
            free(buf);
            free(g);
        }
    }
    ck_assert_int_gt(checked, 0);
}

/* Every image kind in one network: a variational conv with stride and
 * padding, a ReLU, an overlapping max pool, a rectangular deterministic
 * conv, an average pool, flatten and a variational dense layer. */
START_TEST(test_grad_all_kinds)
{
    ibvi_net *net = image_net(2, 7, 6);
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 2, 1, 2)); /* (3, 4, 3) */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_maxpool(net, 2, 1));          /* (3, 3, 2) */
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = 4;
    o.kernel_h = 2;
    o.kernel_w = 3;
    o.pad_h = 1;
    o.pad_w = 1;
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));          /* (4, 4, 2) */
    CK_OK(ibvi_net_add_avgpool(net, 2, 1));          /* (4, 3, 1) */
    check_shape(net, 0, 3, 4, 3);
    check_shape(net, 2, 3, 3, 2);
    check_shape(net, 3, 4, 4, 2);
    check_shape(net, 4, 4, 3, 1);
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 3, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 11));
    problem pr;
    problem_init(&pr, net, IBVI_LOSS_SQUARED, 3, 2, 5);
    check_gradients(&pr, 2e-3, "all kinds");
    problem_free(&pr);
}
END_TEST

/* A variational first conv, global average pooling, softmax loss; one
 * sample and then three. */
START_TEST(test_grad_global_avgpool)
{
    for (int32_t samples = 1; samples <= 3; samples += 2) {
        ibvi_net *net = image_net(3, 5, 5);
        CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 3));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
        CK_OK(ibvi_net_add_global_avgpool(net));
        check_shape(net, 2, 4, 1, 1);
        CK_OK(ibvi_net_add_dense(net, 3, 0));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
        problem pr;
        problem_init(&pr, net, IBVI_LOSS_SOFTMAX_XENT, 4, samples, 9);
        check_gradients(&pr, 1e-2, "global avgpool");
        problem_free(&pr);
    }
}
END_TEST

/* Geometry edge cases, each a conv (variational, rank 1) then what
 * follows, ending in a dense layer. */
typedef struct edge {
    const char *name;
    int32_t c, h, w;
    ibvi_conv2d_options conv;
    int32_t pool;            /* 0 none, 1 max, 2 avg */
    int32_t pool_k, pool_s;
    int32_t oc, oh, ow;      /* the conv's output shape */
} edge;

START_TEST(test_grad_edges)
{
    const edge cases[] = {
        /* kernel as large as the padded input: one output position */
        {"kernel = padded input", 1, 3, 4, {1, 2, 5, 6, 1, 1, 1, 1, 1, 0}, 0, 0, 0,
         2, 1, 1},
        /* stride larger than the kernel: rows and columns never read */
        {"stride > kernel", 2, 7, 7, {1, 2, 2, 2, 3, 3, 0, 0, 1, 0}, 1, 2, 1,
         2, 2, 2},
        /* padding kernel - 1 and a stride that leaves a trailing column */
        {"pad = kernel - 1", 1, 4, 5, {1, 3, 3, 3, 2, 2, 2, 2, 1, 0}, 2, 2, 1,
         3, 3, 4},
        /* 1x1 kernel with stride 2, then an overlapping max pool */
        {"1x1 stride 2", 3, 6, 5, {1, 2, 1, 1, 2, 2, 0, 0, 1, 0}, 1, 3, 1, 2, 3,
         3},
        /* asymmetric everything, overlapping average pool */
        {"asymmetric", 2, 6, 8, {1, 3, 3, 2, 1, 3, 1, 0, 1, 0}, 2, 2, 1, 3, 6,
         3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const edge *e = &cases[i];
        ibvi_net *net = image_net(e->c, e->h, e->w);
        CK_OK(ibvi_net_add_conv2d_ex(net, &e->conv));
        check_shape(net, 0, e->oc, e->oh, e->ow);
        if (e->pool == 1)
            CK_OK(ibvi_net_add_maxpool(net, e->pool_k, e->pool_s));
        else if (e->pool == 2)
            CK_OK(ibvi_net_add_avgpool(net, e->pool_k, e->pool_s));
        CK_OK(ibvi_net_add_dense(net, 2, 1));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 100 + i));
        problem pr;
        problem_init(&pr, net, IBVI_LOSS_SQUARED, 3, 2, 17 + i);
        check_gradients(&pr, 1e-2, e->name);
        problem_free(&pr);
    }
}
END_TEST

/* A conv after a dense layer sees (D, 1, 1): a 1x1 kernel is a dense layer
 * over the D channels. */
START_TEST(test_grad_conv_after_dense)
{
    ibvi_net *net = image_net(2, 3, 3);
    CK_OK(ibvi_net_add_dense(net, 5, 0));
    CK_OK(ibvi_net_add_conv2d(net, 4, 1, 1, 0, 2));
    check_shape(net, 1, 4, 1, 1);
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 4));
    problem pr;
    problem_init(&pr, net, IBVI_LOSS_SQUARED, 4, 2, 8);
    check_gradients(&pr, 1e-2, "conv after dense");
    problem_free(&pr);
}
END_TEST

/* ---- the convolution against a naive one --------------------------------- */

/* y = conv(theta, x) for one example, in double, straight from the
 * definition in net.h. */
static void naive_conv(const double *theta, const float *x, int32_t c,
                       int32_t h, int32_t w, const ibvi_conv2d_options *o,
                       int32_t ho, int32_t wo, double *y)
{
    const int32_t kh = o->kernel_h, kw = o->kernel_w, co = o->out_channels;
    const double *bias = theta + (int64_t)co * c * kh * kw;
    for (int32_t oc = 0; oc < co; oc++)
        for (int32_t p = 0; p < ho; p++)
            for (int32_t q = 0; q < wo; q++) {
                double s = bias[oc];
                for (int32_t ci = 0; ci < c; ci++)
                    for (int32_t i = 0; i < kh; i++)
                        for (int32_t j = 0; j < kw; j++) {
                            const int32_t r = p * o->stride_h - o->pad_h + i;
                            const int32_t t = q * o->stride_w - o->pad_w + j;
                            if (r < 0 || r >= h || t < 0 || t >= w)
                                continue;
                            s += theta[((oc * c + ci) * kh + i) * kw + j] *
                                 x[(ci * h + r) * w + t];
                        }
                y[(oc * ho + p) * wo + q] = s;
            }
}

START_TEST(test_conv_matches_naive)
{
    const int32_t c = 3, h = 9, w = 7, n = 5, R = 2;
    ibvi_conv2d_options o = {IBVI_CONV2D_OPTIONS_VERSION, 4, 3, 2, 2, 1, 1, 1,
                             R, 0};
    const int32_t ho = (h + 2 - 3) / 2 + 1, wo = (w + 2 - 2) / 1 + 1;
    ibvi_net *net = image_net(c, h, w);
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));
    check_shape(net, 0, 4, ho, wo);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 21));
    ibvi_layer *layer = tu_layer(net, 0);
    int64_t P = 0, PR = 0;
    float *mu = tu_get_mean(layer, &P);
    float *S = tu_get_factor(layer, &PR);
    ck_assert_int_eq(P, 4 * c * 3 * 2 + 4);
    ck_assert_int_eq(PR, P * R);
    tu_rng rng;
    tu_rng_seed(&rng, 77);
    float *x = alloc_f((int64_t)n * c * h * w);
    tu_fill_normal_f(&rng, x, (int64_t)n * c * h * w, 1.0);
    const int32_t out_dim = 4 * ho * wo;
    ck_assert_int_eq(ibvi_net_output_dim(net), out_dim);
    float *y = alloc_f((int64_t)n * out_dim);
    double *ref = malloc(sizeof(double) * (size_t)out_dim);
    double *theta = malloc(sizeof(double) * (size_t)P);
    ck_assert(ref && theta);
    float z[2] = {0.7f, -1.3f};
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the mean network; pass 1: theta = mu + S z. */
        for (int64_t p = 0; p < P; p++)
            theta[p] = mu[p] + (pass ? (double)S[p * R] * z[0] +
                                           (double)S[p * R + 1] * z[1]
                                     : 0.0);
        if (pass == 0)
            CK_OK(ibvi_net_forward_mean(net, x, n, y));
        else
            CK_OK(ibvi_net_forward_noise(net, x, n, 1, z, R, y));
        for (int32_t b = 0; b < n; b++) {
            naive_conv(theta, x + (int64_t)b * c * h * w, c, h, w, &o, ho, wo,
                       ref);
            for (int32_t k = 0; k < out_dim; k++)
                ck_assert_msg(fabs(y[(int64_t)b * out_dim + k] - ref[k]) <=
                                  1e-4 * (1.0 + fabs(ref[k])),
                              "pass %d example %d value %d: %.7g, naive %.7g",
                              pass, (int)b, (int)k,
                              y[(int64_t)b * out_dim + k], ref[k]);
        }
    }
    free(mu);
    free(S);
    free(x);
    free(y);
    free(ref);
    free(theta);
    ibvi_net_free(net);
}
END_TEST

/* Pools and flatten, checked by value on a hand-made input. */
START_TEST(test_pool_values)
{
    /* (1, 3, 4): 0 1 2 3 / 4 5 6 7 / 8 9 10 11 */
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    const struct {
        int kind; /* 1 max, 2 avg, 3 global */
        int32_t k, s;
        int32_t oh, ow;
        float expect[6];
    } cases[] = {
        {1, 2, 2, 1, 2, {5, 7}},
        {1, 2, 1, 2, 3, {5, 6, 7, 9, 10, 11}},
        {2, 2, 2, 1, 2, {2.5f, 4.5f}},
        {2, 3, 1, 1, 2, {5, 6}},
        {3, 0, 0, 1, 1, {5.5f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ibvi_net *net = image_net(1, 3, 4);
        if (cases[i].kind == 1)
            CK_OK(ibvi_net_add_maxpool(net, cases[i].k, cases[i].s));
        else if (cases[i].kind == 2)
            CK_OK(ibvi_net_add_avgpool(net, cases[i].k, cases[i].s));
        else
            CK_OK(ibvi_net_add_global_avgpool(net));
        check_shape(net, 0, 1, cases[i].oh, cases[i].ow);
        CK_OK(ibvi_net_add_flatten(net));
        check_shape(net, 1, cases[i].oh * cases[i].ow, 1, 1);
        /* A 1x1 conv with weight 1 and bias 0 shows the pooled values. */
        CK_OK(ibvi_net_add_conv2d(net, 1, 1, 1, 0, 0));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
        ibvi_layer *conv = tu_layer(net, 2);
        const int32_t d = cases[i].oh * cases[i].ow;
        ck_assert_int_eq(ibvi_layer_param_count(conv), d + 1);
        /* W (1 x d) picks one pooled value at a time. */
        float theta[7] = {0};
        for (int32_t pick = 0; pick < d; pick++) {
            for (int32_t k = 0; k < d; k++)
                theta[k] = k == pick ? 1.0f : 0.0f;
            theta[d] = 0.0f;
            CK_OK(ibvi_layer_set_mean(conv, theta, d + 1));
            float y = NAN;
            CK_OK(ibvi_net_forward_mean(net, x, 1, &y));
            ck_assert_msg(fabsf(y - cases[i].expect[pick]) < 1e-5f,
                          "case %zu value %d: %g, expected %g", i, (int)pick,
                          y, cases[i].expect[pick]);
        }
        ibvi_net_free(net);
    }
}
END_TEST

/* ---- shapes and builders --------------------------------------------------- */

START_TEST(test_lenet_shapes)
{
    ibvi_net *net = image_net(1, 28, 28);
    CK_OK(ibvi_net_add_conv2d(net, 6, 5, 1, 2, 10));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_conv2d(net, 16, 5, 1, 0, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_dense(net, 120, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 84, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 10, 10));
    const int32_t expect[][3] = {{6, 28, 28}, {6, 28, 28}, {6, 14, 14},
                                 {16, 10, 10}, {16, 10, 10}, {16, 5, 5},
                                 {120, 1, 1}, {120, 1, 1}, {84, 1, 1},
                                 {84, 1, 1}, {10, 1, 1}};
    ck_assert_int_eq(ibvi_net_layer_count(net), 11);
    for (int32_t i = 0; i < 11; i++)
        check_shape(net, i, expect[i][0], expect[i][1], expect[i][2]);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    const int32_t kinds[] = {IBVI_LAYER_CONV2D, IBVI_LAYER_ACTIVATION,
                             IBVI_LAYER_MAXPOOL, IBVI_LAYER_CONV2D};
    for (int32_t i = 0; i < 4; i++)
        ck_assert_int_eq(ibvi_layer_get_kind(tu_layer(net, i)), kinds[i]);
    ck_assert_int_eq(ibvi_layer_param_count(tu_layer(net, 0)), 6 * 25 + 6);
    ck_assert_int_eq(ibvi_layer_param_count(tu_layer(net, 3)),
                     16 * 6 * 25 + 16);
    ck_assert_int_eq(ibvi_layer_param_count(tu_layer(net, 6)),
                     120 * 400 + 120);
    ck_assert_int_eq(ibvi_net_noise_size(net), 20);
    /* Roles among the weight-matrix layers (conv, conv, dense x 3). */
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 0)), IBVI_ROLE_INPUT);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 3)), IBVI_ROLE_HIDDEN);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 2)), IBVI_ROLE_NONE);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 10)), IBVI_ROLE_OUTPUT);
    ibvi_net_free(net);
}
END_TEST

/* muP fans of a conv: weights fan_in = C_in kh kw, fan_out = C_out kh kw
 * (read back through the prior std and the multipliers). */
START_TEST(test_conv_fans)
{
    ibvi_net *net = image_net(3, 8, 8);
    CK_OK(ibvi_net_add_conv2d(net, 5, 3, 1, 1, 0)); /* input role */
    CK_OK(ibvi_net_add_conv2d(net, 7, 3, 1, 0, 0)); /* hidden */
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 2, 0));           /* output */
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    float ws = 0, bs = 0, wm = 0, bm = 0;
    CK_OK(ibvi_layer_init_std(tu_layer(net, 0), &ws, &bs));
    ck_assert_float_eq_tol(ws, 1.0f / sqrtf(27.0f), 1e-6f);
    ck_assert_float_eq_tol(bs, 1.0f, 1e-6f);
    CK_OK(ibvi_layer_lr_multipliers(tu_layer(net, 0), IBVI_OPT_SGD, &wm, &bm));
    ck_assert_float_eq_tol(wm, 5.0f * 9.0f, 1e-4f); /* fan_out = C_out kh kw */
    ck_assert_float_eq_tol(bm, 5.0f, 1e-4f);        /* biases: C_out       */
    CK_OK(ibvi_layer_init_std(tu_layer(net, 1), &ws, &bs));
    ck_assert_float_eq_tol(ws, 1.0f / sqrtf(45.0f), 1e-6f);
    CK_OK(ibvi_layer_lr_multipliers(tu_layer(net, 1), IBVI_OPT_ADAM, &wm, &bm));
    ck_assert_float_eq_tol(wm, 1.0f / 45.0f, 1e-6f);
    ck_assert_float_eq_tol(bm, 1.0f, 1e-6f);
    ibvi_net_free(net);
}
END_TEST

static int message_has(const char *needle)
{
    return strstr(ibvi_last_error(), needle) != NULL;
}

START_TEST(test_builder_errors)
{
    ibvi_net *net = image_net(1, 4, 4);
    ck_assert_int_eq(ibvi_net_add_conv2d(net, 2, 5, 1, 0, 0), IBVI_ERR_SHAPE);
    ck_assert_msg(message_has("ibvi_net_add_conv2d: kernel 5x5 is larger"),
                  "%s", ibvi_last_error());
    ck_assert_int_eq(ibvi_net_add_conv2d(net, 2, 3, 1, 3, 0),
                     IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("ibvi_net_add_conv2d:"), "%s", ibvi_last_error());
    ck_assert_int_eq(ibvi_net_add_maxpool(net, 5, 1), IBVI_ERR_SHAPE);
    ck_assert_msg(message_has("ibvi_net_add_maxpool: kernel 5x5"), "%s",
                  ibvi_last_error());
    ck_assert_int_eq(ibvi_net_add_avgpool(net, 2, 0), IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("ibvi_net_add_avgpool: stride"), "%s",
                  ibvi_last_error());
    ck_assert_int_eq(ibvi_net_add_conv2d_ex(net, NULL), IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("ibvi_net_add_conv2d_ex: options is NULL"), "%s",
                  ibvi_last_error());
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = 2;
    o.version = 3;
    ck_assert_int_eq(ibvi_net_add_conv2d_ex(net, &o), IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("ibvi_net_add_conv2d_ex: options->version = 3"),
                  "%s", ibvi_last_error());
    o.version = IBVI_CONV2D_OPTIONS_VERSION;
    o.no_bias = 2;
    ck_assert_int_eq(ibvi_net_add_conv2d_ex(net, &o), IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("ibvi_net_add_conv2d_ex: options->no_bias = 2"),
                  "%s", ibvi_last_error());
    o.no_bias = 0;
    o.version = IBVI_CONV2D_OPTIONS_VERSION;
    o.rank = 1;
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));   /* (1, 2, 2) */
    ck_assert_int_eq(ibvi_net_add_maxpool(net, 2, 2), IBVI_OK); /* (1,1,1) */
    /* A pool on a 1x1 input. */
    ck_assert_int_eq(ibvi_net_add_avgpool(net, 2, 2), IBVI_ERR_SHAPE);
    ck_assert_int_eq(ibvi_net_add_conv2d(net, 2, 2, 1, 0, 0), IBVI_ERR_SHAPE);
    CK_OK(ibvi_net_add_global_avgpool(net));  /* 1x1 -> 1x1 is fine */
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));   /* 1x1 kernel */
    /* Pooling and flatten are deterministic and have no parameters. */
    ck_assert_int_eq(ibvi_net_layer_count(net), 4);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    ibvi_layer *pool = tu_layer(net, 0);
    float buf[4];
    ck_assert_int_eq(ibvi_layer_param_count(pool), 0);
    ck_assert_int_eq(ibvi_layer_get_mean(pool, buf, 4), IBVI_ERR_INVALID_ARG);
    ck_assert_msg(message_has("no parameters"), "%s", ibvi_last_error());
    ck_assert_int_eq(ibvi_layer_get_activation(pool), IBVI_ERR_INVALID_ARG);
    ck_assert_int_eq(ibvi_layer_get_kind(pool), IBVI_LAYER_MAXPOOL);
    ck_assert_int_eq(ibvi_layer_get_kind(tu_layer(net, 2)),
                     IBVI_LAYER_GLOBAL_AVGPOOL);
    int32_t in = 0, out = 0, rank = -1;
    CK_OK(ibvi_layer_shape(tu_layer(net, 3), &in, &out, &rank));
    ck_assert(in == 1 && out == 2 && rank == 1);
    ibvi_net_free(net);
    /* A network that ends in a pool cannot be initialised. */
    net = image_net(1, 4, 4);
    CK_OK(ibvi_net_add_conv2d(net, 2, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_avgpool(net, 2, 2));
    ck_assert_int_eq(ibvi_net_init(net, IBVI_PARAM_SP, 1), IBVI_ERR_STATE);
    CK_OK(ibvi_net_add_flatten(net));
    ck_assert_int_eq(ibvi_layer_get_kind(tu_layer(net, 2)),
                     IBVI_LAYER_FLATTEN);
    ck_assert_int_eq(ibvi_net_init(net, IBVI_PARAM_SP, 1), IBVI_ERR_STATE);
    ibvi_net_free(net);
}
END_TEST

/* ---- training and prediction ------------------------------------------- */

static ibvi_net *convnet(uint64_t seed, int32_t rank, int32_t rank2)
{
    ibvi_net *net = image_net(2, 8, 8);
    CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, rank));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_conv2d(net, 6, 3, 1, 0, rank2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_global_avgpool(net));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 3, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

static ibvi_net *small_convnet(uint64_t seed, int32_t rank)
{
    return convnet(seed, rank, 0);
}

static double mean_loss(ibvi_net *net, const float *x, int64_t n,
                        const int32_t *labels)
{
    float *out = alloc_f(n * 3), loss = NAN;
    CK_OK(ibvi_net_forward_mean(net, x, n, out));
    CK_OK(ibvi_loss(IBVI_LOSS_SOFTMAX_XENT, out, n, 3, labels, NULL, n, &loss,
                    NULL));
    free(out);
    return loss;
}

START_TEST(test_train_lowers_loss)
{
    const int64_t n = 24;
    ibvi_net *net = small_convnet(3, 2);
    tu_rng rng;
    tu_rng_seed(&rng, 12);
    float *x = alloc_f(n * 128);
    int32_t labels[24];
    tu_fill_normal_f(&rng, x, n * 128, 1.0);
    for (int64_t i = 0; i < n; i++) {
        labels[i] = (int32_t)(i % 3);
        /* A class signal: brighten one channel's quadrant per class. */
        for (int32_t k = 0; k < 16; k++)
            x[i * 128 + labels[i] * 32 + k] += 2.0f;
    }
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
    const double before = mean_loss(net, x, n, labels);
    for (int step = 0; step < 100; step++) {
        float loss = NAN;
        CK_OK(ibvi_train_step(net, opt, x, n, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &loss));
        ck_assert(isfinite(loss));
    }
    const double after = mean_loss(net, x, n, labels);
    ck_assert_msg(after < 0.5 * before, "loss %g -> %g", before, after);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(x);
}
END_TEST

/* The predictor against the naive average of softmax(forward_noise) with
 * its noise (tu_predict_vs_naive), on 7 inputs. */
static void check_predictor(ibvi_net *const *nets, int32_t count, int32_t K,
                            uint64_t seed)
{
    tu_naive_predict r;
    tu_predict_vs_naive(nets, count, K, seed, 7, &r);
    double spread = 0.0;
    for (int64_t i = 0; i < r.n * r.classes; i++)
        spread += fabs(r.ref[i] - 1.0 / r.classes);
    ck_assert_msg(r.worst <= 1e-5, "predictor vs forward_noise: %g", r.worst);
    ck_assert_msg(spread > 1e-3, "the probabilities are all uniform");
    tu_naive_predict_free(&r);
}

START_TEST(test_predictor_variational_conv)
{
    ibvi_net *net = small_convnet(5, 3);
    check_predictor(&net, 1, 1, 40);
    check_predictor(&net, 1, 6, 41);
    /* With the shared rows of a deterministic first conv too. */
    ibvi_net *det = small_convnet(6, 0);
    check_predictor(&det, 1, 4, 42);
    /* A variational second conv: the rows fan out there. */
    ibvi_net *mid = convnet(7, 0, 4);
    check_predictor(&mid, 1, 5, 43);
    ibvi_net_free(net);
    ibvi_net_free(det);
    ibvi_net_free(mid);
}
END_TEST

START_TEST(test_ensemble_of_convnets)
{
    ibvi_net *nets[3] = {small_convnet(7, 2), small_convnet(8, 2),
                         small_convnet(9, 2)};
    check_predictor(nets, 3, 2, 50);
    check_predictor(nets, 3, 1, 51);
    for (int i = 0; i < 3; i++)
        ibvi_net_free(nets[i]);
}
END_TEST

/* The ensemble's same-architecture check compares the windows, not only
 * the shapes and counts: a conv of 3x1 and one of 1x3 (P = 2 * 3 + 2 and
 * output (2, 7, 7) both), a max pool of 2 and one of 3 (stride 2: output
 * (2, 3, 3) both). */
static ibvi_net *window_net(int32_t kh, int32_t pool, uint64_t seed)
{
    ibvi_net *net = image_net(1, 7, 7);
    ibvi_conv2d_options o = {IBVI_CONV2D_OPTIONS_VERSION, 2, kh, 4 - kh, 1,
                             1, kh / 2, (4 - kh) / 2, 0, 0};
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));
    check_shape(net, 0, 2, 7, 7);
    CK_OK(ibvi_net_add_maxpool(net, pool, 2));
    check_shape(net, 1, 2, 3, 3);
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, seed));
    return net;
}

START_TEST(test_ensemble_rejects_other_windows)
{
    ibvi_net *base = window_net(3, 2, 1);
    ibvi_net *others[3] = {window_net(1, 2, 2), window_net(3, 3, 3),
                           window_net(3, 2, 4)};
    for (int i = 0; i < 3; i++) {
        ibvi_net *pair[2] = {base, others[i]};
        ibvi_predictor *pred = NULL;
        const int st = ibvi_predictor_create_ensemble(&pred, pair, 2, 1, 3);
        if (i < 2) {
            ck_assert_msg(st < 0, "pair %d accepted", i);
            ck_assert_ptr_null(pred);
        } else {
            CK_OK(st);
        }
        ibvi_predictor_free(pred);
        ibvi_net_free(others[i]);
    }
    ibvi_net_free(base);
}
END_TEST

/* Two BLIS threads give the one-thread results (to rounding): the conv's
 * GEMMs take the network's thread count. */
START_TEST(test_two_threads)
{
    ibvi_net *a = convnet(3, 2, 1), *b = convnet(3, 2, 1);
    CK_OK(ibvi_net_set_threads(b, 2));
    const int64_t n = 37;
    problem pa, pb;
    problem_init(&pa, a, IBVI_LOSS_SOFTMAX_XENT, n, 2, 4);
    problem_init(&pb, b, IBVI_LOSS_SOFTMAX_XENT, n, 2, 4);
    problem_loss(&pa, pa.grad_out);
    problem_loss(&pb, pb.grad_out);
    for (int64_t i = 0; i < n * 2 * pa.out_dim; i++)
        ck_assert(fabsf(pa.out[i] - pb.out[i]) <= 1e-5f * (1 + fabsf(pa.out[i])));
    CK_OK(ibvi_net_backward(a, pa.grad_out, n * 2, pa.out_dim));
    CK_OK(ibvi_net_backward(b, pb.grad_out, n * 2, pb.out_dim));
    for (int32_t li = 0; li < ibvi_net_layer_count(a); li++) {
        const int64_t P = ibvi_layer_param_count(tu_layer(a, li));
        if (P == 0)
            continue;
        float *ga = alloc_f(P), *gb = alloc_f(P);
        CK_OK(ibvi_layer_get_grad_mean(tu_layer(a, li), ga, P));
        CK_OK(ibvi_layer_get_grad_mean(tu_layer(b, li), gb, P));
        double scale = 0.0;
        for (int64_t p = 0; p < P; p++)
            scale = fmax(scale, fabs(ga[p]));
        for (int64_t p = 0; p < P; p++)
            ck_assert_msg(fabs(ga[p] - gb[p]) <= 1e-5 * scale,
                          "layer %d grad[%lld]: %g vs %g", (int)li,
                          (long long)p, ga[p], gb[p]);
        free(ga);
        free(gb);
    }
    problem_free(&pa);
    problem_free(&pb);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conv_net");
    TCase *tc = tu_tcase("gradients");
    tcase_add_test(tc, test_grad_all_kinds);
    tcase_add_test(tc, test_grad_global_avgpool);
    tcase_add_test(tc, test_grad_edges);
    tcase_add_test(tc, test_grad_conv_after_dense);
    suite_add_tcase(s, tc);
    tc = tu_tcase("forward");
    tcase_add_test(tc, test_conv_matches_naive);
    tcase_add_test(tc, test_pool_values);
    suite_add_tcase(s, tc);
    tc = tu_tcase("building");
    tcase_add_test(tc, test_lenet_shapes);
    tcase_add_test(tc, test_conv_fans);
    tcase_add_test(tc, test_builder_errors);
    suite_add_tcase(s, tc);
    tc = tu_tcase("training");
    tcase_add_test(tc, test_train_lowers_loss);
    tcase_add_test(tc, test_predictor_variational_conv);
    tcase_add_test(tc, test_ensemble_of_convnets);
    tcase_add_test(tc, test_ensemble_rejects_other_windows);
    tcase_add_test(tc, test_two_threads);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

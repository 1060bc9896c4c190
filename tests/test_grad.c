/*
 * libibvi tests - finite-difference gradient checks through the public API.
 *
 * The network's gradients (ibvi_net_backward -> ibvi_layer_get_grad_mean /
 * ibvi_layer_get_grad_factor) are compared with central differences of the
 * loss with respect to every mean and factor entry, using caller-given noise
 * (ibvi_net_forward_noise) so the perturbed forward passes see the same z.
 * The losses' own gradients are checked standalone, including the
 * sample-major repetition of targets (rows = 2 n), and against an independent
 * double-precision evaluation of their formulas.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define REL_TOL 2e-2
#define ABS_TOL 2e-3

static int close_enough(double a, double b)
{
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= REL_TOL * m + ABS_TOL;
}

/* ---- a problem: network, data, targets, fixed noise ------------------------ */

typedef struct problem {
    ibvi_net *net;
    int32_t loss_kind;
    int64_t n;
    int32_t samples;
    int32_t in_dim, out_dim;
    float *x;
    int32_t *labels;
    float *targets;
    float *z;
    int64_t z_len;
    float *out;
    float *grad_out;
} problem;

static void problem_data(problem *pr, tu_rng *rng)
{
    int64_t n = pr->n;
    pr->x = malloc(sizeof(float) * (size_t)(n * pr->in_dim));
    pr->labels = malloc(sizeof(int32_t) * (size_t)n);
    pr->targets = malloc(sizeof(float) * (size_t)(n * pr->out_dim));
    ck_assert_ptr_nonnull(pr->x);
    ck_assert_ptr_nonnull(pr->labels);
    ck_assert_ptr_nonnull(pr->targets);
    tu_fill_normal_f(rng, pr->x, n * pr->in_dim, 1.0);
    for (int64_t i = 0; i < n; i++)
        pr->labels[i] = (int32_t)(i % pr->out_dim); /* every class used */
    for (int64_t i = 0; i < n * pr->out_dim; i++) {
        if (pr->loss_kind == IBVI_LOSS_BINARY_XENT)
            pr->targets[i] = (i % 5 == 0) ? 1.0f
                             : (i % 5 == 1) ? 0.0f
                                            : (float)tu_rng_uniform(rng);
        else
            pr->targets[i] = (float)tu_rng_normal(rng);
    }
    int32_t ns = ibvi_net_noise_size(pr->net);
    ck_assert_int_ge(ns, 0);
    pr->z_len = (int64_t)ns * pr->samples;
    pr->z = malloc(sizeof(float) * (size_t)(pr->z_len + 1));
    ck_assert_ptr_nonnull(pr->z);
    tu_fill_normal_f(rng, pr->z, pr->z_len, 1.0);
    int64_t rows = n * pr->samples;
    pr->out = malloc(sizeof(float) * (size_t)(rows * pr->out_dim));
    pr->grad_out = malloc(sizeof(float) * (size_t)(rows * pr->out_dim));
    ck_assert_ptr_nonnull(pr->out);
    ck_assert_ptr_nonnull(pr->grad_out);
}

static void problem_free(problem *pr)
{
    ibvi_net_free(pr->net);
    free(pr->x);
    free(pr->labels);
    free(pr->targets);
    free(pr->z);
    free(pr->out);
    free(pr->grad_out);
}

/* Loss at the current parameters with the fixed noise; grad optional. */
static double problem_loss(problem *pr, float *grad)
{
    int64_t rows = pr->n * pr->samples;
    CK_OK(ibvi_net_forward_noise(pr->net, pr->x, pr->n, pr->samples, pr->z,
                                 pr->z_len, pr->out));
    float loss = NAN;
    CK_OK(ibvi_loss(pr->loss_kind, pr->out, rows, pr->out_dim, pr->labels,
                    pr->targets, pr->n, &loss, grad));
    ck_assert_msg(isfinite(loss), "loss is not finite");
    return loss;
}

/* Gradient of entry p of `buf` (len entries, written back with `set`) by
 * central differences, and the one-sided differences. */
typedef int (*setter_fn)(ibvi_layer *, const float *, int64_t);

static void fd_entry(problem *pr, ibvi_layer *layer, setter_fn set, float *buf,
                     int64_t len, int64_t p, double eps, double *central,
                     double *fwd, double *bwd)
{
    float orig = buf[p];
    double l0 = problem_loss(pr, NULL);
    buf[p] = orig + (float)eps;
    double hp = (double)buf[p] - orig;
    CK_OK(set(layer, buf, len));
    double lp = problem_loss(pr, NULL);
    buf[p] = orig - (float)eps;
    double hm = orig - (double)buf[p];
    CK_OK(set(layer, buf, len));
    double lm = problem_loss(pr, NULL);
    buf[p] = orig;
    CK_OK(set(layer, buf, len));
    *central = (lp - lm) / (hp + hm);
    *fwd = (lp - l0) / hp;
    *bwd = (l0 - lm) / hm;
}

/* Compares analytic gradients with finite differences for every mean and
 * factor entry of every dense layer. Returns the number of entries accepted
 * only as ReLU kinks. */
static int check_net_gradients(problem *pr, double eps, int allow_kinks,
                               const char *what)
{
    int64_t rows = pr->n * pr->samples;
    problem_loss(pr, pr->grad_out);
    CK_OK(ibvi_net_backward(pr->net, pr->grad_out, rows, pr->out_dim));

    int kinks = 0;
    int32_t nl = ibvi_net_layer_count(pr->net);
    ck_assert_int_gt(nl, 0);
    for (int32_t li = 0; li < nl; li++) {
        ibvi_layer *layer = tu_layer(pr->net, li);
        if (ibvi_layer_get_kind(layer) != IBVI_LAYER_DENSE)
            continue;
        int32_t rank = -1;
        CK_OK(ibvi_layer_shape(layer, NULL, NULL, &rank));
        int64_t P = ibvi_layer_param_count(layer);
        ck_assert_int_gt(P, 0);

        for (int part = 0; part < 2; part++) {
            if (part == 1 && rank == 0)
                break;
            int64_t len = part == 0 ? P : P * rank;
            float *buf = malloc(sizeof(float) * (size_t)len);
            float *g = malloc(sizeof(float) * (size_t)len);
            ck_assert_ptr_nonnull(buf);
            ck_assert_ptr_nonnull(g);
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
                ck_assert_msg(isfinite(g[p]), "non-finite gradient");
                gnorm += (double)g[p] * g[p];
                double c, f, b;
                fd_entry(pr, layer, set, buf, len, p, eps, &c, &f, &b);
                if (close_enough(g[p], c))
                    continue;
                /* A ReLU kink inside [theta - eps, theta + eps]: the one-sided
                 * differences disagree, and the analytic value must match
                 * one of them. */
                if (allow_kinks && !close_enough(f, b) &&
                    (close_enough(g[p], f) || close_enough(g[p], b))) {
                    printf("%s: kink at layer %d %s[%lld]: analytic %.6g, "
                           "one-sided %.6g / %.6g\n",
                           what, (int)li, part == 0 ? "mean" : "factor",
                           (long long)p, g[p], f, b);
                    kinks++;
                    continue;
                }
                ck_abort_msg("%s: layer %d %s[%lld]: analytic %.6g, finite "
                             "difference %.6g (fwd %.6g, bwd %.6g)",
                             what, (int)li, part == 0 ? "mean" : "factor",
                             (long long)p, g[p], c, f, b);
            }
            /* A zero gradient everywhere would make the comparison vacuous. */
            ck_assert_msg(sqrt(gnorm) > 1e-4,
                          "%s: layer %d %s gradient is (near) zero: %g", what,
                          (int)li, part == 0 ? "mean" : "factor", sqrt(gnorm));
            free(buf);
            free(g);
        }
    }
    return kinks;
}

/* ---- network gradients: loss x activation x rank x samples ---------------- */

static const int32_t k_losses[3] = {IBVI_LOSS_SOFTMAX_XENT, IBVI_LOSS_SQUARED,
                                    IBVI_LOSS_BINARY_XENT};
static const int32_t k_acts[3] = {IBVI_ACT_RELU, IBVI_ACT_TANH, IBVI_ACT_SILU};
static const int32_t k_ranks[2] = {1, 3};
static const int32_t k_samples[2] = {1, 2};

START_TEST(test_net_grad_matrix)
{
    int idx = _i;
    int32_t loss_kind = k_losses[idx % 3];
    int32_t act = k_acts[(idx / 3) % 3];
    int32_t rank = k_ranks[(idx / 9) % 2];
    int32_t samples = k_samples[(idx / 18) % 2];
    char what[128];
    snprintf(what, sizeof what, "loss %d act %d rank %d samples %d",
             (int)loss_kind, (int)act, (int)rank, (int)samples);

    problem pr;
    memset(&pr, 0, sizeof pr);
    pr.loss_kind = loss_kind;
    pr.n = 3;
    pr.samples = samples;
    pr.in_dim = 4;
    pr.out_dim = 3;
    pr.net = tu_net_new(pr.in_dim, NULL);
    /* variational -> act -> deterministic -> act -> variational */
    CK_OK(ibvi_net_add_dense(pr.net, 5, rank));
    CK_OK(ibvi_net_add_activation(pr.net, act));
    CK_OK(ibvi_net_add_dense(pr.net, 4, 0));
    CK_OK(ibvi_net_add_activation(pr.net, act));
    CK_OK(ibvi_net_add_dense(pr.net, pr.out_dim, rank));
    CK_OK(ibvi_net_init(pr.net, IBVI_PARAM_SP, 1000u + (uint64_t)idx));
    ck_assert_int_eq(ibvi_net_noise_size(pr.net), 2 * rank);

    tu_rng rng;
    tu_rng_seed(&rng, 77u + (uint64_t)idx);
    problem_data(&pr, &rng);

    double eps = act == IBVI_ACT_RELU ? 1e-3 : 5e-3;
    int kinks = check_net_gradients(&pr, eps, act == IBVI_ACT_RELU, what);
    /* Kinks are rare. One hidden unit whose pre-activation is within eps of
     * 0 for some row affects all its incoming weights, bias and factor rows
     * (5 (1 + R) entries for the first layer), so allow a unit or two. The
     * total number of entries here is 80 + 24 + 60 (R = 3) or 40 + 24 + 30. */
    ck_assert_msg(kinks <= 12 * rank / 2 + 10,
                  "%s: %d entries disagreed (kinks?)", what, kinks);
    problem_free(&pr);
}
END_TEST

/* Same check with the muP parameterization and a single variational layer
 * in the middle (hidden role), to cover other layer positions. */
START_TEST(test_net_grad_mup_hidden_variational)
{
    problem pr;
    memset(&pr, 0, sizeof pr);
    pr.loss_kind = IBVI_LOSS_SOFTMAX_XENT;
    pr.n = 4;
    pr.samples = 2;
    pr.in_dim = 3;
    pr.out_dim = 3;
    pr.net = tu_net_new(pr.in_dim, NULL);
    CK_OK(ibvi_net_add_dense(pr.net, 4, 0));
    CK_OK(ibvi_net_add_activation(pr.net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(pr.net, 5, 2));
    CK_OK(ibvi_net_add_activation(pr.net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(pr.net, pr.out_dim, 0));
    CK_OK(ibvi_net_init(pr.net, IBVI_PARAM_MUP, 5));
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    problem_data(&pr, &rng);
    check_net_gradients(&pr, 5e-3, 0, "muP hidden variational");
    problem_free(&pr);
}
END_TEST

/* A fully deterministic network (every rank 0). */
START_TEST(test_net_grad_deterministic)
{
    int32_t loss_kind = k_losses[_i % 3];
    problem pr;
    memset(&pr, 0, sizeof pr);
    pr.loss_kind = loss_kind;
    pr.n = 4;
    pr.samples = 1 + _i % 2;
    pr.in_dim = 3;
    pr.out_dim = 3;
    pr.net = tu_net_new(pr.in_dim, NULL);
    CK_OK(ibvi_net_add_dense(pr.net, 5, 0));
    CK_OK(ibvi_net_add_activation(pr.net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(pr.net, pr.out_dim, 0));
    CK_OK(ibvi_net_init(pr.net, IBVI_PARAM_SP, 9));
    ck_assert_int_eq(ibvi_net_noise_size(pr.net), 0);
    tu_rng rng;
    tu_rng_seed(&rng, 9 + (uint64_t)_i);
    problem_data(&pr, &rng);
    check_net_gradients(&pr, 5e-3, 0, "deterministic");
    problem_free(&pr);
}
END_TEST

/* Gradients of a forward pass with the network's own noise: the noise
 * reported by ibvi_net_last_noise must be the one the forward used, so a
 * finite-difference check with that noise matches the backward of the
 * random forward. */
START_TEST(test_net_grad_random_forward_matches_last_noise)
{
    problem pr;
    memset(&pr, 0, sizeof pr);
    pr.loss_kind = IBVI_LOSS_SQUARED;
    pr.n = 3;
    pr.samples = 2;
    pr.in_dim = 3;
    pr.out_dim = 3;
    pr.net = tu_net_new(pr.in_dim, NULL);
    CK_OK(ibvi_net_add_dense(pr.net, 4, 2));
    CK_OK(ibvi_net_add_activation(pr.net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(pr.net, pr.out_dim, 3));
    CK_OK(ibvi_net_init(pr.net, IBVI_PARAM_SP, 21));
    tu_rng rng;
    tu_rng_seed(&rng, 21);
    problem_data(&pr, &rng);

    int64_t rows = pr.n * pr.samples;
    CK_OK(ibvi_net_forward(pr.net, pr.x, pr.n, pr.samples, pr.out));
    float loss;
    CK_OK(ibvi_loss(pr.loss_kind, pr.out, rows, pr.out_dim, NULL, pr.targets,
                    pr.n, &loss, pr.grad_out));
    CK_OK(ibvi_net_backward(pr.net, pr.grad_out, rows, pr.out_dim));
    CK_OK(ibvi_net_last_noise(pr.net, pr.z, pr.z_len));

    /* The same noise through forward_noise gives the same outputs. */
    float *out2 = malloc(sizeof(float) * (size_t)(rows * pr.out_dim));
    ck_assert_ptr_nonnull(out2);
    CK_OK(ibvi_net_forward_noise(pr.net, pr.x, pr.n, pr.samples, pr.z,
                                 pr.z_len, out2));
    for (int64_t i = 0; i < rows * pr.out_dim; i++)
        ck_assert_msg(fabsf(out2[i] - pr.out[i]) <=
                          1e-5f * (1.0f + fabsf(pr.out[i])),
                      "forward_noise(last_noise) differs at %lld: %g vs %g",
                      (long long)i, out2[i], pr.out[i]);
    free(out2);

    /* Save the gradients of the random forward, then compare with FD. */
    ibvi_layer *l0 = tu_layer(pr.net, 0), *l2 = tu_layer(pr.net, 2);
    int64_t p0 = ibvi_layer_param_count(l0), p2 = ibvi_layer_param_count(l2);
    float *gm0 = malloc(sizeof(float) * (size_t)p0);
    float *gf2 = malloc(sizeof(float) * (size_t)(p2 * 3));
    float *m0 = malloc(sizeof(float) * (size_t)p0);
    float *f2 = malloc(sizeof(float) * (size_t)(p2 * 3));
    CK_OK(ibvi_layer_get_grad_mean(l0, gm0, p0));
    CK_OK(ibvi_layer_get_grad_factor(l2, gf2, p2 * 3));
    CK_OK(ibvi_layer_get_mean(l0, m0, p0));
    CK_OK(ibvi_layer_get_factor(l2, f2, p2 * 3));
    for (int64_t p = 0; p < p0; p++) {
        double c, f, b;
        fd_entry(&pr, l0, ibvi_layer_set_mean, m0, p0, p, 5e-3, &c, &f, &b);
        ck_assert_msg(close_enough(gm0[p], c), "mean[%lld]: %g vs FD %g",
                      (long long)p, gm0[p], c);
    }
    for (int64_t p = 0; p < p2 * 3; p++) {
        double c, f, b;
        fd_entry(&pr, l2, ibvi_layer_set_factor, f2, p2 * 3, p, 5e-3, &c, &f,
                 &b);
        ck_assert_msg(close_enough(gf2[p], c), "factor[%lld]: %g vs FD %g",
                      (long long)p, gf2[p], c);
    }
    free(gm0);
    free(gf2);
    free(m0);
    free(f2);
    problem_free(&pr);
}
END_TEST

/* After forward_mean the factor gradient is zero and the mean gradient
 * equals that of forward_noise with z = 0. */
START_TEST(test_net_grad_forward_mean)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
    tu_rng rng;
    tu_rng_seed(&rng, 3);
    float x[3 * 3], out[3 * 3], g[3 * 3], z[2] = {0.0f, 0.0f};
    int32_t labels[3] = {0, 2, 1};
    tu_fill_normal_f(&rng, x, 9, 1.0);
    ibvi_layer *l0 = tu_layer(net, 0);
    float gm_a[16], gm_b[16], gf[32];
    ck_assert_int_eq(ibvi_layer_param_count(l0), 16);

    CK_OK(ibvi_net_forward_noise(net, x, 3, 1, z, 2, out));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(out, 3, 3, labels, 3, &loss, g));
    CK_OK(ibvi_net_backward(net, g, 3, 3));
    CK_OK(ibvi_layer_get_grad_mean(l0, gm_a, 16));

    CK_OK(ibvi_net_forward_mean(net, x, 3, out));
    CK_OK(ibvi_loss_softmax_xent(out, 3, 3, labels, 3, &loss, g));
    CK_OK(ibvi_net_backward(net, g, 3, 3));
    CK_OK(ibvi_layer_get_grad_mean(l0, gm_b, 16));
    CK_OK(ibvi_layer_get_grad_factor(l0, gf, 32));
    double norm = 0.0;
    for (int i = 0; i < 16; i++) {
        norm += fabs(gm_a[i]);
        ck_assert_msg(fabsf(gm_a[i] - gm_b[i]) <= 1e-6f + 1e-5f * fabsf(gm_a[i]),
                      "mean grad %d: %g vs %g", i, gm_a[i], gm_b[i]);
    }
    ck_assert(norm > 1e-4);
    for (int i = 0; i < 32; i++)
        ck_assert_msg(gf[i] == 0.0f, "factor grad %d = %g after forward_mean",
                      i, gf[i]);
    ibvi_net_free(net);
}
END_TEST

/* ---- losses standalone ------------------------------------------------------ */

/* Independent double-precision evaluation of the three losses. */
static double ref_loss(int32_t kind, const float *f, int64_t rows, int32_t cols,
                       const int32_t *labels, const float *t, int64_t n)
{
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *fr = f + r * cols;
        int64_t i = r % n;
        if (kind == IBVI_LOSS_SOFTMAX_XENT) {
            double mx = fr[0];
            for (int32_t c = 1; c < cols; c++)
                if (fr[c] > mx)
                    mx = fr[c];
            double s = 0.0;
            for (int32_t c = 0; c < cols; c++)
                s += exp((double)fr[c] - mx);
            total += mx + log(s) - fr[labels[i]];
        } else if (kind == IBVI_LOSS_SQUARED) {
            for (int32_t c = 0; c < cols; c++) {
                double d = (double)fr[c] - t[i * cols + c];
                total += d * d;
            }
        } else {
            for (int32_t c = 0; c < cols; c++) {
                double v = fr[c];
                double sp = v > 0 ? v + log1p(exp(-v)) : log1p(exp(v));
                total += sp - (double)t[i * cols + c] * v;
            }
        }
    }
    return total / (double)rows;
}

static int call_loss(int32_t kind, int use_dispatch, const float *f,
                     int64_t rows, int32_t cols, const int32_t *labels,
                     const float *t, int64_t n, float *loss, float *grad)
{
    if (use_dispatch)
        return ibvi_loss(kind, f, rows, cols,
                         kind == IBVI_LOSS_SOFTMAX_XENT ? labels : NULL,
                         kind == IBVI_LOSS_SOFTMAX_XENT ? NULL : t, n, loss,
                         grad);
    switch (kind) {
    case IBVI_LOSS_SOFTMAX_XENT:
        return ibvi_loss_softmax_xent(f, rows, cols, labels, n, loss, grad);
    case IBVI_LOSS_SQUARED:
        return ibvi_loss_squared(f, rows, cols, t, n, loss, grad);
    default:
        return ibvi_loss_binary_xent(f, rows, cols, t, n, loss, grad);
    }
}

/* _i: loss kind (0..2) x rows multiple (1, 2) x dispatch (0, 1). */
START_TEST(test_loss_grad_standalone)
{
    int32_t kind = k_losses[_i % 3];
    int64_t mult = 1 + (_i / 3) % 2;
    int dispatch = (_i / 6) % 2;
    const int64_t n = 3;
    const int32_t cols = 4;
    int64_t rows = n * mult;
    tu_rng rng;
    tu_rng_seed(&rng, 300u + (uint64_t)_i);
    float f[6 * 4], g[6 * 4], t[3 * 4];
    int32_t labels[3] = {1, 3, 0};
    tu_fill_normal_f(&rng, f, rows * cols, 2.0);
    for (int i = 0; i < n * cols; i++)
        t[i] = kind == IBVI_LOSS_BINARY_XENT ? (float)tu_rng_uniform(&rng)
                                             : (float)tu_rng_normal(&rng);
    float loss = NAN;
    CK_OK(call_loss(kind, dispatch, f, rows, cols, labels, t, n, &loss, g));
    double ref = ref_loss(kind, f, rows, cols, labels, t, n);
    ck_assert_msg(fabs(loss - ref) <= 1e-5 * (1.0 + fabs(ref)),
                  "loss %d: %.8g, expected %.8g", (int)kind, loss, ref);
    /* Without a gradient buffer, the same value. */
    float loss2 = NAN;
    CK_OK(call_loss(kind, dispatch, f, rows, cols, labels, t, n, &loss2, NULL));
    ck_assert_msg(loss2 == loss, "loss without grad %g != %g", loss2, loss);

    const double eps = 1e-2;
    for (int64_t k = 0; k < rows * cols; k++) {
        float orig = f[k];
        f[k] = orig + (float)eps;
        double hp = (double)f[k] - orig;
        double lp = ref_loss(kind, f, rows, cols, labels, t, n);
        float lpf;
        CK_OK(call_loss(kind, dispatch, f, rows, cols, labels, t, n, &lpf,
                        NULL));
        f[k] = orig - (float)eps;
        double hm = orig - (double)f[k];
        double lm = ref_loss(kind, f, rows, cols, labels, t, n);
        float lmf;
        CK_OK(call_loss(kind, dispatch, f, rows, cols, labels, t, n, &lmf,
                        NULL));
        f[k] = orig;
        double fd = (lp - lm) / (hp + hm);
        double fdf = ((double)lpf - lmf) / (hp + hm);
        ck_assert_msg(close_enough(g[k], fd),
                      "loss %d rows %lld grad[%lld] = %.6g, FD %.6g", (int)kind,
                      (long long)rows, (long long)k, g[k], fd);
        ck_assert_msg(close_enough(g[k], fdf),
                      "loss %d rows %lld grad[%lld] = %.6g, FD(lib) %.6g",
                      (int)kind, (long long)rows, (long long)k, g[k], fdf);
    }
}
END_TEST

/* With rows = 2 n and both sample blocks identical, loss and gradient equal
 * those of rows = n (gradient halved per row: it is divided by rows). */
START_TEST(test_loss_repeated_blocks)
{
    int32_t kind = k_losses[_i % 3];
    const int64_t n = 3;
    const int32_t cols = 3;
    tu_rng rng;
    tu_rng_seed(&rng, 400u + (uint64_t)_i);
    float f[6 * 3], g1[3 * 3], g2[6 * 3], t[3 * 3];
    int32_t labels[3] = {2, 0, 1};
    tu_fill_normal_f(&rng, f, n * cols, 1.5);
    memcpy(f + n * cols, f, sizeof(float) * (size_t)(n * cols));
    for (int i = 0; i < n * cols; i++)
        t[i] = kind == IBVI_LOSS_BINARY_XENT ? (float)tu_rng_uniform(&rng)
                                             : (float)tu_rng_normal(&rng);
    float l1, l2;
    CK_OK(call_loss(kind, 0, f, n, cols, labels, t, n, &l1, g1));
    CK_OK(call_loss(kind, 0, f, 2 * n, cols, labels, t, n, &l2, g2));
    ck_assert_msg(fabsf(l1 - l2) <= 1e-6f * (1.0f + fabsf(l1)), "%g vs %g", l1,
                  l2);
    for (int i = 0; i < n * cols; i++) {
        ck_assert_msg(fabsf(g2[i] - 0.5f * g1[i]) <= 1e-6f, "grad %d", i);
        ck_assert_msg(fabsf(g2[n * cols + i] - 0.5f * g1[i]) <= 1e-6f,
                      "grad %d", i);
    }
}
END_TEST

/* Large logits: finite loss and gradient, with the right values. */
START_TEST(test_loss_stability)
{
    /* softmax: rows [1e4, -1e4, 0] and [-1e4, 1e4, 1e4] */
    float f[6] = {1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 1e4f};
    float g[6];
    int32_t labels[2] = {1, 0};
    float loss = NAN;
    CK_OK(ibvi_loss_softmax_xent(f, 2, 3, labels, 2, &loss, g));
    /* row 0: -log softmax = 1e4 - (-1e4) = 2e4; row 1: 2e4 + log 2 */
    double expect = (2e4 + 2e4 + log(2.0)) / 2.0;
    ck_assert_msg(isfinite(loss) && fabs(loss - expect) <= 1e-5 * expect,
                  "softmax loss %g, expected %g", loss, expect);
    float expect_g[6] = {0.5f, -0.5f, 0.0f, -0.5f, 0.25f, 0.25f};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(isfinite(g[i]) && fabsf(g[i] - expect_g[i]) <= 1e-6f,
                      "softmax grad %d = %g, expected %g", i, g[i],
                      expect_g[i]);
    /* correct labels with huge margins: loss ~ 0 */
    int32_t good[2] = {0, 1};
    CK_OK(ibvi_loss_softmax_xent(f, 2, 3, good, 2, &loss, g));
    /* (1e-3: the float spacing at 1e4 is 1e-3, so a float log-sum-exp
     * of these logits is exact only to that) */
    ck_assert_msg(isfinite(loss) && fabs(loss - log(2.0) / 2.0) <= 1e-3,
                  "softmax loss %g", loss);

    /* binary: 1e4 with t=0 -> 1e4; -1e4 with t=1 -> 1e4; 1e4 with t=1 -> 0;
     * -1e4 with t=0 -> 0 */
    float b[4] = {1e4f, -1e4f, 1e4f, -1e4f};
    float t[4] = {0.0f, 1.0f, 1.0f, 0.0f};
    float gb[4];
    CK_OK(ibvi_loss_binary_xent(b, 1, 4, t, 1, &loss, gb));
    ck_assert_msg(isfinite(loss) && fabs(loss - 2e4) <= 1e-5 * 2e4,
                  "binary loss %g, expected 2e4", loss);
    float expect_b[4] = {1.0f, -1.0f, 0.0f, 0.0f};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(isfinite(gb[i]) && fabsf(gb[i] - expect_b[i]) <= 1e-6f,
                      "binary grad %d = %g", i, gb[i]);

    /* squared: 1e4 outputs, finite */
    float s[2] = {1e4f, -1e4f}, st[2] = {0.0f, 0.0f}, gs[2];
    CK_OK(ibvi_loss_squared(s, 1, 2, st, 1, &loss, gs));
    ck_assert_msg(isfinite(loss) && fabs(loss - 2e8) <= 1e-5 * 2e8,
                  "squared loss %g", loss);
    ck_assert(fabsf(gs[0] - 2e4f) <= 1e-2f && fabsf(gs[1] + 2e4f) <= 1e-2f);
}
END_TEST

static Suite *grad_suite(void)
{
    Suite *s = suite_create("grad");
    TCase *tc = tu_tcase("net");
    tcase_add_loop_test(tc, test_net_grad_matrix, 0, 36);
    tcase_add_test(tc, test_net_grad_mup_hidden_variational);
    tcase_add_loop_test(tc, test_net_grad_deterministic, 0, 6);
    tcase_add_test(tc, test_net_grad_random_forward_matches_last_noise);
    tcase_add_test(tc, test_net_grad_forward_mean);
    suite_add_tcase(s, tc);

    TCase *tl = tu_tcase("loss");
    tcase_add_loop_test(tl, test_loss_grad_standalone, 0, 12);
    tcase_add_loop_test(tl, test_loss_repeated_blocks, 0, 3);
    tcase_add_test(tl, test_loss_stability);
    suite_add_tcase(s, tl);
    return s;
}

int main(void) { return tu_run_suite(grad_suite()); }

/*
 * The single-pass training step (issue 6): the factor gradient dL/dS = G^T Z
 * is never stored, the optimizer forms it on the fly and updates each value
 * in one pass, and bounds on |values| let it skip the exact finiteness
 * check. These tests hold that path to the plain definition:
 *   - ibvi_layer_get_grad_factor equals g z^T (1 sample) and sum_m g_m z_m^T
 *     (3 samples, g_m from one-sample backward passes), also after the noise
 *     changed and the workspace moved;
 *   - every step of SGD (plain, momentum, Nesterov) and Adam, 1 and 3
 *     samples, muP multipliers, equals a reference update computed here from
 *     the materialised gradients and the previous parameters and state (the
 *     state read from a saved buffer): the first step (exact check) and the
 *     following ones (single pass);
 *   - a step whose update is not finite still returns IBVI_ERR_NONFINITE and
 *     changes nothing when the optimizer's bounds are stale (parameters set
 *     by hand, another optimizer stepped) or too large (huge learning rate),
 *     and a step whose bounds are too large but whose update is finite still
 *     succeeds.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "testutil.h"

#define IN 5
#define N 6
#define CLASSES 3

/* 5 -> 7 (rank 3) -> ReLU -> 4 (deterministic) -> tanh -> 3 (rank 2). */
static ibvi_net *make_net(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, 7, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

static void make_data(uint64_t seed, float *x, int32_t *labels)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    tu_fill_normal_f(&rng, x, N * IN, 1.0);
    for (int i = 0; i < N; i++)
        labels[i] = tu_rng_int(&rng, CLASSES);
}

/* ---- snapshots of everything a step reads and writes --------------------- */

/* All parameters, and all gradients, in optimizer-state order: per dense
 * layer, mean (P) then factor (P x R). */
typedef struct snapshot {
    int64_t count;
    float *param, *grad, *mult; /* mult: lr multiplier of each value */
    float *state;               /* state_floats values */
    int64_t state_floats;
} snapshot;

static uint8_t *save(const ibvi_net *net, const ibvi_optimizer *opt,
                     int64_t *size)
{
    CK_OK(ibvi_net_save_size(net, opt, size));
    uint8_t *buf = malloc((size_t)*size);
    ck_assert_ptr_nonnull(buf);
    CK_OK(ibvi_net_save_buffer(net, opt, buf, *size));
    return buf;
}

/* The optimizer state: the last state_floats floats before the 4-byte
 * checksum of a saved model (little-endian). */
static void read_state(const ibvi_net *net, const ibvi_optimizer *opt,
                       float *state, int64_t state_floats)
{
    int64_t size;
    uint8_t *buf = save(net, opt, &size);
    const uint8_t *p = buf + size - 4 - 4 * state_floats;
    for (int64_t i = 0; i < state_floats; i++) {
        uint32_t bits = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                        (uint32_t)p[4 * i + 2] << 16 |
                        (uint32_t)p[4 * i + 3] << 24;
        memcpy(&state[i], &bits, sizeof bits);
    }
    free(buf);
}

static void take(ibvi_net *net, const ibvi_optimizer *opt, int32_t kind,
                 snapshot *s)
{
    s->count = ibvi_net_param_count(net);
    s->state_floats = (kind == IBVI_OPT_ADAM ? 2 : 1) * s->count;
    s->param = malloc(sizeof(float) * (size_t)s->count);
    s->grad = malloc(sizeof(float) * (size_t)s->count);
    s->mult = malloc(sizeof(float) * (size_t)s->count);
    s->state = malloc(sizeof(float) * (size_t)s->state_floats);
    int64_t at = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t in, out, R;
        CK_OK(ibvi_layer_shape(l, &in, &out, &R));
        const int64_t P = ibvi_layer_param_count(l), W = (int64_t)in * out;
        float wm, bm;
        CK_OK(ibvi_layer_lr_multipliers(l, kind, &wm, &bm));
        CK_OK(ibvi_layer_get_mean(l, s->param + at, P));
        CK_OK(ibvi_layer_get_grad_mean(l, s->grad + at, P));
        for (int64_t p = 0; p < P; p++)
            s->mult[at + p] = p < W ? wm : bm;
        at += P;
        if (R > 0) {
            CK_OK(ibvi_layer_get_factor(l, s->param + at, P * R));
            CK_OK(ibvi_layer_get_grad_factor(l, s->grad + at, P * R));
            for (int64_t k = 0; k < P * R; k++)
                s->mult[at + k] = k < W * R ? wm / (float)R : bm / (float)R;
            at += P * R;
        }
    }
    ck_assert_int_eq(at, s->count);
    read_state(net, opt, s->state, s->state_floats);
}

static void release(snapshot *s)
{
    free(s->param);
    free(s->grad);
    free(s->mult);
    free(s->state);
}

/* ---- the reference update (include/ibvi/optimizer.h, lib/optimizer.c) ---- */

static float flush(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

typedef struct settings {
    int32_t kind;
    float lr, momentum;
    int32_t nesterov;
    float beta1, beta2, eps;
} settings;

/* Applies one step to before's parameters and state with gradients grad. */
static void reference_step(const settings *o, int64_t steps, snapshot *before,
                           const float *grad)
{
    const int64_t count = before->count;
    float *p = before->param, *state = before->state;
    if (o->kind == IBVI_OPT_SGD) {
        for (int64_t i = 0; i < count; i++) {
            const float lr = o->lr * before->mult[i], g = grad[i];
            if (o->momentum == 0.0f) {
                p[i] = flush(p[i] - lr * g);
            } else {
                const float v = flush(o->momentum * state[i] + g);
                state[i] = v;
                p[i] = flush(p[i] - lr * (o->nesterov ? g + o->momentum * v
                                                      : v));
            }
        }
        return;
    }
    const double t = (double)steps + 1.0;
    const float c1 = (float)(1.0 - pow(o->beta1, t));
    const float c2 = (float)(1.0 - pow(o->beta2, t));
    float *m = state, *v = state + count;
    for (int64_t i = 0; i < count; i++) {
        const float lr = o->lr * before->mult[i], g = grad[i];
        m[i] = flush(o->beta1 * m[i] + (1.0f - o->beta1) * g);
        v[i] = flush(o->beta2 * v[i] + (1.0f - o->beta2) * g * g);
        p[i] = flush(p[i] - lr * (m[i] / c1) / (sqrtf(v[i] / c2) + o->eps));
    }
}

/* |a - b| within float rounding of the larger magnitude (and of `scale`,
 * the typical size of the values, for values that nearly cancel). */
static void expect_close(const float *a, const float *b, int64_t n,
                         double scale, const char *what, int step)
{
    for (int64_t i = 0; i < n; i++) {
        const double tol = 1e-5 * (fabs((double)a[i]) + fabs((double)b[i]) +
                                   scale) + 1e-30;
        ck_assert_msg(fabs((double)a[i] - (double)b[i]) <= tol,
                      "step %d: %s[%lld] = %.9g, reference %.9g", step, what,
                      (long long)i, (double)a[i], (double)b[i]);
    }
}

static double typical(const float *x, int64_t n)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += fabs((double)x[i]);
    return n ? sum / (double)n : 0.0;
}

static ibvi_optimizer *make_optimizer(ibvi_net *net, const settings *o)
{
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, o->kind, o->lr));
    /* The per-step single pass is what these tests hold to the reference
     * (deferred factor updates: docs/deferred.md, tests/test_deferred.c). */
    CK_OK(ibvi_optimizer_set_deferred(opt, 0));
    if (o->kind == IBVI_OPT_SGD)
        CK_OK(ibvi_optimizer_set_momentum(opt, o->momentum, o->nesterov));
    else
        CK_OK(ibvi_optimizer_set_adam(opt, o->beta1, o->beta2, o->eps));
    return opt;
}

/* Trains `steps` steps with `samples` samples and compares every step with
 * the reference. */
static void compare_training(const settings *o, int32_t samples, int steps)
{
    ibvi_net *net = make_net(11);
    ibvi_optimizer *opt = make_optimizer(net, o);
    float x[N * IN];
    int32_t labels[N];
    make_data(3, x, labels);
    for (int t = 0; t < steps; t++) {
        snapshot before, after;
        take(net, opt, o->kind, &before); /* grads: the previous step's */
        float loss;
        CK_OK(ibvi_train_step(net, opt, x, N, samples, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &loss));
        take(net, opt, o->kind, &after); /* grads: this step's */
        reference_step(o, t, &before, after.grad);
        expect_close(after.param, before.param, after.count,
                     typical(before.param, before.count), "parameter", t);
        expect_close(after.state, before.state, after.state_floats,
                     typical(before.state, before.state_floats), "state", t);
        release(&before);
        release(&after);
    }
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), steps);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}

static const settings SGD_PLAIN = {IBVI_OPT_SGD, 0.05f, 0.0f, 0, 0, 0, 0};
static const settings SGD_MOMENTUM = {IBVI_OPT_SGD, 0.05f, 0.9f, 0, 0, 0, 0};
static const settings SGD_NESTEROV = {IBVI_OPT_SGD, 0.05f, 0.9f, 1, 0, 0, 0};
static const settings ADAM = {IBVI_OPT_ADAM, 0.01f, 0, 0, 0.9f, 0.999f, 1e-8f};

START_TEST(test_sgd_plain_matches_reference)
{
    compare_training(&SGD_PLAIN, 1, 6);
    compare_training(&SGD_PLAIN, 3, 6);
}
END_TEST

START_TEST(test_sgd_momentum_matches_reference)
{
    compare_training(&SGD_MOMENTUM, 1, 6);
    compare_training(&SGD_MOMENTUM, 3, 6);
}
END_TEST

START_TEST(test_sgd_nesterov_matches_reference)
{
    compare_training(&SGD_NESTEROV, 1, 6);
    compare_training(&SGD_NESTEROV, 3, 6);
}
END_TEST

START_TEST(test_adam_matches_reference)
{
    compare_training(&ADAM, 1, 6);
    compare_training(&ADAM, 3, 6);
}
END_TEST

/* ---- the factor gradient ------------------------------------------------- */

static float *grad_factor(ibvi_layer *l, int64_t len)
{
    float *g = malloc(sizeof(float) * (size_t)len);
    CK_OK(ibvi_layer_get_grad_factor(l, g, len));
    return g;
}

/* One sample: dS = g z^T exactly (one product per entry). */
START_TEST(test_grad_factor_one_sample)
{
    ibvi_net *net = make_net(5);
    float x[N * IN], out[N * CLASSES], grad[N * CLASSES];
    int32_t labels[N];
    make_data(9, x, labels);
    CK_OK(ibvi_net_forward(net, x, N, 1, out));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(out, N, CLASSES, labels, N, &loss, grad));
    CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
    const int32_t ns = ibvi_net_noise_size(net);
    float z[8];
    CK_OK(ibvi_net_last_noise(net, z, ns));
    const int32_t dense[2] = {0, 4}, offset[2] = {0, 3};
    float *first[2];
    for (int d = 0; d < 2; d++) {
        ibvi_layer *l = tu_layer(net, dense[d]);
        int32_t R;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        const int64_t P = ibvi_layer_param_count(l);
        float *gm = malloc(sizeof(float) * (size_t)P);
        CK_OK(ibvi_layer_get_grad_mean(l, gm, P));
        float *gf = grad_factor(l, P * R);
        for (int64_t p = 0; p < P; p++)
            for (int32_t r = 0; r < R; r++)
                ck_assert_msg(gf[p * R + r] == gm[p] * z[offset[d] + r],
                              "layer %d: dS[%lld][%d] = %g, g z = %g",
                              dense[d], (long long)p, (int)r,
                              (double)gf[p * R + r],
                              (double)(gm[p] * z[offset[d] + r]));
        first[d] = gf;
        free(gm);
    }
    /* New noise, a larger workspace: the gradient of the last backward
     * stays what it was. */
    float out2[2 * N * CLASSES];
    CK_OK(ibvi_net_forward(net, x, N, 2, out2));
    CK_OK(ibvi_net_reserve(net, 64, 8));
    CK_OK(ibvi_net_forward(net, x, N, 1, out));
    for (int d = 0; d < 2; d++) {
        ibvi_layer *l = tu_layer(net, dense[d]);
        int32_t R;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        const int64_t len = ibvi_layer_param_count(l) * R;
        float *gf = grad_factor(l, len);
        ck_assert_msg(memcmp(gf, first[d], sizeof(float) * (size_t)len) == 0,
                      "layer %d: the factor gradient changed", dense[d]);
        free(gf);
        free(first[d]);
    }
    ibvi_net_free(net);
}
END_TEST

/* Three samples: dS = sum_m g_m z_m^T, with g_m the gradient of a
 * one-sample backward with z_m and sample m's rows of dL/d(out); the
 * workspace grows between the backward and the reads. */
START_TEST(test_grad_factor_three_samples)
{
    enum { M = 3 };
    ibvi_net *net = make_net(6);
    float x[N * IN], out[M * N * CLASSES], grad[M * N * CLASSES];
    int32_t labels[N];
    make_data(10, x, labels);
    CK_OK(ibvi_net_forward(net, x, N, M, out));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(out, M * N, CLASSES, labels, N, &loss, grad));
    CK_OK(ibvi_net_backward(net, grad, M * N, CLASSES));
    const int32_t ns = ibvi_net_noise_size(net);
    float z[M * 8];
    CK_OK(ibvi_net_last_noise(net, z, (int64_t)M * ns));

    const int32_t dense[2] = {0, 4}, offset[2] = {0, 3};
    float *lib[2], *lib_mean[2];
    int64_t lens[2], Ps[2];
    for (int d = 0; d < 2; d++) {
        ibvi_layer *l = tu_layer(net, dense[d]);
        int32_t R;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        Ps[d] = ibvi_layer_param_count(l);
        lens[d] = Ps[d] * R;
        lib_mean[d] = malloc(sizeof(float) * (size_t)Ps[d]);
        CK_OK(ibvi_layer_get_grad_mean(l, lib_mean[d], Ps[d]));
    }
    /* Another forward and a workspace move must not disturb them. */
    CK_OK(ibvi_net_forward(net, x, N, 1, out));
    CK_OK(ibvi_net_reserve(net, 100, 16));
    for (int d = 0; d < 2; d++)
        lib[d] = grad_factor(tu_layer(net, dense[d]), lens[d]);

    double *ref[2], *ref_mean[2];
    for (int d = 0; d < 2; d++) {
        ref[d] = calloc((size_t)lens[d], sizeof(double));
        ref_mean[d] = calloc((size_t)Ps[d], sizeof(double));
    }
    float one_out[N * CLASSES];
    for (int m = 0; m < M; m++) {
        CK_OK(ibvi_net_forward_noise(net, x, N, 1, z + m * ns, ns, one_out));
        CK_OK(ibvi_net_backward(net, grad + m * N * CLASSES, N, CLASSES));
        for (int d = 0; d < 2; d++) {
            ibvi_layer *l = tu_layer(net, dense[d]);
            const int32_t R = (int32_t)(lens[d] / Ps[d]);
            float *gm = malloc(sizeof(float) * (size_t)Ps[d]);
            CK_OK(ibvi_layer_get_grad_mean(l, gm, Ps[d]));
            for (int64_t p = 0; p < Ps[d]; p++) {
                ref_mean[d][p] += gm[p];
                for (int32_t r = 0; r < R; r++)
                    ref[d][p * R + r] +=
                        (double)gm[p] * z[m * ns + offset[d] + r];
            }
            free(gm);
        }
    }
    for (int d = 0; d < 2; d++) {
        double scale = 0.0;
        for (int64_t i = 0; i < lens[d]; i++)
            scale = fmax(scale, fabs(ref[d][i]));
        for (int64_t i = 0; i < lens[d]; i++)
            ck_assert_msg(fabs(lib[d][i] - ref[d][i]) <= 1e-5 * scale + 1e-12,
                          "layer %d: dS[%lld] = %.9g, sum_m g_m z_m = %.9g",
                          dense[d], (long long)i, (double)lib[d][i],
                          ref[d][i]);
        scale = 0.0;
        for (int64_t p = 0; p < Ps[d]; p++)
            scale = fmax(scale, fabs(ref_mean[d][p]));
        for (int64_t p = 0; p < Ps[d]; p++)
            ck_assert(fabs(lib_mean[d][p] - ref_mean[d][p]) <=
                      1e-5 * scale + 1e-12);
        free(lib[d]);
        free(lib_mean[d]);
        free(ref[d]);
        free(ref_mean[d]);
    }
    ibvi_net_free(net);
}
END_TEST

/* Zeros before any backward and after a backward through the mean network;
 * the optimizer then decays the factor's momentum only. */
START_TEST(test_grad_factor_zero_cases)
{
    ibvi_net *net = make_net(7);
    ibvi_layer *l = tu_layer(net, 0);
    const int64_t len = ibvi_layer_param_count(l) * 3;
    float *g = grad_factor(l, len);
    for (int64_t i = 0; i < len; i++)
        ck_assert(g[i] == 0.0f);
    free(g);
    float x[N * IN], out[N * CLASSES], grad[N * CLASSES];
    int32_t labels[N];
    make_data(12, x, labels);
    CK_OK(ibvi_net_forward(net, x, N, 1, out));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(out, N, CLASSES, labels, N, &loss, grad));
    CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
    g = grad_factor(l, len);
    int nonzero = 0;
    for (int64_t i = 0; i < len; i++)
        nonzero += g[i] != 0.0f;
    ck_assert_int_gt(nonzero, 0);
    free(g);
    CK_OK(ibvi_net_forward_mean(net, x, N, out));
    CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
    g = grad_factor(l, len);
    for (int64_t i = 0; i < len; i++)
        ck_assert(g[i] == 0.0f);
    free(g);
    ibvi_net_free(net);
}
END_TEST

/* ---- weights drawn ahead ---------------------------------------------------- */

/* The optimizer draws the next forward's weights during its update pass;
 * the forward must get bitwise the weights it would have drawn itself.
 * Network b never uses them (set_mean with the same values invalidates
 * them before each step), a does; both train identically. Forwards through
 * the mean between steps do not disturb them. */
static void compare_presampled(const settings *o, int32_t samples)
{
    ibvi_net *a = make_net(31), *b = make_net(31);
    ibvi_optimizer *oa = make_optimizer(a, o), *ob = make_optimizer(b, o);
    float x[N * IN], out[N * CLASSES];
    int32_t labels[N];
    make_data(13, x, labels);
    for (int t = 0; t < 5; t++) {
        ibvi_layer *l = tu_layer(b, 0);
        int64_t P;
        float *mean = tu_get_mean(l, &P);
        CK_OK(ibvi_layer_set_mean(l, mean, P));
        free(mean);
        if (t == 2)
            CK_OK(ibvi_net_forward_mean(a, x, N, out));
        float la, lb;
        CK_OK(ibvi_train_step(a, oa, x, N, samples, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &la));
        CK_OK(ibvi_train_step(b, ob, x, N, samples, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &lb));
        ck_assert_msg(la == lb, "step %d: loss %.9g, without drawing ahead "
                      "%.9g", t, (double)la, (double)lb);
    }
    for (int i = 0; i < 5; i += 2) {
        ibvi_layer *la = tu_layer(a, i), *lb = tu_layer(b, i);
        int64_t P, len;
        float *ma = tu_get_mean(la, &P), *mb = tu_get_mean(lb, NULL);
        ck_assert(memcmp(ma, mb, sizeof(float) * (size_t)P) == 0);
        free(ma);
        free(mb);
        int32_t R;
        CK_OK(ibvi_layer_shape(la, NULL, NULL, &R));
        if (R > 0) {
            float *fa = tu_get_factor(la, &len), *fb = tu_get_factor(lb, NULL);
            ck_assert(memcmp(fa, fb, sizeof(float) * (size_t)len) == 0);
            free(fa);
            free(fb);
        }
    }
    ibvi_optimizer_free(oa);
    ibvi_optimizer_free(ob);
    ibvi_net_free(a);
    ibvi_net_free(b);
}

START_TEST(test_presampled_weights)
{
    compare_presampled(&SGD_MOMENTUM, 1);
    compare_presampled(&SGD_MOMENTUM, 2);
    compare_presampled(&ADAM, 1);
}
END_TEST

/* Parameters set, or the generator moved, between the step and the next
 * forward: the weights drawn ahead are stale and must not be used. The
 * forward's output must equal a forward with the same noise through a
 * network that never drew ahead. */
START_TEST(test_presampled_weights_invalidated)
{
    for (int how = 0; how < 3; how++) {
        ibvi_net *net = make_net(32);
        ibvi_optimizer *opt = make_optimizer(net, &SGD_MOMENTUM);
        float x[N * IN], out[N * CLASSES], ref[N * CLASSES];
        int32_t labels[N];
        make_data(14, x, labels);
        float loss;
        for (int t = 0; t < 2; t++)
            CK_OK(ibvi_train_step(net, opt, x, N, 1, IBVI_LOSS_SOFTMAX_XENT,
                                  labels, NULL, &loss));
        ibvi_layer *l = tu_layer(net, 0);
        int64_t len;
        float *factor = tu_get_factor(l, &len);
        uint64_t position;
        CK_OK(ibvi_net_rng_position(net, &position));
        if (how == 0) {
            for (int64_t i = 0; i < len; i++)
                factor[i] *= 0.5f;
            CK_OK(ibvi_layer_set_factor(l, factor, len));
        } else if (how == 1) {
            CK_OK(ibvi_net_set_rng_position(net, position + 7));
        } else {
            CK_OK(ibvi_net_reserve(net, 4 * N, 4)); /* the workspace moves */
        }
        CK_OK(ibvi_net_forward(net, x, N, 1, out));
        const int32_t ns = ibvi_net_noise_size(net);
        float z[8];
        CK_OK(ibvi_net_last_noise(net, z, ns));
        /* the same network and noise, nothing drawn ahead */
        int64_t size;
        uint8_t *buf = save(net, NULL, &size);
        ibvi_net *copy = NULL;
        CK_OK(ibvi_net_load_buffer(&copy, NULL, buf, size, NULL));
        CK_OK(ibvi_net_forward_noise(copy, x, N, 1, z, ns, ref));
        ck_assert_msg(memcmp(out, ref, sizeof out) == 0,
                      "case %d: the forward used stale weights", how);
        free(buf);
        free(factor);
        ibvi_net_free(copy);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

/* ---- non-finite steps ------------------------------------------------------ */

/* Asserts that ibvi_optimizer_step returns IBVI_ERR_NONFINITE and that the
 * saved network and optimizer are byte for byte unchanged. */
static void expect_rejected(ibvi_net *net, ibvi_optimizer *opt)
{
    int64_t s0, s1;
    uint8_t *before = save(net, opt, &s0);
    const int64_t steps = ibvi_optimizer_step_count(opt);
    CK_STATUS(ibvi_optimizer_step(opt), IBVI_ERR_NONFINITE);
    uint8_t *after = save(net, opt, &s1);
    ck_assert_int_eq(s0, s1);
    ck_assert_msg(memcmp(before, after, (size_t)s0) == 0,
                  "a rejected step changed the network or the optimizer");
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), steps);
    free(before);
    free(after);
}

/* A few ordinary steps, so the optimizer trusts its bounds. */
static void warm_up(ibvi_net *net, ibvi_optimizer *opt, const float *x,
                    const int32_t *labels)
{
    for (int t = 0; t < 3; t++) {
        float loss;
        CK_OK(ibvi_train_step(net, opt, x, N, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &loss));
    }
}

/* Gradients for the current parameters, whatever the outputs are: a
 * backward with dL/d(out) = 0.5 everywhere. The last layer's bias gradient
 * is then 0.5 N = 3 for every output. */
static void fixed_gradient(ibvi_net *net, const float *x)
{
    float out[N * CLASSES], grad[N * CLASSES];
    for (int i = 0; i < N * CLASSES; i++)
        grad[i] = 0.5f;
    CK_OK(ibvi_net_forward(net, x, N, 1, out));
    CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
}

/* The last layer's mean biases. */
static void last_bias(ibvi_net *net, float *bias, int set)
{
    ibvi_layer *l = tu_layer(net, ibvi_net_layer_count(net) - 1);
    const int64_t P = ibvi_layer_param_count(l);
    float *mean = malloc(sizeof(float) * (size_t)P);
    CK_OK(ibvi_layer_get_mean(l, mean, P));
    if (set) {
        memcpy(mean + P - CLASSES, bias, sizeof(float) * CLASSES);
        CK_OK(ibvi_layer_set_mean(l, mean, P));
    } else {
        memcpy(bias, mean + P - CLASSES, sizeof(float) * CLASSES);
    }
    free(mean);
}

/* The bias gradient is 3 (> 0), the momentum after the warm-up is small, so
 * the step moves those biases down by about lr x multiplier x 3: with
 * lr = 1e33 far more than the spacing of floats near FLT_MAX (2^104), so a
 * bias at -FLT_MAX overflows. The optimizer's bounds still describe the
 * small values of the warm-up and would let the single pass through
 * (1e33 x a few is far below their limit): the step must notice that the
 * parameters changed since. */
START_TEST(test_stale_bounds_after_set_mean)
{
    for (int kind = 0; kind < 2; kind++) {
        ibvi_net *net = make_net(21);
        const settings *o = kind ? &ADAM : &SGD_MOMENTUM;
        ibvi_optimizer *opt = make_optimizer(net, o);
        float x[N * IN];
        int32_t labels[N];
        make_data(4, x, labels);
        warm_up(net, opt, x, labels);
        float bias[CLASSES] = {-FLT_MAX, -FLT_MAX, -FLT_MAX};
        last_bias(net, bias, 1);
        fixed_gradient(net, x);
        CK_OK(ibvi_optimizer_set_lr(opt, 1e33f));
        expect_rejected(net, opt);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

/* The same through a second optimizer of the same network: b's step takes
 * a bias to -3.401e38, which a's bounds know nothing about; a's step then
 * moves it by 4e35 more, past FLT_MAX (3.4028e38). That step is small
 * enough that a's stale bounds (about 1e36) would allow the single pass.
 * One dense layer and small inputs keep the gradients small. */
START_TEST(test_stale_bounds_after_other_optimizer)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 8));
    ibvi_optimizer *a = make_optimizer(net, &SGD_MOMENTUM);
    ibvi_optimizer *b = make_optimizer(net, &SGD_PLAIN);
    float x[N * IN];
    int32_t labels[N];
    make_data(5, x, labels);
    warm_up(net, a, x, labels);
    for (int i = 0; i < N * IN; i++)
        x[i] *= 0.01f;
    fixed_gradient(net, x);
    float wm, bm, bias[CLASSES];
    CK_OK(ibvi_layer_lr_multipliers(tu_layer(net, 0), IBVI_OPT_SGD, &wm, &bm));
    last_bias(net, bias, 0);
    /* bias - lr bm 3 = -3.401e38 */
    CK_OK(ibvi_optimizer_set_lr(b, (3.401e38f + bias[0]) / (3.0f * bm)));
    CK_OK(ibvi_optimizer_step(b));
    last_bias(net, bias, 0);
    ck_assert_msg(bias[0] < -3.4e38f, "b's step left the bias at %g",
                  (double)bias[0]);
    /* a's velocity of that bias (state: 15 weights, then the biases) */
    const int64_t count = ibvi_net_param_count(net);
    float *state = malloc(sizeof(float) * (size_t)count);
    read_state(net, a, state, count);
    const float v = 0.9f * state[IN * CLASSES] + 3.0f;
    ck_assert(v > 0.5f);
    free(state);
    fixed_gradient(net, x);
    CK_OK(ibvi_optimizer_set_lr(a, 4e35f / (bm * v)));
    expect_rejected(net, a);
    ibvi_optimizer_free(a);
    ibvi_optimizer_free(b);
    ibvi_net_free(net);
}
END_TEST

/* Finite but huge gradients with a trusted state: the update overflows
 * and must be caught (the gradient bounds of the backward must see it). */
START_TEST(test_huge_gradient)
{
    for (int kind = 0; kind < 2; kind++) {
        ibvi_net *net = make_net(25);
        const settings *o = kind ? &ADAM : &SGD_MOMENTUM;
        ibvi_optimizer *opt = make_optimizer(net, o);
        float x[N * IN], out[N * CLASSES], grad[N * CLASSES];
        int32_t labels[N];
        make_data(8, x, labels);
        warm_up(net, opt, x, labels);
        for (int i = 0; i < N * CLASSES; i++)
            grad[i] = i % 2 ? 1e36f : -1e36f;
        CK_OK(ibvi_net_forward(net, x, N, 1, out));
        CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
        CK_OK(ibvi_optimizer_set_lr(opt, kind ? 1e36f : 1e3f));
        expect_rejected(net, opt);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

/* Learning rates from harmless to absurd after the bounds are trusted:
 * each step either succeeds with finite values (the bounds may send it to
 * the exact check) or is rejected and changes nothing. */
START_TEST(test_huge_learning_rates)
{
    static const float rates[] = {1e3f, 1e10f, 1e20f, 1e30f, 1e36f, 3e38f};
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < 6; i++) {
            ibvi_net *net = make_net(23);
            const settings *o = kind ? &ADAM : &SGD_NESTEROV;
            ibvi_optimizer *opt = make_optimizer(net, o);
            float x[N * IN];
            int32_t labels[N];
            make_data(6, x, labels);
            warm_up(net, opt, x, labels);
            CK_OK(ibvi_optimizer_set_lr(opt, rates[i]));
            int rejected = 0;
            for (int t = 0; t < 4 && !rejected; t++) {
                fixed_gradient(net, x);
                int64_t s0;
                uint8_t *before = save(net, opt, &s0);
                const int rc = ibvi_optimizer_step(opt);
                if (rc == IBVI_OK) {
                    snapshot s;
                    take(net, opt, o->kind, &s);
                    for (int64_t k = 0; k < s.count; k++)
                        ck_assert(isfinite(s.param[k]));
                    for (int64_t k = 0; k < s.state_floats; k++)
                        ck_assert(isfinite(s.state[k]));
                    release(&s);
                } else {
                    CK_STATUS(rc, IBVI_ERR_NONFINITE);
                    int64_t s1;
                    uint8_t *after = save(net, opt, &s1);
                    ck_assert(s0 == s1 &&
                              memcmp(before, after, (size_t)s0) == 0);
                    free(after);
                    rejected = 1;
                }
                free(before);
            }
            /* SGD: lr x multiplier (7 for the first layer's weights under
             * muP) overflows to infinity. */
            if (kind == 0 && rates[i] >= 3e38f)
                ck_assert_msg(rejected, "lr %g was never rejected",
                              (double)rates[i]);
            ibvi_optimizer_free(opt);
            ibvi_net_free(net);
        }
}
END_TEST

/* Adam with lr 1e30: its bound (lr m / eps) is far above FLT_MAX, the
 * update itself (about lr) is not: the exact check must let it through,
 * and the step must still equal the reference. */
START_TEST(test_exact_check_passes_finite_update)
{
    settings o = ADAM;
    o.lr = 1e30f;
    ibvi_net *net = make_net(24);
    ibvi_optimizer *opt = make_optimizer(net, &ADAM);
    float x[N * IN];
    int32_t labels[N];
    make_data(7, x, labels);
    warm_up(net, opt, x, labels);
    CK_OK(ibvi_optimizer_set_lr(opt, o.lr));
    fixed_gradient(net, x);
    snapshot before, after;
    take(net, opt, o.kind, &before);
    CK_OK(ibvi_optimizer_step(opt));
    take(net, opt, o.kind, &after);
    reference_step(&o, 3, &before, after.grad);
    expect_close(after.param, before.param, after.count,
                 typical(before.param, before.count), "parameter", 3);
    expect_close(after.state, before.state, after.state_floats,
                 typical(before.state, before.state_floats), "state", 3);
    release(&before);
    release(&after);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* The exact check path and the bound-proven single pass run one SGD
 * formula (lib/optimizer.c, sgd_value): two identical networks trained
 * alike, one of them forced onto the exact path at every step (setting its
 * means to their own values makes its optimizer distrust its bounds), end
 * bitwise equal, for plain SGD, momentum and Nesterov (and Adam). */
START_TEST(test_exact_and_single_pass_bitwise_equal)
{
    const settings *all[] = {&SGD_PLAIN, &SGD_MOMENTUM, &SGD_NESTEROV, &ADAM};
    for (int k = 0; k < 4; k++) {
        ibvi_net *fast = make_net(31), *exact = make_net(31);
        ibvi_optimizer *of = make_optimizer(fast, all[k]);
        ibvi_optimizer *oe = make_optimizer(exact, all[k]);
        float x[N * IN];
        int32_t labels[N];
        make_data(9, x, labels);
        for (int t = 0; t < 6; t++) {
            for (int32_t i = 0; i < ibvi_net_layer_count(exact); i++) {
                ibvi_layer *l = tu_layer(exact, i);
                if (ibvi_layer_param_count(l) == 0)
                    continue;
                int64_t P;
                float *mean = tu_get_mean(l, &P);
                CK_OK(ibvi_layer_set_mean(l, mean, P));
                free(mean);
            }
            float lf, le;
            CK_OK(ibvi_train_step(fast, of, x, N, 2, IBVI_LOSS_SOFTMAX_XENT,
                                  labels, NULL, &lf));
            CK_OK(ibvi_train_step(exact, oe, x, N, 2, IBVI_LOSS_SOFTMAX_XENT,
                                  labels, NULL, &le));
            ck_assert_msg(memcmp(&lf, &le, sizeof lf) == 0,
                          "kind %d step %d: loss %.9g vs %.9g", k, t,
                          (double)lf, (double)le);
        }
        int64_t sf, se;
        uint8_t *bf = save(fast, of, &sf), *be = save(exact, oe, &se);
        ck_assert_int_eq(sf, se);
        ck_assert_msg(memcmp(bf, be, (size_t)sf) == 0,
                      "kind %d: the exact path and the single pass differ", k);
        free(bf);
        free(be);
        ibvi_optimizer_free(of);
        ibvi_optimizer_free(oe);
        ibvi_net_free(fast);
        ibvi_net_free(exact);
    }
}
END_TEST

/* ---- threads ----------------------------------------------------------------
 * The element-wise passes (the fused update and its factor gradient, the
 * sampling, biases, activations, maxima) are split across the network's
 * threads by chunks whose values do not depend on the split
 * (lib/parallel.h); BLIS splits its GEMMs by blocks of the output, never
 * along the sum. So training with 1 and 2 threads must give the same bits.
 * The networks are large enough that every factor pass, the mean weights,
 * the bias rows and the activations are cut into two chunks. On a machine
 * with one CPU both runs use one thread (ibvi_net_threads reports 1) and
 * the test only checks determinism. */

#define TH_IN 200
#define TH_N 128
#define TH_STEPS 50

/* 200 -> 192 (rank 4) -> tanh -> 192 -> ReLU -> 10 (rank 3). */
static ibvi_net *thread_mlp(int32_t threads)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, TH_IN, NULL));
    CK_OK(ibvi_net_set_threads(net, threads));
    CK_OK(ibvi_net_add_dense(net, 192, 4));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 192, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 10, 3));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 77));
    return net;
}

/* (3, 10, 10) -> conv 32 5x5 pad 2 (rank 16) -> ReLU -> + the conv's
 * output -> max pool 2 -> 10 (rank 2): the conv's factor is 2432 x 16
 * floats; the ReLU, the skip gradient and the pooling's input 3200 values
 * per example. */
static ibvi_net *thread_conv(int32_t threads)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 3, 10, 10, NULL));
    CK_OK(ibvi_net_set_threads(net, threads));
    CK_OK(ibvi_net_add_conv2d(net, 32, 5, 1, 2, 16));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_residual(net, 0, 0));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_dense(net, 10, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 78));
    return net;
}

/* Every layer's mean and factor, one after the other (malloc'ed). */
static float *all_params(ibvi_net *net, int64_t *count)
{
    int64_t total = 0;
    float *all = NULL;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_param_count(l) == 0)
            continue;
        int32_t rank = 0;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
        int64_t P, F = 0;
        float *mean = tu_get_mean(l, &P);
        float *factor = rank > 0 ? tu_get_factor(l, &F) : NULL;
        all = realloc(all, sizeof(float) * (size_t)(total + P + F));
        ck_assert_ptr_nonnull(all);
        memcpy(all + total, mean, sizeof(float) * (size_t)P);
        if (F > 0)
            memcpy(all + total + P, factor, sizeof(float) * (size_t)F);
        total += P + F;
        free(mean);
        free(factor);
    }
    *count = total;
    return all;
}

typedef struct trained {
    float *params, *state;
    int64_t count, state_floats;
    float loss[TH_STEPS];
} trained;

static trained train_with_threads(ibvi_net *(*build)(int32_t),
                                  const settings *o, int32_t threads,
                                  int32_t samples, const float *x,
                                  const int32_t *labels, int64_t n)
{
    ibvi_net *net = build(threads);
    ibvi_optimizer *opt = make_optimizer(net, o);
    trained t;
    for (int s = 0; s < TH_STEPS; s++)
        CK_OK(ibvi_train_step(net, opt, x, n, samples, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, &t.loss[s]));
    t.params = all_params(net, &t.count);
    t.state_floats = (o->kind == IBVI_OPT_ADAM ? 2 : 1) *
                     ibvi_net_param_count(net);
    t.state = malloc(sizeof(float) * (size_t)t.state_floats);
    ck_assert_ptr_nonnull(t.state);
    read_state(net, opt, t.state, t.state_floats);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return t;
}

static void expect_same_bits(const trained *a, const trained *b,
                             const char *what)
{
    for (int s = 0; s < TH_STEPS; s++)
        ck_assert_msg(memcmp(&a->loss[s], &b->loss[s], sizeof(float)) == 0,
                      "%s: step %d loss %.9g (1 thread) vs %.9g", what, s,
                      (double)a->loss[s], (double)b->loss[s]);
    ck_assert_int_eq(a->count, b->count);
    for (int64_t i = 0; i < a->count; i++)
        ck_assert_msg(memcmp(&a->params[i], &b->params[i], sizeof(float)) == 0,
                      "%s: parameter %lld = %.9g (1 thread) vs %.9g", what,
                      (long long)i, (double)a->params[i],
                      (double)b->params[i]);
    for (int64_t i = 0; i < a->state_floats; i++)
        ck_assert_msg(memcmp(&a->state[i], &b->state[i], sizeof(float)) == 0,
                      "%s: state %lld = %.9g (1 thread) vs %.9g", what,
                      (long long)i, (double)a->state[i], (double)b->state[i]);
}

static void release_trained(trained *t)
{
    free(t->params);
    free(t->state);
}

static void compare_thread_counts(ibvi_net *(*build)(int32_t), int64_t n,
                                  int64_t input_dim, const char *name)
{
    const settings *all[] = {&SGD_PLAIN, &SGD_MOMENTUM, &SGD_NESTEROV, &ADAM};
    static const char *const names[] = {"sgd", "momentum", "nesterov", "adam"};
    float *x = malloc(sizeof(float) * (size_t)(n * input_dim));
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)n);
    ck_assert(x && labels);
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    tu_fill_normal_f(&rng, x, n * input_dim, 1.0);
    for (int64_t i = 0; i < n; i++)
        labels[i] = tu_rng_int(&rng, 10);
    ibvi_net *probe = build(2);
    if (ibvi_net_threads(probe) < 2)
        fprintf(stderr, "%s: one CPU, the 2-thread runs use one thread\n",
                name);
    ibvi_net_free(probe);
    /* Every optimizer with one sample; Adam also with three (the sum of
     * the per-sample gradients, the factor gradient's general path). */
    static const struct { int kind; int32_t samples; } runs[] = {
        {0, 1}, {1, 1}, {2, 1}, {3, 1}, {3, 3}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        const int k = runs[r].kind;
        const int32_t samples = runs[r].samples;
        char what[64];
        snprintf(what, sizeof what, "%s %s, %d sample%s", name, names[k],
                 (int)samples, samples > 1 ? "s" : "");
        trained one = train_with_threads(build, all[k], 1, samples, x, labels,
                                         n);
        trained two = train_with_threads(build, all[k], 2, samples, x, labels,
                                         n);
        expect_same_bits(&one, &two, what);
        release_trained(&one);
        release_trained(&two);
    }
    free(x);
    free(labels);
}

START_TEST(test_mlp_threads_bitwise_equal)
{
    compare_thread_counts(thread_mlp, TH_N, TH_IN, "mlp");
}
END_TEST

START_TEST(test_conv_threads_bitwise_equal)
{
    compare_thread_counts(thread_conv, 24, 3 * 10 * 10, "conv");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fused");
    TCase *tc = tu_tcase("reference");
    tcase_add_test(tc, test_sgd_plain_matches_reference);
    tcase_add_test(tc, test_sgd_momentum_matches_reference);
    tcase_add_test(tc, test_sgd_nesterov_matches_reference);
    tcase_add_test(tc, test_adam_matches_reference);
    suite_add_tcase(s, tc);
    tc = tu_tcase("grad_factor");
    tcase_add_test(tc, test_grad_factor_one_sample);
    tcase_add_test(tc, test_grad_factor_three_samples);
    tcase_add_test(tc, test_grad_factor_zero_cases);
    suite_add_tcase(s, tc);
    tc = tu_tcase("presampled");
    tcase_add_test(tc, test_presampled_weights);
    tcase_add_test(tc, test_presampled_weights_invalidated);
    suite_add_tcase(s, tc);
    tc = tu_tcase("nonfinite");
    tcase_add_test(tc, test_stale_bounds_after_set_mean);
    tcase_add_test(tc, test_stale_bounds_after_other_optimizer);
    tcase_add_test(tc, test_huge_gradient);
    tcase_add_test(tc, test_huge_learning_rates);
    tcase_add_test(tc, test_exact_check_passes_finite_update);
    tcase_add_test(tc, test_exact_and_single_pass_bitwise_equal);
    suite_add_tcase(s, tc);
    tc = tu_tcase("threads");
    tcase_add_test(tc, test_mlp_threads_bitwise_equal);
    tcase_add_test(tc, test_conv_threads_bitwise_equal);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * libibvi tests - the parameterizations (docs/concepts.md, "The prior and the
 * parameterizations").
 *
 * 1. The multiplier and init-std queries against the table, for every role
 *    and both optimizers.
 * 2. The optimizers apply those multipliers: one SGD step moves each mean
 *    entry by -lr * mult * g and each factor entry by -lr * mult / R * g; one
 *    Adam step by -lr * mult * g / (|g| + eps).
 * 3. The muP coordinate check: an MLP 32 -> w -> ReLU -> w -> ReLU -> 10 for
 *    widths 64 ... 2048 (and a CNN of 16, 32, 64 channels), a few SGD steps
 *    with the same base lr; the size of
 *    the updates of the hidden activations and of the logits stays flat in
 *    width under muP and grows with width under SP.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int rel_eq(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) + 1e-30;
}

/* ---- the table ------------------------------------------------------------- */

typedef struct expect {
    double w_std, b_std;
    double sgd_w, sgd_b, adam_w, adam_b;
} expect;

static expect table_row(int param, int role, int fan_in, int fan_out)
{
    expect e;
    e.b_std = 1.0;
    e.w_std = 1.0 / sqrt((double)fan_in);
    e.sgd_w = e.sgd_b = e.adam_w = e.adam_b = 1.0;
    if (param == IBVI_PARAM_SP || role == IBVI_ROLE_SINGLE)
        return e;
    switch (role) {
    case IBVI_ROLE_INPUT:
        e.sgd_w = fan_out;
        e.sgd_b = fan_out;
        break;
    case IBVI_ROLE_HIDDEN:
        e.sgd_b = fan_out;
        e.adam_w = 1.0 / fan_in;
        break;
    case IBVI_ROLE_OUTPUT:
        e.w_std = 1.0 / fan_in;
        e.sgd_w = 1.0 / fan_in;
        e.sgd_b = fan_out;
        e.adam_w = 1.0 / fan_in;
        break;
    default:
        ck_abort_msg("unexpected role %d", role);
    }
    return e;
}

/* A net with every role, fan-ins and fan-outs all different:
 * 7 -> 11 (R 2) -> tanh -> 13 (R 0) -> tanh -> 9 (R 1) -> silu -> 5 (R 3). */
static ibvi_net *roles_net(int param, uint64_t seed)
{
    ibvi_net *net = tu_net_new(7, NULL);
    CK_OK(ibvi_net_add_dense(net, 11, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 13, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 9, 1));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, 5, 3));
    CK_OK(ibvi_net_init(net, param, seed));
    return net;
}

static ibvi_net *single_net(int param, uint64_t seed)
{
    ibvi_net *net = tu_net_new(6, NULL);
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_init(net, param, seed));
    return net;
}

static void check_table(ibvi_net *net, int param, const int *expected_roles)
{
    int32_t nl = ibvi_net_layer_count(net);
    for (int32_t i = 0; i < nl; i++) {
        ibvi_layer *l = tu_layer(net, i);
        int32_t role = ibvi_layer_get_role(l);
        ck_assert_msg(role == expected_roles[i], "layer %d role %d, expected %d",
                      (int)i, (int)role, expected_roles[i]);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t in, out, rank;
        CK_OK(ibvi_layer_shape(l, &in, &out, &rank));
        expect e = table_row(param, role, in, out);
        float ws, bs;
        CK_OK(ibvi_layer_init_std(l, &ws, &bs));
        ck_assert_msg(rel_eq(ws, e.w_std, 1e-6) && rel_eq(bs, e.b_std, 1e-6),
                      "param %d layer %d role %d: init std %g/%g, expected "
                      "%g/%g",
                      param, (int)i, (int)role, ws, bs, e.w_std, e.b_std);
        float wm, bm;
        CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_SGD, &wm, &bm));
        ck_assert_msg(rel_eq(wm, e.sgd_w, 1e-6) && rel_eq(bm, e.sgd_b, 1e-6),
                      "param %d layer %d role %d: SGD multipliers %g/%g, "
                      "expected %g/%g",
                      param, (int)i, (int)role, wm, bm, e.sgd_w, e.sgd_b);
        CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_ADAM, &wm, &bm));
        ck_assert_msg(rel_eq(wm, e.adam_w, 1e-6) && rel_eq(bm, e.adam_b, 1e-6),
                      "param %d layer %d role %d: Adam multipliers %g/%g, "
                      "expected %g/%g",
                      param, (int)i, (int)role, wm, bm, e.adam_w, e.adam_b);
    }
}

START_TEST(test_table_queries)
{
    static const int roles[7] = {IBVI_ROLE_INPUT,  IBVI_ROLE_NONE,
                                 IBVI_ROLE_HIDDEN, IBVI_ROLE_NONE,
                                 IBVI_ROLE_HIDDEN, IBVI_ROLE_NONE,
                                 IBVI_ROLE_OUTPUT};
    static const int single[1] = {IBVI_ROLE_SINGLE};
    for (int param = IBVI_PARAM_SP; param <= IBVI_PARAM_MUP; param++) {
        ibvi_net *net = roles_net(param, 1);
        ck_assert_int_eq(ibvi_net_parameterization(net), param);
        check_table(net, param, roles);
        ibvi_net_free(net);
        net = single_net(param, 1);
        check_table(net, param, single);
        ibvi_net_free(net);
    }
}
END_TEST

/* Roles are known before init (they depend on the architecture only) and a
 * two-layer net has input and output, no hidden. */
START_TEST(test_roles_two_layers)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 8, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
    static const int roles[3] = {IBVI_ROLE_INPUT, IBVI_ROLE_NONE,
                                 IBVI_ROLE_OUTPUT};
    check_table(net, IBVI_PARAM_MUP, roles);
    ibvi_net_free(net);
}
END_TEST

/* ---- the optimizers apply the multipliers ---------------------------------- */

/* _i: parameterization (SP, muP) x optimizer (SGD, Adam) x net (roles,
 * single). */
START_TEST(test_step_uses_multipliers)
{
    int param = _i % 2;
    int kind = (_i / 2) % 2 ? IBVI_OPT_ADAM : IBVI_OPT_SGD;
    int which = (_i / 4) % 2;
    ibvi_net *net = which ? single_net(param, 11) : roles_net(param, 11);
    int32_t in_dim = ibvi_net_input_dim(net), out_dim = ibvi_net_output_dim(net);
    const int64_t n = 6;
    tu_rng rng;
    tu_rng_seed(&rng, 17);
    float *x = malloc(sizeof(float) * (size_t)(n * in_dim));
    ck_assert_ptr_nonnull(x);
    tu_fill_normal_f(&rng, x, n * in_dim, 1.0);
    int32_t labels[6];
    for (int i = 0; i < n; i++)
        labels[i] = i % out_dim;

    int32_t nl = ibvi_net_layer_count(net);
    float *before[8] = {0}, *fbefore[8] = {0};
    for (int32_t i = 0; i < nl; i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t rank;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
        before[i] = tu_get_mean(l, NULL);
        if (rank > 0)
            fbefore[i] = tu_get_factor(l, NULL);
    }
    const float lr = 0.05f;
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, kind, lr));
    float loss;
    CK_OK(ibvi_train_step(net, opt, x, n, 1, IBVI_LOSS_SOFTMAX_XENT, labels,
                          NULL, &loss));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 1);

    for (int32_t i = 0; i < nl; i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t in, out, rank;
        CK_OK(ibvi_layer_shape(l, &in, &out, &rank));
        expect e = table_row(param, ibvi_layer_get_role(l), in, out);
        double wm = kind == IBVI_OPT_SGD ? e.sgd_w : e.adam_w;
        double bm = kind == IBVI_OPT_SGD ? e.sgd_b : e.adam_b;
        int64_t P = ibvi_layer_param_count(l);
        for (int part = 0; part < 2; part++) {
            if (part == 1 && rank == 0)
                break;
            int64_t cols = part == 0 ? 1 : rank;
            int64_t len = P * cols;
            float *now = part == 0 ? tu_get_mean(l, NULL) : tu_get_factor(l, NULL);
            float *g = malloc(sizeof(float) * (size_t)len);
            ck_assert_ptr_nonnull(g);
            if (part == 0)
                CK_OK(ibvi_layer_get_grad_mean(l, g, len));
            else
                CK_OK(ibvi_layer_get_grad_factor(l, g, len));
            const float *old = part == 0 ? before[i] : fbefore[i];
            int64_t checked = 0;
            for (int64_t k = 0; k < len; k++) {
                int64_t p = k / cols; /* parameter row */
                double mult = (p < (int64_t)in * out ? wm : bm) /
                              (part == 0 ? 1.0 : (double)rank);
                double step;
                if (kind == IBVI_OPT_SGD)
                    step = lr * mult * g[k];
                else
                    step = lr * mult * g[k] / (fabs(g[k]) + 1e-8);
                double delta = (double)old[k] - now[k];
                double tol = 2e-7 * fabs(old[k]) + 1e-3 * fabs(step) + 1e-12;
                ck_assert_msg(fabs(delta - step) <= tol,
                              "param %d opt %d layer %d %s[%lld]: moved %.8g, "
                              "expected %.8g (mult %g, grad %g)",
                              param, kind, (int)i, part ? "factor" : "mean",
                              (long long)k, delta, step, mult, g[k]);
                if (fabs(step) > 1e-4 * fabs(old[k]) && fabs(step) > 1e-9)
                    checked++;
            }
            /* most entries must have moved measurably */
            ck_assert_msg(checked > len / 2,
                          "layer %d %s: only %lld of %lld entries moved", (int)i,
                          part ? "factor" : "mean", (long long)checked,
                          (long long)len);
            free(now);
            free(g);
        }
        free(before[i]);
        free(fbefore[i]);
    }
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(x);
}
END_TEST

/* Several steps of SGD with momentum, Nesterov and Adam (non-default
 * betas) follow the update formulas of optimizer.h with the multipliers,
 * including a learning-rate change and ibvi_optimizer_reset() mid-run.
 * _i: 0 momentum, 1 Nesterov, 2 Adam. */
typedef struct traj_state {
    double *v;  /* velocity or first moment, per mean/factor entry */
    double *s;  /* Adam second moment */
} traj_state;

START_TEST(test_optimizer_trajectory)
{
    const int variant = _i;
    const int kind = variant == 2 ? IBVI_OPT_ADAM : IBVI_OPT_SGD;
    const double mom = 0.8, b1 = 0.7, b2 = 0.95, eps = 1e-6;
    ibvi_net *net = roles_net(IBVI_PARAM_MUP, 23);
    int32_t in_dim = ibvi_net_input_dim(net), out_dim = ibvi_net_output_dim(net);
    const int64_t n = 5;
    tu_rng rng;
    tu_rng_seed(&rng, 29);
    float *x = malloc(sizeof(float) * (size_t)(n * in_dim));
    ck_assert_ptr_nonnull(x);
    tu_fill_normal_f(&rng, x, n * in_dim, 1.0);
    int32_t labels[5];
    for (int i = 0; i < n; i++)
        labels[i] = (i * 3) % out_dim;

    ibvi_optimizer *opt = NULL;
    float lr = 0.02f;
    CK_OK(ibvi_optimizer_create(&opt, net, kind, lr));
    if (kind == IBVI_OPT_SGD)
        CK_OK(ibvi_optimizer_set_momentum(opt, (float)mom, variant == 1));
    else
        CK_OK(ibvi_optimizer_set_adam(opt, (float)b1, (float)b2, (float)eps));

    int32_t nl = ibvi_net_layer_count(net);
    traj_state st[8][2];
    memset(st, 0, sizeof st);
    int64_t t_local = 0; /* steps since the last reset */
    for (int step = 0; step < 6; step++) {
        if (step == 2) {
            lr = 0.035f;
            CK_OK(ibvi_optimizer_set_lr(opt, lr));
        }
        if (step == 4) {
            CK_OK(ibvi_optimizer_reset(opt));
            ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
            t_local = 0;
            for (int32_t i = 0; i < nl; i++)
                for (int part = 0; part < 2; part++) {
                    free(st[i][part].v);
                    free(st[i][part].s);
                    st[i][part].v = st[i][part].s = NULL;
                }
        }
        /* parameters before the step */
        float *before[8][2] = {{0}};
        for (int32_t i = 0; i < nl; i++) {
            ibvi_layer *l = tu_layer(net, i);
            if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
                continue;
            int32_t rank;
            CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
            before[i][0] = tu_get_mean(l, NULL);
            if (rank > 0)
                before[i][1] = tu_get_factor(l, NULL);
        }
        CK_OK(ibvi_train_step(net, opt, x, n, 1, IBVI_LOSS_SOFTMAX_XENT, labels,
                              NULL, NULL));
        t_local++;
        for (int32_t i = 0; i < nl; i++) {
            ibvi_layer *l = tu_layer(net, i);
            if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
                continue;
            int32_t in, out, rank;
            CK_OK(ibvi_layer_shape(l, &in, &out, &rank));
            expect e = table_row(IBVI_PARAM_MUP, ibvi_layer_get_role(l), in, out);
            double wm = kind == IBVI_OPT_SGD ? e.sgd_w : e.adam_w;
            double bm = kind == IBVI_OPT_SGD ? e.sgd_b : e.adam_b;
            int64_t P = ibvi_layer_param_count(l);
            for (int part = 0; part < 2; part++) {
                if (part == 1 && rank == 0)
                    break;
                int64_t cols = part == 0 ? 1 : rank, len = P * cols;
                float *now = part ? tu_get_factor(l, NULL) : tu_get_mean(l, NULL);
                float *g = malloc(sizeof(float) * (size_t)len);
                ck_assert_ptr_nonnull(g);
                if (part)
                    CK_OK(ibvi_layer_get_grad_factor(l, g, len));
                else
                    CK_OK(ibvi_layer_get_grad_mean(l, g, len));
                traj_state *ts = &st[i][part];
                if (!ts->v) {
                    ts->v = calloc((size_t)len, sizeof(double));
                    ts->s = calloc((size_t)len, sizeof(double));
                    ck_assert(ts->v && ts->s);
                }
                for (int64_t k = 0; k < len; k++) {
                    double mult = (k / cols < (int64_t)in * out ? wm : bm) /
                                  (double)cols;
                    double gk = g[k], upd;
                    if (kind == IBVI_OPT_SGD) {
                        ts->v[k] = mom * ts->v[k] + gk;
                        upd = variant == 1 ? gk + mom * ts->v[k] : ts->v[k];
                    } else {
                        ts->v[k] = b1 * ts->v[k] + (1 - b1) * gk;
                        ts->s[k] = b2 * ts->s[k] + (1 - b2) * gk * gk;
                        double mh = ts->v[k] / (1 - pow(b1, (double)t_local));
                        double vh = ts->s[k] / (1 - pow(b2, (double)t_local));
                        upd = mh / (sqrt(vh) + eps);
                    }
                    double expect_step = lr * mult * upd;
                    double delta = (double)before[i][part][k] - now[k];
                    double tol = 3e-7 * fabs(before[i][part][k]) +
                                 2e-3 * fabs(expect_step) + 1e-9;
                    ck_assert_msg(fabs(delta - expect_step) <= tol,
                                  "variant %d step %d layer %d %s[%lld]: "
                                  "moved %.8g, expected %.8g",
                                  variant, step, (int)i,
                                  part ? "factor" : "mean", (long long)k, delta,
                                  expect_step);
                }
                free(now);
                free(g);
                free(before[i][part]);
            }
        }
    }
    for (int32_t i = 0; i < nl; i++)
        for (int part = 0; part < 2; part++) {
            free(st[i][part].v);
            free(st[i][part].s);
        }
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(x);
}
END_TEST

/* ---- coordinate check -------------------------------------------------------- */

#define CC_IN 32
#define CC_OUT 10
#define CC_N 64
#define CC_STEPS 5
#define CC_LR 0.05f
#define CC_NW 6
static const int32_t k_widths[CC_NW] = {64, 128, 256, 512, 1024, 2048};

typedef struct cc_result {
    double h_rms;    /* RMS of the second hidden layer's pre-activation at init */
    double dh1_rms;  /* RMS of the change of the first hidden pre-activation */
    double dh_rms;   /* RMS of the change of the second one */
    double df_rms;   /* RMS of the change of the logits */
    double dh_rms1;  /* the same two after the first step only */
    double df_rms1;
} cc_result;

static double rms_diff(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (b ? b[i] : 0.0f);
        s += d * d;
    }
    return sqrt(s / (double)n);
}

/* Pre-activations of the first (depth 1) or second (depth 2) dense layer:
 * a truncated copy of net's first layers, fed with net's current means. */
static void hidden_preact(ibvi_net *net, int32_t width, int depth,
                          const float *x, float *h)
{
    ibvi_net *t = tu_net_new(CC_IN, NULL);
    CK_OK(ibvi_net_add_dense(t, width, 0));
    if (depth == 2) {
        CK_OK(ibvi_net_add_activation(t, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_dense(t, width, 0));
    }
    CK_OK(ibvi_net_init(t, IBVI_PARAM_SP, 1));
    for (int32_t i = 0; i < (depth == 2 ? 3 : 1); i += 2) {
        int64_t P;
        float *m = tu_get_mean(tu_layer(net, i), &P);
        CK_OK(ibvi_layer_set_mean(tu_layer(t, i), m, P));
        free(m);
    }
    CK_OK(ibvi_net_forward_mean(t, x, CC_N, h));
    ibvi_net_free(t);
}

static cc_result coord_check(int param, int32_t width, uint64_t seed)
{
    ibvi_net *net = tu_net_new(CC_IN, NULL);
    CK_OK(ibvi_net_add_dense(net, width, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, width, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, CC_OUT, 0));
    CK_OK(ibvi_net_init(net, param, seed));

    tu_rng rng;
    tu_rng_seed(&rng, 2024); /* same data for every width */
    float x[CC_N * CC_IN];
    int32_t labels[CC_N];
    tu_fill_normal_f(&rng, x, CC_N * CC_IN, 1.0);
    for (int i = 0; i < CC_N; i++)
        labels[i] = tu_rng_int(&rng, CC_OUT);

    float *h0 = malloc(sizeof(float) * (size_t)CC_N * width);
    float *h1 = malloc(sizeof(float) * (size_t)CC_N * width);
    float *g0 = malloc(sizeof(float) * (size_t)CC_N * width);
    float *g1 = malloc(sizeof(float) * (size_t)CC_N * width);
    float f0[CC_N * CC_OUT], f1[CC_N * CC_OUT];
    ck_assert(h0 && h1 && g0 && g1);
    hidden_preact(net, width, 2, x, h0);
    hidden_preact(net, width, 1, x, g0);
    CK_OK(ibvi_net_forward_mean(net, x, CC_N, f0));

    cc_result r;
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, CC_LR));
    for (int t = 0; t < CC_STEPS; t++) {
        CK_OK(ibvi_train_step(net, opt, x, CC_N, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, NULL));
        if (t == 0) {
            hidden_preact(net, width, 2, x, h1);
            CK_OK(ibvi_net_forward_mean(net, x, CC_N, f1));
            r.dh_rms1 = rms_diff(h1, h0, (int64_t)CC_N * width);
            r.df_rms1 = rms_diff(f1, f0, CC_N * CC_OUT);
        }
    }
    ibvi_optimizer_free(opt);

    hidden_preact(net, width, 2, x, h1);
    hidden_preact(net, width, 1, x, g1);
    CK_OK(ibvi_net_forward_mean(net, x, CC_N, f1));
    r.h_rms = rms_diff(h0, NULL, (int64_t)CC_N * width);
    r.dh_rms = rms_diff(h1, h0, (int64_t)CC_N * width);
    r.dh1_rms = rms_diff(g1, g0, (int64_t)CC_N * width);
    r.df_rms = rms_diff(f1, f0, CC_N * CC_OUT);
    free(h0);
    free(h1);
    free(g0);
    free(g1);
    ibvi_net_free(net);
    return r;
}

static void coord_sweep(int param, cc_result *res)
{
    for (int k = 0; k < CC_NW; k++) {
        res[k] = coord_check(param, k_widths[k], 5);
        printf("coord check %s width %4d: |h2| %.4g  after 1 step: |dh2| %.4g "
               "|dlogits| %.4g  after %d: |dh1| %.4g |dh2| %.4g "
               "|dlogits| %.4g\n",
               param == IBVI_PARAM_MUP ? "muP" : "SP ", (int)k_widths[k],
               res[k].h_rms, res[k].dh_rms1, res[k].df_rms1, CC_STEPS,
               res[k].dh1_rms, res[k].dh_rms, res[k].df_rms);
        ck_assert(isfinite(res[k].dh_rms) && isfinite(res[k].df_rms));
    }
    fflush(stdout);
}

static double band(const cc_result *res, size_t offset)
{
    double lo = INFINITY, hi = 0.0;
    for (int k = 0; k < CC_NW; k++) {
        double v = *(const double *)((const char *)&res[k] + offset);
        lo = fmin(lo, v);
        hi = fmax(hi, v);
    }
    return hi / lo;
}

static double growth(const cc_result *res, size_t offset)
{
    double a = *(const double *)((const char *)&res[0] + offset);
    double b = *(const double *)((const char *)&res[CC_NW - 1] + offset);
    return b / a;
}

/* Measured with CC_LR = 0.05, CC_STEPS = 5, seed 5 (RMS over 64 inputs):
 *
 *  width        64     128    256    512    1024   2048
 *  muP |h2|     1.175  1.675  1.414  1.389  1.424  1.403
 *  muP 1 step:  |dh2| 0.0360 0.0320 0.0285 0.0287 0.0307 0.0426 (band 1.49)
 *               |df|  0.0605 0.0440 0.0436 0.0462 0.0493 0.0820 (band 1.88)
 *  muP 5 steps: |dh1| 0.119  0.110  0.102  0.105  0.107  0.120  (band 1.18)
 *               |dh2| 0.159  0.147  0.127  0.132  0.139  0.176  (band 1.39)
 *               |df|  0.270  0.200  0.181  0.196  0.218  0.322  (band 1.78)
 *  SP 1 step:   |dh2| 0.0518 0.0819 0.0995 0.0861 0.194  0.568  (x 11)
 *               |df|  0.298  0.821  1.34   1.64   5.26   21.2   (x 71)
 *  SP 5 steps:  |dh1| 0.0148 0.0091 0.0061 0.0043 0.0035 0.0025 (/ 6)
 *               |dh2| 0.147  0.110  0.115  0.157  0.925  1.51   (x 10)
 *               |df|  0.851  0.960  1.23   1.48   1.58   1.14
 * Under SP the logits' update after 5 steps is not monotone in width: the
 * large widths oscillate (training loss 5.98 at width 1024), so SP is judged
 * on the first step and on the hidden layers. The init size |h2| is the same
 * under both (1/sqrt(fan_in) for hidden layers); its spread is init noise. */
START_TEST(test_coord_check_mup)
{
    cc_result res[CC_NW];
    coord_sweep(IBVI_PARAM_MUP, res);
    double b_h = band(res, offsetof(cc_result, h_rms));
    double b_dh1 = band(res, offsetof(cc_result, dh1_rms));
    double b_dh = band(res, offsetof(cc_result, dh_rms));
    double b_df = band(res, offsetof(cc_result, df_rms));
    double b_dh_1 = band(res, offsetof(cc_result, dh_rms1));
    double b_df_1 = band(res, offsetof(cc_result, df_rms1));
    printf("muP max/min over widths: h2 %.3g; 1 step: dh2 %.3g dlogits %.3g; "
           "%d steps: dh1 %.3g dh2 %.3g dlogits %.3g\n",
           b_h, b_dh_1, b_df_1, CC_STEPS, b_dh1, b_dh, b_df);
    ck_assert_msg(b_h < 2.0, "muP: activation size drifts with width (%g)", b_h);
    ck_assert_msg(b_dh_1 < 2.5, "muP: hidden update (1 step) drifts (%g)",
                  b_dh_1);
    ck_assert_msg(b_df_1 < 2.5, "muP: logit update (1 step) drifts (%g)",
                  b_df_1);
    ck_assert_msg(b_dh1 < 2.5, "muP: first-layer update drifts (%g)", b_dh1);
    ck_assert_msg(b_dh < 2.5, "muP: hidden update drifts with width (%g)", b_dh);
    ck_assert_msg(b_df < 2.5, "muP: logit update drifts with width (%g)", b_df);
}
END_TEST

START_TEST(test_coord_check_sp)
{
    cc_result res[CC_NW];
    coord_sweep(IBVI_PARAM_SP, res);
    double g_dh_1 = growth(res, offsetof(cc_result, dh_rms1));
    double g_df_1 = growth(res, offsetof(cc_result, df_rms1));
    double g_dh = growth(res, offsetof(cc_result, dh_rms));
    double g_dh1 = growth(res, offsetof(cc_result, dh1_rms));
    printf("SP growth 2048 vs 64: 1 step: dh2 %.3g dlogits %.3g; %d steps: "
           "dh1 %.3g dh2 %.3g\n",
           g_dh_1, g_df_1, CC_STEPS, g_dh1, g_dh);
    ck_assert_msg(g_dh_1 > 4.0, "SP: hidden update does not grow (%g)", g_dh_1);
    ck_assert_msg(g_df_1 > 10.0, "SP: logit update does not grow (%g)", g_df_1);
    ck_assert_msg(g_dh > 4.0, "SP: hidden update (%d steps) does not grow (%g)",
                  CC_STEPS, g_dh);
    /* and the first layer's update vanishes with width */
    ck_assert_msg(g_dh1 < 1.0 / 3.0, "SP: first-layer update does not shrink "
                  "(%g)", g_dh1);
}
END_TEST

/* ---- coordinate check over conv widths ------------------------------------
 * The same check for a small CNN, (3, 8, 8) -> conv(w, 3x3, pad 1) -> ReLU
 * -> conv(w, 3x3, pad 1) -> ReLU -> global average pool -> dense 10, for
 * channel widths w = 16, 32, 64: the conv's fans are fan_in = C_in kh kw
 * and fan_out = C_out kh kw, so its muP multipliers scale with the channel
 * count as a dense layer's do with its width. */

#define CV_C 3
#define CV_HW 8
#define CV_IN (CV_C * CV_HW * CV_HW)
#define CV_N 32
#define CV_NW 3
#define CV_SEEDS 6
static const int32_t k_conv_widths[CV_NW] = {16, 32, 64};

static ibvi_net *conv_stack(int32_t width, int depth, int param, uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, CV_C, CV_HW, CV_HW, NULL));
    CK_OK(ibvi_net_add_conv2d(net, width, 3, 1, 1, 0));
    if (depth >= 2) {
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_conv2d(net, width, 3, 1, 1, 0));
    }
    if (depth == 3) {
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_global_avgpool(net));
        CK_OK(ibvi_net_add_dense(net, CC_OUT, 0));
    }
    CK_OK(ibvi_net_init(net, param, seed));
    return net;
}

/* The first (depth 1) or second (depth 2) conv's pre-activations, from a
 * truncated copy fed with net's current means. */
static void conv_preact(ibvi_net *net, int32_t width, int depth,
                        const float *x, float *h)
{
    ibvi_net *t = conv_stack(width, depth, IBVI_PARAM_SP, 1);
    for (int32_t i = 0; i < (depth == 2 ? 3 : 1); i += 2) {
        int64_t P;
        float *m = tu_get_mean(tu_layer(net, i), &P);
        CK_OK(ibvi_layer_set_mean(tu_layer(t, i), m, P));
        free(m);
    }
    CK_OK(ibvi_net_forward_mean(t, x, CV_N, h));
    ibvi_net_free(t);
}

static cc_result conv_coord_check(int param, int32_t width, uint64_t seed)
{
    ibvi_net *net = conv_stack(width, 3, param, seed);
    tu_rng rng;
    tu_rng_seed(&rng, 2025); /* same data for every width */
    float *x = malloc(sizeof(float) * CV_N * CV_IN);
    ck_assert_ptr_nonnull(x);
    int32_t labels[CV_N];
    tu_fill_normal_f(&rng, x, CV_N * CV_IN, 1.0);
    for (int i = 0; i < CV_N; i++)
        labels[i] = tu_rng_int(&rng, CC_OUT);
    const int64_t hn = (int64_t)CV_N * width * CV_HW * CV_HW;
    float *h0 = malloc(sizeof(float) * (size_t)hn);
    float *h1 = malloc(sizeof(float) * (size_t)hn);
    float *g0 = malloc(sizeof(float) * (size_t)hn);
    float *g1 = malloc(sizeof(float) * (size_t)hn);
    float f0[CV_N * CC_OUT], f1[CV_N * CC_OUT];
    ck_assert(h0 && h1 && g0 && g1);
    conv_preact(net, width, 2, x, h0);
    conv_preact(net, width, 1, x, g0);
    CK_OK(ibvi_net_forward_mean(net, x, CV_N, f0));

    cc_result r;
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, CC_LR));
    for (int t = 0; t < CC_STEPS; t++) {
        CK_OK(ibvi_train_step(net, opt, x, CV_N, 1, IBVI_LOSS_SOFTMAX_XENT,
                              labels, NULL, NULL));
        if (t == 0) {
            conv_preact(net, width, 2, x, h1);
            CK_OK(ibvi_net_forward_mean(net, x, CV_N, f1));
            r.dh_rms1 = rms_diff(h1, h0, hn);
            r.df_rms1 = rms_diff(f1, f0, CV_N * CC_OUT);
        }
    }
    ibvi_optimizer_free(opt);
    conv_preact(net, width, 2, x, h1);
    conv_preact(net, width, 1, x, g1);
    CK_OK(ibvi_net_forward_mean(net, x, CV_N, f1));
    r.h_rms = rms_diff(h0, NULL, hn);
    r.dh_rms = rms_diff(h1, h0, hn);
    r.dh1_rms = rms_diff(g1, g0, hn);
    r.df_rms = rms_diff(f1, f0, CV_N * CC_OUT);
    free(x);
    free(h0);
    free(h1);
    free(g0);
    free(g1);
    ibvi_net_free(net);
    return r;
}

static double conv_band(const cc_result *res, size_t offset)
{
    double lo = INFINITY, hi = 0.0;
    for (int k = 0; k < CV_NW; k++) {
        double v = *(const double *)((const char *)&res[k] + offset);
        lo = fmin(lo, v);
        hi = fmax(hi, v);
    }
    return hi / lo;
}

static double conv_growth(const cc_result *res, size_t offset)
{
    double a = *(const double *)((const char *)&res[0] + offset);
    double b = *(const double *)((const char *)&res[CV_NW - 1] + offset);
    return b / a;
}

static void conv_sweep(int param, cc_result *res)
{
    for (int k = 0; k < CV_NW; k++) {
        /* The mean over CV_SEEDS initialisations: at these widths one
         * draw's sizes scatter by a factor 2 (measured: width 64 seed 5 gave
         * 1.9x the 1-step update of width 128). */
        cc_result sum = {0};
        for (int seed = 0; seed < CV_SEEDS; seed++) {
            const cc_result r = conv_coord_check(param, k_conv_widths[k],
                                                 5 + (uint64_t)seed);
            sum.h_rms += r.h_rms / CV_SEEDS;
            sum.dh1_rms += r.dh1_rms / CV_SEEDS;
            sum.dh_rms += r.dh_rms / CV_SEEDS;
            sum.df_rms += r.df_rms / CV_SEEDS;
            sum.dh_rms1 += r.dh_rms1 / CV_SEEDS;
            sum.df_rms1 += r.df_rms1 / CV_SEEDS;
        }
        res[k] = sum;
        printf("conv coord check %s channels %2d: |h2| %.4g  after 1 step: "
               "|dh2| %.4g |dlogits| %.4g  after %d: |dh1| %.4g |dh2| %.4g "
               "|dlogits| %.4g\n",
               param == IBVI_PARAM_MUP ? "muP" : "SP ", (int)k_conv_widths[k],
               res[k].h_rms, res[k].dh_rms1, res[k].df_rms1, CC_STEPS,
               res[k].dh1_rms, res[k].dh_rms, res[k].df_rms);
        ck_assert(isfinite(res[k].dh_rms) && isfinite(res[k].df_rms));
    }
    fflush(stdout);
}


/* Measured with CC_LR = 0.05, CC_STEPS = 5, seeds 5 ... 10 averaged (RMS over
 * 32 inputs and all positions):
 *
 *  channels          16      32      64
 *  muP |h2|          1.31    1.47    1.27
 *  muP 1 step: |dh2| 0.046   0.067   0.064   (band 1.46)
 *              |df|  0.066   0.067   0.070   (band 1.06)
 *  muP 5 steps:|dh1| 0.290   0.310   0.345   (band 1.19)
 *              |dh2| 0.475   0.690   0.685   (band 1.45)
 *              |df|  0.690   0.698   0.752   (band 1.09)
 *  SP 1 step:  |dh2| 0.153   0.391   0.338   (x 2.2)
 *              |df|  0.271   0.677   0.802   (x 3.0)
 *  SP 5 steps: |dh1| 0.0135  0.0086  0.0051  (/ 2.6)
 * Widths 64, 128, 256 (one seed) keep muP's bands under 2 as well. */
START_TEST(test_conv_coord_check_mup)
{
    cc_result res[CV_NW];
    conv_sweep(IBVI_PARAM_MUP, res);
    const double b_h = conv_band(res, offsetof(cc_result, h_rms));
    const double b_dh1 = conv_band(res, offsetof(cc_result, dh1_rms));
    const double b_dh = conv_band(res, offsetof(cc_result, dh_rms));
    const double b_df = conv_band(res, offsetof(cc_result, df_rms));
    const double b_dh_1 = conv_band(res, offsetof(cc_result, dh_rms1));
    const double b_df_1 = conv_band(res, offsetof(cc_result, df_rms1));
    printf("conv muP max/min over widths: h2 %.3g; 1 step: dh2 %.3g dlogits "
           "%.3g; %d steps: dh1 %.3g dh2 %.3g dlogits %.3g\n",
           b_h, b_dh_1, b_df_1, CC_STEPS, b_dh1, b_dh, b_df);
    ck_assert_msg(b_h < 1.5, "muP: conv activation size drifts (%g)", b_h);
    ck_assert_msg(b_dh_1 < 1.75, "muP: conv update (1 step) drifts (%g)",
                  b_dh_1);
    ck_assert_msg(b_df_1 < 1.5, "muP: logit update (1 step) drifts (%g)",
                  b_df_1);
    ck_assert_msg(b_dh1 < 1.5, "muP: first conv's update drifts (%g)", b_dh1);
    ck_assert_msg(b_dh < 1.75, "muP: second conv's update drifts (%g)", b_dh);
    ck_assert_msg(b_df < 1.5, "muP: logit update drifts (%g)", b_df);
}
END_TEST

START_TEST(test_conv_coord_check_sp)
{
    cc_result res[CV_NW];
    conv_sweep(IBVI_PARAM_SP, res);
    const double g_dh_1 = conv_growth(res, offsetof(cc_result, dh_rms1));
    const double g_df_1 = conv_growth(res, offsetof(cc_result, df_rms1));
    const double g_dh1 = conv_growth(res, offsetof(cc_result, dh1_rms));
    printf("conv SP growth 64 vs 16 channels: 1 step: dh2 %.3g dlogits %.3g; "
           "%d steps: dh1 %.3g\n", g_dh_1, g_df_1, CC_STEPS, g_dh1);
    ck_assert_msg(g_dh_1 > 1.75, "SP: conv update does not grow (%g)", g_dh_1);
    ck_assert_msg(g_df_1 > 2.25, "SP: logit update does not grow (%g)", g_df_1);
    ck_assert_msg(g_dh1 < 0.6, "SP: first conv's update does not shrink (%g)",
                  g_dh1);
}
END_TEST

static Suite *mup_suite(void)
{
    Suite *s = suite_create("mup");
    TCase *tt = tu_tcase("table");
    tcase_add_test(tt, test_table_queries);
    tcase_add_test(tt, test_roles_two_layers);
    tcase_add_loop_test(tt, test_step_uses_multipliers, 0, 8);
    tcase_add_loop_test(tt, test_optimizer_trajectory, 0, 3);
    suite_add_tcase(s, tt);
    TCase *tc = tu_tcase("coord");
    tcase_add_test(tc, test_coord_check_mup);
    tcase_add_test(tc, test_coord_check_sp);
    tcase_add_test(tc, test_conv_coord_check_mup);
    tcase_add_test(tc, test_conv_coord_check_sp);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(mup_suite()); }

/*
 * libibvi tests - the exact checks of docs/theory.md on an
 * overparameterised linear model, through the public API.
 *
 * The model is a network with one dense layer (D = P - 1 inputs, 1 output,
 * rank R, IBVI_PARAM_SP so every mean parameter has lr multiplier 1 and every
 * factor row 1/R). Its bias makes the effective design X~ = [X, 1]
 * (N x P). With the squared loss of loss.h, L = (1/N) sum (f - y)^2, so
 * the results of docs/theory.md hold with X replaced by X~:
 *   (a) null-space invariants P_N mu_t = P_N mu_0 and P_N S_t = P_N S_0
 *       after every step (SGD, momentum, Nesterov, minibatches, samples,
 *       also the logistic loss);
 *   (b) the limit mu* = mu_0 + X~^T (X~ X~^T)^-1 (y - X~ mu_0), S* = P_N S_0;
 *   (c) that limit is closer to the prior in 2-Wasserstein distance than
 *       other distributions with zero expected loss;
 *   (d) the expected loss is (1/N)||y - X~ mu||^2 + (1/N)||X~ S||_F^2.
 * All reference quantities are computed in double from the float values the
 * library holds.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define N_ROWS 20
#define D_IN 99
#define P_PAR (D_IN + 1)
#define RANK 5

/* Convergence run (b, c): full batch, momentum 0.9. Under SP the factor's
 * lr multiplier is 1/R. The single-sample gradient noise is multiplicative
 * (it vanishes as X~ S -> 0), which limits the stable lr: a double-precision
 * simulation of these dynamics diverged at lr = 0.05 and converged at 0.01
 * to ~1e-12 within 1500 steps for all seeds tried. */
#define CONV_LR 0.01f
#define CONV_STEPS 2500

typedef struct lin {
    float x[N_ROWS * D_IN];
    float y[N_ROWS];      /* regression targets */
    float ybin[N_ROWS];   /* 0/1 labels for the logistic loss */
    double xt[N_ROWS * P_PAR]; /* X~ = [X, 1] */
    double chol[N_ROWS * N_ROWS]; /* Cholesky factor of X~ X~^T */
    ibvi_net *net;
    ibvi_layer *layer;
    double mu0[P_PAR];
    double s0[P_PAR * RANK];
} lin;

static void read_params(lin *m, double *mu, double *s)
{
    float muf[P_PAR], sf[P_PAR * RANK];
    CK_OK(ibvi_layer_get_mean(m->layer, muf, P_PAR));
    CK_OK(ibvi_layer_get_factor(m->layer, sf, P_PAR * RANK));
    for (int i = 0; i < P_PAR; i++)
        mu[i] = muf[i];
    for (int i = 0; i < P_PAR * RANK; i++)
        s[i] = sf[i];
}

static void lin_setup(lin *m, uint64_t seed)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    /* std sqrt(N/D) makes X X^T ~ N I, comparable with the bias part 1 1^T */
    tu_fill_normal_f(&rng, m->x, N_ROWS * D_IN, sqrt((double)N_ROWS / D_IN));
    tu_fill_normal_f(&rng, m->y, N_ROWS, 1.0);
    for (int i = 0; i < N_ROWS; i++)
        m->ybin[i] = m->y[i] > 0.0f ? 1.0f : 0.0f;
    for (int i = 0; i < N_ROWS; i++) {
        for (int j = 0; j < D_IN; j++)
            m->xt[i * P_PAR + j] = m->x[i * D_IN + j];
        m->xt[i * P_PAR + D_IN] = 1.0;
    }
    tu_matmul_nt(m->xt, m->xt, m->chol, N_ROWS, P_PAR, N_ROWS);
    ck_assert_int_eq(tu_cholesky(m->chol, N_ROWS), 0);

    m->net = tu_net_new(D_IN, NULL);
    CK_OK(ibvi_net_add_dense(m->net, 1, RANK));
    CK_OK(ibvi_net_init(m->net, IBVI_PARAM_SP, seed * 7 + 1));
    m->layer = tu_layer(m->net, 0);
    ck_assert_int_eq(ibvi_layer_param_count(m->layer), P_PAR);
    ck_assert_int_eq(ibvi_layer_get_role(m->layer), IBVI_ROLE_SINGLE);
    read_params(m, m->mu0, m->s0);
}

static void lin_free(lin *m) { ibvi_net_free(m->net); }

/* M (P x cols) <- P_N M = M - X~^T (X~ X~^T)^-1 X~ M */
static void project_null(const lin *m, double *mat, int cols)
{
    double t[N_ROWS * RANK * 4];
    ck_assert_int_le(cols, RANK * 4);
    tu_matmul(m->xt, mat, t, N_ROWS, P_PAR, cols);
    tu_cholesky_solve(m->chol, t, N_ROWS, cols);
    for (int p = 0; p < P_PAR; p++)
        for (int c = 0; c < cols; c++) {
            double s = 0.0;
            for (int i = 0; i < N_ROWS; i++)
                s += m->xt[i * P_PAR + p] * t[i * cols + c];
            mat[p * cols + c] -= s;
        }
}

/* mu* = mu0 + X~^T (X~X~^T)^-1 (y - X~ mu0) */
static void min_norm_solution(const lin *m, const float *y, double *mus)
{
    double r[N_ROWS];
    tu_matmul(m->xt, m->mu0, r, N_ROWS, P_PAR, 1);
    for (int i = 0; i < N_ROWS; i++)
        r[i] = y[i] - r[i];
    tu_cholesky_solve(m->chol, r, N_ROWS, 1);
    for (int p = 0; p < P_PAR; p++) {
        double s = 0.0;
        for (int i = 0; i < N_ROWS; i++)
            s += m->xt[i * P_PAR + p] * r[i];
        mus[p] = m->mu0[p] + s;
    }
}

static double w2_squared(const double *mu1, const double *s1, const double *mu2,
                         const double *s2)
{
    double c[RANK * RANK];
    tu_matmul_tn(s1, s2, c, P_PAR, RANK, RANK);
    double d = tu_dist2(mu1, mu2, P_PAR);
    double n1 = tu_norm2(s1, P_PAR * RANK), n2 = tu_norm2(s2, P_PAR * RANK);
    return d * d + n1 * n1 + n2 * n2 - 2.0 * tu_nuclear_norm(c, RANK, RANK);
}

static void set_optimizer(ibvi_optimizer *opt, int which)
{
    if (which == 1)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));
    else if (which == 2)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
}

/* ---- (a) invariants after every step ------------------------------------ */

typedef struct inv_case {
    int opt;     /* 0 plain SGD, 1 momentum 0.9, 2 Nesterov 0.9 */
    int batch;   /* 20 (full) or 5 */
    int samples; /* weight samples per step */
    int loss;    /* IBVI_LOSS_SQUARED or IBVI_LOSS_BINARY_XENT */
} inv_case;

static const inv_case k_inv_cases[] = {
    {0, 20, 1, IBVI_LOSS_SQUARED},     {1, 20, 1, IBVI_LOSS_SQUARED},
    {2, 20, 1, IBVI_LOSS_SQUARED},     {0, 5, 1, IBVI_LOSS_SQUARED},
    {1, 5, 1, IBVI_LOSS_SQUARED},      {2, 5, 1, IBVI_LOSS_SQUARED},
    {0, 20, 3, IBVI_LOSS_SQUARED},     {1, 20, 3, IBVI_LOSS_SQUARED},
    {2, 20, 3, IBVI_LOSS_SQUARED},     {0, 5, 3, IBVI_LOSS_SQUARED},
    {1, 5, 3, IBVI_LOSS_SQUARED},      {2, 5, 3, IBVI_LOSS_SQUARED},
    {0, 20, 1, IBVI_LOSS_BINARY_XENT}, {1, 5, 1, IBVI_LOSS_BINARY_XENT},
    {2, 5, 3, IBVI_LOSS_BINARY_XENT},  {1, 20, 3, IBVI_LOSS_BINARY_XENT},
    {0, 5, 3, IBVI_LOSS_BINARY_XENT},  {2, 20, 1, IBVI_LOSS_BINARY_XENT},
};
#define N_INV_CASES ((int)(sizeof k_inv_cases / sizeof k_inv_cases[0]))

START_TEST(test_null_space_invariants)
{
    const inv_case *c = &k_inv_cases[_i];
    lin m;
    lin_setup(&m, 100u + (uint64_t)_i);
    double pmu0[P_PAR], ps0[P_PAR * RANK];
    memcpy(pmu0, m.mu0, sizeof pmu0);
    memcpy(ps0, m.s0, sizeof ps0);
    project_null(&m, pmu0, 1);
    project_null(&m, ps0, RANK);
    double nmu0 = tu_norm2(m.mu0, P_PAR), ns0 = tu_norm2(m.s0, P_PAR * RANK);

    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, m.net, IBVI_OPT_SGD, 0.01f));
    set_optimizer(opt, c->opt);
    const float *targets = c->loss == IBVI_LOSS_SQUARED ? m.y : m.ybin;
    double mu[P_PAR], s[P_PAR * RANK];
    const int steps = 60;
    double worst_mu = 0.0, worst_s = 0.0;
    for (int t = 0; t < steps; t++) {
        int start = (t * c->batch) % N_ROWS;
        float loss;
        CK_OK(ibvi_train_step(m.net, opt, m.x + start * D_IN, c->batch,
                              c->samples, c->loss, NULL, targets + start,
                              &loss));
        read_params(&m, mu, s);
        double nmu = tu_norm2(mu, P_PAR), ns = tu_norm2(s, P_PAR * RANK);
        project_null(&m, mu, 1);
        project_null(&m, s, RANK);
        double emu = tu_dist2(mu, pmu0, P_PAR);
        double es = tu_dist2(s, ps0, P_PAR * RANK);
        if (emu / fmax(nmu, nmu0) > worst_mu)
            worst_mu = emu / fmax(nmu, nmu0);
        if (es / fmax(ns, ns0) > worst_s)
            worst_s = es / fmax(ns, ns0);
        ck_assert_msg(emu <= 1e-4 * fmax(nmu, nmu0),
                      "case %d step %d: |P_N (mu_t - mu_0)| = %g (|mu| = %g)",
                      _i, t, emu, nmu);
        ck_assert_msg(es <= 1e-4 * fmax(ns, ns0),
                      "case %d step %d: |P_N (S_t - S_0)| = %g (|S| = %g)", _i,
                      t, es, ns);
    }
    printf("invariants case %2d (opt %d, batch %2d, samples %d, loss %d): "
           "worst relative |P_N dmu| %.2g, |P_N dS| %.2g\n", _i, c->opt,
           c->batch, c->samples, c->loss, worst_mu, worst_s);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), steps);
    /* The parameters did move (else the invariants are vacuous). */
    read_params(&m, mu, s);
    double dmu = tu_dist2(mu, m.mu0, P_PAR);
    double ds = tu_dist2(s, m.s0, P_PAR * RANK);
    ck_assert_msg(dmu > 1e-2 * nmu0, "case %d: mean moved only %g", _i, dmu);
    ck_assert_msg(ds > 1e-3 * ns0, "case %d: factor moved only %g", _i, ds);
    ibvi_optimizer_free(opt);
    lin_free(&m);
}
END_TEST

/* ---- (b) the limit --------------------------------------------------------- */

static void train_to_convergence(lin *m)
{
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, m->net, IBVI_OPT_SGD, CONV_LR));
    set_optimizer(opt, 1);
    float loss = 0.0f;
    for (int t = 0; t < CONV_STEPS; t++)
        CK_OK(ibvi_train_step(m->net, opt, m->x, N_ROWS, 1, IBVI_LOSS_SQUARED,
                              NULL, m->y, &loss));
    ck_assert_msg(loss < 1e-8f, "final training loss %g", loss);
    ibvi_optimizer_free(opt);
}

START_TEST(test_limit_theorem1)
{
    lin m;
    lin_setup(&m, 7u + (uint64_t)_i);
    double mus[P_PAR], ss[P_PAR * RANK];
    min_norm_solution(&m, m.y, mus);
    memcpy(ss, m.s0, sizeof ss);
    project_null(&m, ss, RANK);

    train_to_convergence(&m);

    double mu[P_PAR], s[P_PAR * RANK];
    read_params(&m, mu, s);
    double emu = tu_dist2(mu, mus, P_PAR) / tu_norm2(mus, P_PAR);
    double es = tu_dist2(s, ss, P_PAR * RANK) / tu_norm2(ss, P_PAR * RANK);
    printf("theorem 1 (seed %d): |mu - mu*|/|mu*| = %.3g, "
           "|S - P_N S0|/|P_N S0| = %.3g\n", _i, emu, es);
    ck_assert_msg(emu <= 1e-4, "|mu - mu*| / |mu*| = %g", emu);
    ck_assert_msg(es <= 1e-4, "|S - P_N S_0|_F / |P_N S_0|_F = %g", es);

    /* Exact predictions with zero variance at the training points. */
    const int32_t ms = 64;
    float *out = malloc(sizeof(float) * (size_t)(ms * N_ROWS));
    ck_assert_ptr_nonnull(out);
    CK_OK(ibvi_net_forward(m.net, m.x, N_ROWS, ms, out));
    for (int k = 0; k < ms * N_ROWS; k++)
        ck_assert_msg(fabsf(out[k] - m.y[k % N_ROWS]) <= 1e-3f,
                      "sample %d row %d: %g, target %g", k / N_ROWS,
                      k % N_ROWS, out[k], m.y[k % N_ROWS]);
    free(out);

    /* At a test point the variance is |S*^T x~|^2 (docs/theory.md). */
    tu_rng rng;
    tu_rng_seed(&rng, 999u + (uint64_t)_i);
    float xq[D_IN];
    tu_fill_normal_f(&rng, xq, D_IN, sqrt((double)N_ROWS / D_IN));
    double xqt[P_PAR], v[RANK];
    for (int j = 0; j < D_IN; j++)
        xqt[j] = xq[j];
    xqt[D_IN] = 1.0;
    tu_matmul_tn(ss, xqt, v, P_PAR, RANK, 1); /* S*^T x~ */
    double var_theory = 0.0, mean_theory = 0.0;
    for (int r = 0; r < RANK; r++)
        var_theory += v[r] * v[r];
    for (int p = 0; p < P_PAR; p++)
        mean_theory += mus[p] * xqt[p];
    const int32_t big = 20000;
    out = malloc(sizeof(float) * (size_t)big);
    ck_assert_ptr_nonnull(out);
    CK_OK(ibvi_net_forward(m.net, xq, 1, big, out));
    double sm = 0.0, sv = 0.0;
    for (int k = 0; k < big; k++)
        sm += out[k];
    sm /= big;
    for (int k = 0; k < big; k++)
        sv += (out[k] - sm) * (out[k] - sm);
    sv /= (big - 1);
    /* standard errors: mean sqrt(var/n), variance var sqrt(2/n) */
    ck_assert_msg(fabs(sm - mean_theory) <= 5.0 * sqrt(var_theory / big) + 1e-4,
                  "test mean %g, theory %g", sm, mean_theory);
    printf("test point: mean %.5g (theory %.5g), variance %.5g (theory "
           "%.5g)\n", sm, mean_theory, sv, var_theory);
    ck_assert_msg(fabs(sv - var_theory) <= 5.0 * var_theory * sqrt(2.0 / big),
                  "test variance %g, theory %g", sv, var_theory);
    free(out);
    lin_free(&m);
}
END_TEST

/* ---- (c) W2 projection --------------------------------------------------- */

START_TEST(test_w2_projection)
{
    lin m;
    lin_setup(&m, 31u + (uint64_t)_i);
    double mus[P_PAR], ss[P_PAR * RANK];
    min_norm_solution(&m, m.y, mus);
    memcpy(ss, m.s0, sizeof ss);
    project_null(&m, ss, RANK);

    /* Helper sanity: W2(p, p) = 0, rotations of S leave W2 unchanged. */
    ck_assert(fabs(w2_squared(m.mu0, m.s0, m.mu0, m.s0)) <
              1e-9 * tu_norm2(m.s0, P_PAR * RANK) * tu_norm2(m.s0, P_PAR * RANK));
    double w2_star = w2_squared(m.mu0, m.s0, mus, ss);
    {
        /* Givens rotation of columns 0 and 1 */
        double rot[P_PAR * RANK];
        memcpy(rot, ss, sizeof rot);
        double c = cos(0.7), sn = sin(0.7);
        for (int p = 0; p < P_PAR; p++) {
            double a = ss[p * RANK], b = ss[p * RANK + 1];
            rot[p * RANK] = c * a - sn * b;
            rot[p * RANK + 1] = sn * a + c * b;
        }
        double w2_rot = w2_squared(m.mu0, m.s0, mus, rot);
        ck_assert_msg(fabs(w2_rot - w2_star) <= 1e-9 * (1.0 + w2_star),
                      "rotation changed W2: %g vs %g", w2_rot, w2_star);
    }

    train_to_convergence(&m);
    double mu[P_PAR], s[P_PAR * RANK];
    read_params(&m, mu, s);

    /* The trained q has zero expected loss (feasible) ... */
    double r[N_ROWS], xs[N_ROWS * RANK], xs0[N_ROWS * RANK];
    tu_matmul(m.xt, mu, r, N_ROWS, P_PAR, 1);
    for (int i = 0; i < N_ROWS; i++)
        r[i] -= m.y[i];
    tu_matmul(m.xt, s, xs, N_ROWS, P_PAR, RANK);
    tu_matmul(m.xt, m.s0, xs0, N_ROWS, P_PAR, RANK);
    double ny = 0.0;
    for (int i = 0; i < N_ROWS; i++)
        ny += (double)m.y[i] * m.y[i];
    ck_assert_msg(tu_norm2(r, N_ROWS) <= 1e-4 * sqrt(ny), "residual %g",
                  tu_norm2(r, N_ROWS));
    ck_assert_msg(tu_norm2(xs, N_ROWS * RANK) <=
                      1e-4 * tu_norm2(xs0, N_ROWS * RANK),
                  "|X~ S|_F = %g", tu_norm2(xs, N_ROWS * RANK));

    /* ... its W2 distance from the prior is that of q* ... */
    double w2_trained = w2_squared(m.mu0, m.s0, mu, s);
    printf("W2^2(p, q_trained) = %.9g, W2^2(p, q*) = %.9g\n", w2_trained,
           w2_star);
    ck_assert_msg(fabs(w2_trained - w2_star) <= 1e-4 * w2_star,
                  "W2^2(p, q_trained) = %.9g, W2^2(p, q*) = %.9g", w2_trained,
                  w2_star);

    /* ... and smaller than that of other feasible q' = N(mu' , S' S'^T) with
     * X~ mu' = y and X~ S' = 0. */
    tu_rng rng;
    tu_rng_seed(&rng, 4242u + (uint64_t)_i);
    static const double scales[4] = {0.03, 0.1, 0.3, 1.0};
    double nmu_move = tu_dist2(mus, m.mu0, P_PAR);
    double ns = tu_norm2(ss, P_PAR * RANK);
    for (int k = 0; k < 24; k++) {
        double dmu[P_PAR], ds[P_PAR * RANK], mup[P_PAR], sp[P_PAR * RANK];
        double a = scales[k % 4];
        int kind = (k / 4) % 3; /* 0 mean only, 1 factor only, 2 both */
        tu_fill_normal_d(&rng, dmu, P_PAR, 1.0);
        tu_fill_normal_d(&rng, ds, P_PAR * RANK, 1.0);
        project_null(&m, dmu, 1);
        project_null(&m, ds, RANK);
        double ndmu = tu_norm2(dmu, P_PAR), nds = tu_norm2(ds, P_PAR * RANK);
        for (int p = 0; p < P_PAR; p++)
            mup[p] = mus[p] + (kind != 1 ? a * nmu_move / ndmu * dmu[p] : 0.0);
        for (int p = 0; p < P_PAR * RANK; p++)
            sp[p] = ss[p] + (kind != 0 ? a * ns / nds * ds[p] : 0.0);
        /* feasibility of q' */
        double xsp[N_ROWS * RANK];
        tu_matmul(m.xt, sp, xsp, N_ROWS, P_PAR, RANK);
        ck_assert(tu_norm2(xsp, N_ROWS * RANK) <= 1e-9 * ns * 10.0);
        double w2p = w2_squared(m.mu0, m.s0, mup, sp);
        if (k < 12)
            printf("  q' %2d (kind %d, scale %.2g): W2^2 = %.9g\n", k, kind, a,
                   w2p);
        ck_assert_msg(w2p > w2_trained,
                      "q' %d (kind %d, scale %g): W2^2 %.9g <= trained %.9g", k,
                      kind, a, w2p, w2_trained);
    }
    lin_free(&m);
}
END_TEST

/* ---- (d) expected loss ---------------------------------------------------- */

START_TEST(test_expected_loss_formula)
{
    lin m;
    lin_setup(&m, 55u + (uint64_t)_i);
    if (_i == 1) {
        /* also away from the prior: after a few training steps */
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_optimizer_create(&opt, m.net, IBVI_OPT_SGD, 0.01f));
        for (int t = 0; t < 20; t++)
            CK_OK(ibvi_train_step(m.net, opt, m.x, N_ROWS, 1,
                                  IBVI_LOSS_SQUARED, NULL, m.y, NULL));
        ibvi_optimizer_free(opt);
    }
    double mu[P_PAR], s[P_PAR * RANK];
    read_params(&m, mu, s);
    double r[N_ROWS], xs[N_ROWS * RANK];
    tu_matmul(m.xt, mu, r, N_ROWS, P_PAR, 1);
    for (int i = 0; i < N_ROWS; i++)
        r[i] = m.y[i] - r[i];
    tu_matmul(m.xt, s, xs, N_ROWS, P_PAR, RANK);
    double nr = tu_norm2(r, N_ROWS), nxs = tu_norm2(xs, N_ROWS * RANK);
    double l_theory = (nr * nr + nxs * nxs) / N_ROWS;

    const int32_t ms = 4096;
    float *out = malloc(sizeof(float) * (size_t)ms * N_ROWS);
    ck_assert_ptr_nonnull(out);
    CK_OK(ibvi_net_forward(m.net, m.x, N_ROWS, ms, out));
    float l_mc = NAN;
    CK_OK(ibvi_loss_squared(out, (int64_t)ms * N_ROWS, 1, m.y, N_ROWS, &l_mc,
                            NULL));
    /* per-sample losses for the standard error */
    double sum = 0.0, sum2 = 0.0;
    for (int k = 0; k < ms; k++) {
        float lk;
        CK_OK(ibvi_loss_squared(out + (size_t)k * N_ROWS, N_ROWS, 1, m.y,
                                N_ROWS, &lk, NULL));
        sum += lk;
        sum2 += (double)lk * lk;
    }
    double mean = sum / ms;
    double se = sqrt((sum2 / ms - mean * mean) / (ms - 1));
    printf("expected loss (%d): Monte Carlo %.6g +- %.2g, formula %.6g "
           "(variance term %.4g)\n", _i, (double)l_mc, se, l_theory,
           nxs * nxs / N_ROWS);
    ck_assert_msg(fabs(mean - l_mc) <= 1e-4 * mean,
                  "mean of per-sample losses %g vs loss over all rows %g", mean,
                  (double)l_mc);
    /* the variance term matters here (else the check would be weak) */
    ck_assert_msg(nxs * nxs / N_ROWS > 0.05 * l_theory,
                  "variance term too small: %g of %g", nxs * nxs / N_ROWS,
                  l_theory);
    ck_assert_msg(fabs(l_mc - l_theory) <= 4.0 * se + 1e-5 * l_theory,
                  "Monte-Carlo loss %g, formula %g (se %g)", (double)l_mc,
                  l_theory, se);
    ck_assert_msg(fabs(l_mc - l_theory) <= 0.05 * l_theory,
                  "Monte-Carlo loss %g, formula %g", (double)l_mc, l_theory);
    free(out);
    lin_free(&m);
}
END_TEST

static Suite *theory_suite(void)
{
    Suite *s = suite_create("theory");
    TCase *tc = tu_tcase("linear");
    tcase_add_loop_test(tc, test_null_space_invariants, 0, N_INV_CASES);
    tcase_add_loop_test(tc, test_limit_theorem1, 0, 2);
    tcase_add_loop_test(tc, test_w2_projection, 0, 2);
    tcase_add_loop_test(tc, test_expected_loss_formula, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(theory_suite()); }

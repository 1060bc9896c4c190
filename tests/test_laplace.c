/*
 * libibvi tests - the last-layer Laplace approximation (include/ibvi/
 * laplace.h, docs/laplace.md), on a tiny network 3 -> 4 (tanh) -> 3
 * classes whose features and logits the test recomputes in double:
 *  - the Hessian against a brute-force GGN J^T Lambda J with the explicit
 *    Jacobian, and against central differences of the loss's analytic
 *    gradient (the logits are linear in theta: GGN = Hessian);
 *  - the log marginal likelihood against a direct dense computation (the
 *    log determinant by Gaussian elimination), its optimum a maximum;
 *  - the built network's factor: S S^T = (H + lambda I)^-1, and its
 *    sampled logits' empirical covariance J Sigma J^T;
 *  - the probit predictive against its formula (the logits' variance off
 *    their common shift) and a Monte Carlo of the logits; the predictor on the built network close to it;
 *  - KFAC: the factors, the closed-form marglik, probit and factor;
 *  - the validation prior: the grid point with the least probit NLL;
 *  - refusals: memory (naming KFAC), a last layer that is not dense, a
 *    variational network, bad labels and options, a changed network.
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"
#include "testutil.h"

#define D 3
#define HID 4
#define C 3
#define P (C * HID + C)
#define N 40
#define NV 25

static const double PI = 3.14159265358979323846;

typedef struct fixture {
    ibvi_net *net;
    float x[N * D], xv[NV * D];
    int32_t y[N], yv[NV];
    double w1[HID * D], b1[HID], theta[P];
} fixture;

static void features(const struct fixture *f, const float *x, double *a);
static void logits(const double *theta, const double *a, double *z);
static void softmax(const double *z, double *p);

/* A trained-looking network: the prior's means scaled up, so the softmax
 * is far from uniform, and labels drawn from it (plus noise). */
static void setup(fixture *f, uint64_t seed)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    CK_OK(ibvi_net_create(&f->net, D, NULL));
    CK_OK(ibvi_net_add_dense(f->net, HID, 0));
    CK_OK(ibvi_net_add_activation(f->net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(f->net, C, 0));
    CK_OK(ibvi_net_init(f->net, IBVI_PARAM_SP, seed));
    float m1[HID * D + HID], m2[P];
    CK_OK(ibvi_layer_get_mean(tu_layer(f->net, 0), m1, HID * D + HID));
    for (int k = 0; k < HID * D + HID; k++)
        m1[k] *= 2.0f;
    CK_OK(ibvi_layer_set_mean(tu_layer(f->net, 0), m1, HID * D + HID));
    CK_OK(ibvi_layer_get_mean(tu_layer(f->net, 2), m2, P));
    for (int k = 0; k < P; k++)
        m2[k] *= 2.0f;
    CK_OK(ibvi_layer_set_mean(tu_layer(f->net, 2), m2, P));
    for (int k = 0; k < HID * D; k++)
        f->w1[k] = m1[k];
    for (int k = 0; k < HID; k++)
        f->b1[k] = m1[HID * D + k];
    for (int k = 0; k < P; k++)
        f->theta[k] = m2[k];
    tu_fill_normal_f(&rng, f->x, N * D, 1.0);
    tu_fill_normal_f(&rng, f->xv, NV * D, 1.0);
    /* labels drawn from the network's softmax at temperature 2: the data
     * are noisier than the network says, so some posterior variance helps
     * (the validation prior's optimum lies inside its grid) */
    for (int i = 0; i < N + NV; i++) {
        double a[HID], z[C], p[C];
        const float *xi = i < N ? f->x + i * D : f->xv + (i - N) * D;
        features(f, xi, a);
        logits(f->theta, a, z);
        for (int c = 0; c < C; c++)
            z[c] *= 0.5;
        softmax(z, p);
        double u = tu_rng_uniform(&rng);
        int32_t label = C - 1;
        for (int c = 0; c < C; c++) {
            if (u < p[c]) {
                label = c;
                break;
            }
            u -= p[c];
        }
        if (i < N)
            f->y[i] = label;
        else
            f->yv[i - N] = label;
    }
}

static void teardown(fixture *f) { ibvi_net_free(f->net); }

/* ---- the double reference ------------------------------------------------ */

static void features(const struct fixture *f, const float *x, double *a)
{
    for (int h = 0; h < HID; h++) {
        double s = f->b1[h];
        for (int d = 0; d < D; d++)
            s += f->w1[h * D + d] * x[d];
        a[h] = tanh(s);
    }
}

static void logits(const double *theta, const double *a, double *z)
{
    for (int c = 0; c < C; c++) {
        double s = theta[C * HID + c];
        for (int h = 0; h < HID; h++)
            s += theta[c * HID + h] * a[h];
        z[c] = s;
    }
}

static void softmax(const double *z, double *p)
{
    double m = z[0], s = 0.0;
    for (int c = 1; c < C; c++)
        m = z[c] > m ? z[c] : m;
    for (int c = 0; c < C; c++)
        s += (p[c] = exp(z[c] - m));
    for (int c = 0; c < C; c++)
        p[c] /= s;
}

/* J (C x P) of the logits in theta's order: dz_c/dW[c][h] = a_h, dz_c/db[c]
 * = 1. */
static void jacobian(const double *a, double *J)
{
    memset(J, 0, sizeof(double) * C * P);
    for (int c = 0; c < C; c++) {
        for (int h = 0; h < HID; h++)
            J[c * P + c * HID + h] = a[h];
        J[c * P + C * HID + c] = 1.0;
    }
}

/* sum_n J^T Lambda J */
static void brute_ggn(const fixture *f, double *H)
{
    memset(H, 0, sizeof(double) * P * P);
    double a[HID], z[C], p[C], J[C * P], lam[C * C];
    for (int n = 0; n < N; n++) {
        features(f, f->x + n * D, a);
        logits(f->theta, a, z);
        softmax(z, p);
        jacobian(a, J);
        for (int c = 0; c < C; c++)
            for (int e = 0; e < C; e++)
                lam[c * C + e] = (c == e ? p[c] : 0.0) - p[c] * p[e];
        for (int i = 0; i < P; i++)
            for (int j = 0; j < P; j++) {
                double s = 0.0;
                for (int c = 0; c < C; c++)
                    for (int e = 0; e < C; e++)
                        s += J[c * P + i] * lam[c * C + e] * J[e * P + j];
                H[i * P + j] += s;
            }
    }
}

/* The summed cross-entropy's gradient in theta, and the summed NLL. */
static double loss_grad(const fixture *f, const double *theta, double *g)
{
    double a[HID], z[C], p[C], nll = 0.0;
    memset(g, 0, sizeof(double) * P);
    for (int n = 0; n < N; n++) {
        features(f, f->x + n * D, a);
        logits(theta, a, z);
        softmax(z, p);
        nll -= log(p[f->y[n]]);
        for (int c = 0; c < C; c++) {
            const double r = p[c] - (c == f->y[n]);
            for (int h = 0; h < HID; h++)
                g[c * HID + h] += r * a[h];
            g[C * HID + c] += r;
        }
    }
    return nll;
}

/* log |det a| by Gaussian elimination with partial pivoting (a destroyed). */
static double naive_logdet(double *a, int n)
{
    double s = 0.0;
    for (int k = 0; k < n; k++) {
        int piv = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[piv * n + k]))
                piv = i;
        if (piv != k)
            for (int j = 0; j < n; j++) {
                const double t = a[k * n + j];
                a[k * n + j] = a[piv * n + j];
                a[piv * n + j] = t;
            }
        s += log(fabs(a[k * n + k]));
        for (int i = k + 1; i < n; i++) {
            const double m = a[i * n + k] / a[k * n + k];
            for (int j = k; j < n; j++)
                a[i * n + j] -= m * a[k * n + j];
        }
    }
    return s;
}

static double direct_marglik(const fixture *f, const double *H, double lambda)
{
    double g[P], a[P * P], sq = 0.0;
    const double nll = loss_grad(f, f->theta, g);
    for (int k = 0; k < P; k++)
        sq += f->theta[k] * f->theta[k];
    memcpy(a, H, sizeof a);
    for (int k = 0; k < P; k++)
        a[k * P + k] += lambda;
    return -nll - 0.5 * lambda * sq + 0.5 * P * log(lambda) -
           0.5 * naive_logdet(a, P);
}

/* Sigma = (H + lambda I)^-1 */
static void posterior_cov(const double *H, double lambda, double *sigma)
{
    double l[P * P];
    memcpy(l, H, sizeof l);
    for (int k = 0; k < P; k++)
        l[k * P + k] += lambda;
    ck_assert_int_eq(tu_cholesky(l, P), 0);
    for (int i = 0; i < P * P; i++)
        sigma[i] = (i / P == i % P);
    tu_cholesky_solve(l, sigma, P, P);
}

static double max_abs_diff(const double *a, const double *b, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static double max_abs(const double *a, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static ibvi_laplace *fit(fixture *f, int32_t structure, int32_t prior,
                         float lambda)
{
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    o.structure = structure;
    o.prior = prior;
    o.prior_precision = lambda;
    o.batch = 16; /* several chunks */
    ibvi_laplace *la = NULL;
    CK_OK(ibvi_laplace_fit(&la, f->net, &o, f->x, f->y, N, f->xv, f->yv, NV));
    return la;
}

/* ---- the Hessian ----------------------------------------------------------- */

START_TEST(test_hessian_brute_force)
{
    fixture f;
    setup(&f, 11);
    ibvi_laplace *la = fit(&f, IBVI_LAPLACE_FULL, IBVI_LAPLACE_PRIOR_FIXED, 1);
    ck_assert_int_eq(ibvi_laplace_param_count(la), P);
    ck_assert_int_eq(ibvi_laplace_structure_of(la), IBVI_LAPLACE_FULL);
    static double H[P * P], ref[P * P];
    CK_OK(ibvi_laplace_get_hessian(la, H, P * P));
    brute_ggn(&f, ref);
    const double err = max_abs_diff(H, ref, P * P), scale = max_abs(ref, P * P);
    printf("GGN: max |H - J^T Lambda J| = %.3g (max |H| = %.3g)\n", err, scale);
    ck_assert(scale > 1.0);
    ck_assert(err < 1e-5 * scale);
    /* exactly symmetric */
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++)
            ck_assert(H[i * P + j] == H[j * P + i]);
    ibvi_laplace_free(la);
    teardown(&f);
}
END_TEST

START_TEST(test_hessian_finite_differences)
{
    fixture f;
    setup(&f, 12);
    ibvi_laplace *la = fit(&f, IBVI_LAPLACE_FULL, IBVI_LAPLACE_PRIOR_FIXED, 1);
    static double H[P * P];
    CK_OK(ibvi_laplace_get_hessian(la, H, P * P));
    double worst = 0.0, scale = max_abs(H, P * P);
    for (int j = 0; j < P; j++) {
        double tp[P], tm[P], gp[P], gm[P];
        const double h = 1e-5;
        memcpy(tp, f.theta, sizeof tp);
        memcpy(tm, f.theta, sizeof tm);
        tp[j] += h;
        tm[j] -= h;
        loss_grad(&f, tp, gp);
        loss_grad(&f, tm, gm);
        for (int i = 0; i < P; i++)
            worst = fmax(worst, fabs((gp[i] - gm[i]) / (2 * h) - H[i * P + j]));
    }
    printf("Hessian by central differences of the gradient: max error %.3g "
           "(max |H| = %.3g)\n", worst, scale);
    ck_assert(worst < 1e-5 * scale);
    ibvi_laplace_free(la);
    teardown(&f);
}
END_TEST

/* ---- the marginal likelihood ------------------------------------------------ */

START_TEST(test_marglik_direct)
{
    fixture f;
    setup(&f, 13);
    ibvi_laplace *la = fit(&f, IBVI_LAPLACE_FULL, IBVI_LAPLACE_PRIOR_FIXED, 1);
    static double H[P * P];
    brute_ggn(&f, H);
    const double lambdas[] = {1e-3, 0.1, 1.0, 7.5, 300.0};
    for (size_t k = 0; k < sizeof lambdas / sizeof lambdas[0]; k++) {
        double got;
        CK_OK(ibvi_laplace_log_marglik_at(la, lambdas[k], &got));
        const double ref = direct_marglik(&f, H, lambdas[k]);
        printf("log marglik at %g: %.9g, direct %.9g\n", lambdas[k], got, ref);
        ck_assert(fabs(got - ref) < 1e-5 * fmax(1.0, fabs(ref)));
    }
    double at1, chosen, lambda;
    CK_OK(ibvi_laplace_log_marglik(la, &chosen));
    CK_OK(ibvi_laplace_prior_precision(la, &lambda));
    ck_assert(lambda == 1.0);
    CK_OK(ibvi_laplace_log_marglik_at(la, 1.0, &at1));
    ck_assert(fabs(at1 - chosen) < 1e-9 * fabs(at1));
    ibvi_laplace_free(la);
    teardown(&f);
}
END_TEST

START_TEST(test_marglik_maximum)
{
    for (int32_t s = 0; s < 2; s++) {
        fixture f;
        setup(&f, 14);
        ibvi_laplace *la = fit(&f, s, IBVI_LAPLACE_PRIOR_MARGLIK, 1);
        double lambda, best;
        CK_OK(ibvi_laplace_prior_precision(la, &lambda));
        CK_OK(ibvi_laplace_log_marglik(la, &best));
        printf("%s: lambda* = %.6g, log marglik %.9g\n", s ? "KFAC" : "full",
               lambda, best);
        ck_assert(lambda > 1e-4 && lambda < 1e6); /* inside the range */
        const double steps[] = {1.01, 1.1, 2.0, 10.0};
        for (size_t k = 0; k < 4; k++) {
            double up, down;
            CK_OK(ibvi_laplace_log_marglik_at(la, lambda * steps[k], &up));
            CK_OK(ibvi_laplace_log_marglik_at(la, lambda / steps[k], &down));
            ck_assert_msg(up < best && down < best,
                          "x%g: %.12g and %.12g against %.12g", steps[k], up,
                          down, best);
        }
        ibvi_laplace_free(la);
        teardown(&f);
    }
}
END_TEST

/* ---- the posterior network --------------------------------------------------- */

/* Sigma in theta's order from the built network's factor: S S^T. */
static void factor_cov(ibvi_net *post, double *sigma)
{
    ibvi_layer *l = tu_layer(post, 2);
    int32_t rank;
    CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
    ck_assert_int_eq(rank, P);
    ck_assert_int_eq(ibvi_layer_covariance(l), IBVI_COVARIANCE_LOWRANK);
    static float S[P * P];
    CK_OK(ibvi_layer_get_factor(l, S, P * P));
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            double s = 0.0;
            for (int r = 0; r < P; r++)
                s += (double)S[i * P + r] * S[j * P + r];
            sigma[i * P + j] = s;
        }
}

static void check_build(int32_t structure)
{
    fixture f;
    setup(&f, 15);
    ibvi_laplace *la = fit(&f, structure, IBVI_LAPLACE_PRIOR_FIXED, 0.5f);
    static double H[P * P], ref[P * P], got[P * P];
    CK_OK(ibvi_laplace_get_hessian(la, H, P * P));
    posterior_cov(H, 0.5, ref);
    ibvi_net *post = NULL;
    CK_OK(ibvi_laplace_build(la, f.net, &post));
    factor_cov(post, got);
    const double err = max_abs_diff(got, ref, P * P), scale = max_abs(ref, P * P);
    printf("%s: max |S S^T - (H + lambda I)^-1| = %.3g (max %.3g)\n",
           structure ? "KFAC" : "full", err, scale);
    ck_assert(err < 1e-5 * scale);
    /* the other layers and the means are the network's */
    float m[HID * D + HID], m0[HID * D + HID], t[P];
    CK_OK(ibvi_layer_get_mean(tu_layer(post, 0), m, HID * D + HID));
    CK_OK(ibvi_layer_get_mean(tu_layer(f.net, 0), m0, HID * D + HID));
    ck_assert(memcmp(m, m0, sizeof m) == 0);
    CK_OK(ibvi_layer_get_mean(tu_layer(post, 2), t, P));
    for (int k = 0; k < P; k++)
        ck_assert(t[k] == (float)f.theta[k]);
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 0)),
                     IBVI_COVARIANCE_NONE);

    /* sampled logits of two inputs: covariance J Sigma J^T */
    enum { M = 20000 };
    float *out = malloc(sizeof(float) * M * 2 * C);
    ck_assert_ptr_nonnull(out);
    CK_OK(ibvi_net_forward(post, f.x, 2, M, out));
    double mean[2 * C] = {0}, cov[2 * C * 2 * C] = {0};
    for (int m2 = 0; m2 < M; m2++)
        for (int k = 0; k < 2 * C; k++)
            mean[k] += out[m2 * 2 * C + k] / (double)M;
    for (int m2 = 0; m2 < M; m2++)
        for (int k = 0; k < 2 * C; k++)
            for (int l = 0; l < 2 * C; l++)
                cov[k * 2 * C + l] += (out[m2 * 2 * C + k] - mean[k]) *
                                      (out[m2 * 2 * C + l] - mean[l]) / (M - 1.0);
    double J[2 * C * P], a[HID], z[C];
    for (int i = 0; i < 2; i++) {
        features(&f, f.x + i * D, a);
        jacobian(a, J + i * C * P);
        logits(f.theta, a, z);
        for (int c = 0; c < C; c++)
            ck_assert(fabs(mean[i * C + c] - z[c]) < 0.05 + 0.05 * fabs(z[c]));
    }
    double worst = 0.0, big = 0.0;
    for (int k = 0; k < 2 * C; k++)
        for (int l = 0; l < 2 * C; l++) {
            double s = 0.0;
            for (int i = 0; i < P; i++)
                for (int j = 0; j < P; j++)
                    s += J[k * P + i] * ref[i * P + j] * J[l * P + j];
            worst = fmax(worst, fabs(s - cov[k * 2 * C + l]));
            big = fmax(big, fabs(s));
        }
    printf("%s: sampled logits' covariance within %.3g of J Sigma J^T (max "
           "%.3g), %d samples\n", structure ? "KFAC" : "full", worst, big, M);
    ck_assert(worst < 0.05 * big);
    free(out);

    /* saved and loaded, the same factor */
    int64_t len = 0;
    CK_OK(ibvi_net_save_size(post, NULL, &len));
    uint8_t *bytes = malloc((size_t)len);
    ck_assert_ptr_nonnull(bytes);
    CK_OK(ibvi_net_save_buffer(post, NULL, bytes, len));
    ibvi_net *back = NULL;
    ibvi_optimizer *none = NULL;
    CK_OK(ibvi_net_load_buffer(&back, &none, bytes, len, NULL));
    factor_cov(back, ref);
    ck_assert(max_abs_diff(ref, got, P * P) == 0.0);
    free(bytes);
    ibvi_net_free(back);
    ibvi_net_free(post);
    ibvi_laplace_free(la);
    teardown(&f);
}

START_TEST(test_build_full) { check_build(IBVI_LAPLACE_FULL); }
END_TEST
START_TEST(test_build_kfac) { check_build(IBVI_LAPLACE_KFAC); }
END_TEST

/* ---- the probit predictive ---------------------------------------------------- */

static void check_probit(int32_t structure)
{
    fixture f;
    setup(&f, 16);
    ibvi_laplace *la = fit(&f, structure, IBVI_LAPLACE_PRIOR_FIXED, 2.0f);
    static double H[P * P], sigma[P * P], l[P * P];
    CK_OK(ibvi_laplace_get_hessian(la, H, P * P));
    posterior_cov(H, 2.0, sigma);
    float probs[NV * C], var[NV * C];
    CK_OK(ibvi_laplace_probit(la, f.net, f.xv, NV, probs, var));
    /* the formula, and a Monte Carlo of theta ~ N(theta*, Sigma) */
    memcpy(l, sigma, sizeof l);
    ck_assert_int_eq(tu_cholesky(l, P), 0);
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    double worst_formula = 0.0, worst_var = 0.0, worst_mc = 0.0;
    for (int i = 0; i < NV; i++) {
        double a[HID], z[C], J[C * P], zs[C], p[C];
        features(&f, f.xv + i * D, a);
        logits(f.theta, a, z);
        jacobian(a, J);
        /* the logits' covariance V = J Sigma J^T, projected off the
         * common shift: var_c = (Pi V Pi)_cc, Pi = I - 1 1^T / C */
        double V[C * C], rows[C] = {0}, total = 0.0;
        for (int c = 0; c < C; c++)
            for (int e = 0; e < C; e++) {
                double v = 0.0;
                for (int r = 0; r < P; r++)
                    for (int s = 0; s < P; s++)
                        v += J[c * P + r] * sigma[r * P + s] * J[e * P + s];
                V[c * C + e] = v;
                rows[c] += v;
                total += v;
            }
        for (int c = 0; c < C; c++) {
            const double v = V[c * C + c] - 2.0 * rows[c] / C + total / (C * C);
            worst_var = fmax(worst_var, fabs(v - var[i * C + c]) / fmax(v, 1e-3));
            zs[c] = z[c] / sqrt(1.0 + PI / 8.0 * v);
        }
        softmax(zs, p);
        double mc[C] = {0};
        enum { S = 4000 };
        for (int s = 0; s < S; s++) {
            double e[P], t[P], q[C], zz[C];
            for (int k = 0; k < P; k++)
                e[k] = tu_rng_normal(&rng);
            for (int r = 0; r < P; r++) {
                double acc = f.theta[r];
                for (int k = 0; k <= r; k++)
                    acc += l[r * P + k] * e[k];
                t[r] = acc;
            }
            logits(t, a, zz);
            softmax(zz, q);
            for (int c = 0; c < C; c++)
                mc[c] += q[c] / S;
        }
        for (int c = 0; c < C; c++) {
            worst_formula = fmax(worst_formula, fabs(p[c] - probs[i * C + c]));
            worst_mc = fmax(worst_mc, fabs(mc[c] - probs[i * C + c]));
        }
    }
    printf("%s probit: formula within %.3g, variances within %.3g relative, "
           "Monte Carlo within %.3g\n", structure ? "KFAC" : "full",
           worst_formula, worst_var, worst_mc);
    ck_assert(worst_formula < 1e-5);
    ck_assert(worst_var < 1e-4);
    ck_assert(worst_mc < 0.06);
    ck_assert(worst_mc > 1e-4); /* an approximation, not the same thing */

    /* the predictor on the built network: a Monte Carlo too */
    ibvi_net *post = NULL;
    CK_OK(ibvi_laplace_build(la, f.net, &post));
    ibvi_predictor *pred = NULL;
    CK_OK(ibvi_predictor_create(&pred, post, 2000, 3));
    float pp[NV * C];
    CK_OK(ibvi_predictor_run(pred, f.xv, NV, pp, NULL, NULL, NULL));
    double worst_pred = 0.0;
    for (int k = 0; k < NV * C; k++)
        worst_pred = fmax(worst_pred, fabs(pp[k] - probs[k]));
    printf("predictor on the built network (K = 2000) within %.3g of probit\n",
           worst_pred);
    ck_assert(worst_pred < 0.06);
    /* probit accepts the built network (same means) */
    float probs2[NV * C];
    CK_OK(ibvi_laplace_probit(la, post, f.xv, NV, probs2, NULL));
    ck_assert(memcmp(probs, probs2, sizeof probs) == 0);
    ibvi_predictor_free(pred);
    ibvi_net_free(post);
    ibvi_laplace_free(la);
    teardown(&f);
}

START_TEST(test_probit_full) { check_probit(IBVI_LAPLACE_FULL); }
END_TEST
START_TEST(test_probit_kfac) { check_probit(IBVI_LAPLACE_KFAC); }
END_TEST

/* ---- KFAC ---------------------------------------------------------------------- */

START_TEST(test_kfac_factors)
{
    fixture f;
    setup(&f, 17);
    ibvi_laplace *la = fit(&f, IBVI_LAPLACE_KFAC, IBVI_LAPLACE_PRIOR_FIXED, 1);
    /* A = sum a~ a~^T, G = mean Lambda; G (x) A in theta's order */
    enum { AUG = HID + 1 };
    double A[AUG * AUG] = {0}, G[C * C] = {0};
    for (int n = 0; n < N; n++) {
        double a[AUG], z[C], p[C];
        features(&f, f.x + n * D, a);
        a[HID] = 1.0;
        logits(f.theta, a, z);
        softmax(z, p);
        for (int i = 0; i < AUG; i++)
            for (int j = 0; j < AUG; j++)
                A[i * AUG + j] += a[i] * a[j];
        for (int c = 0; c < C; c++)
            for (int e = 0; e < C; e++)
                G[c * C + e] += ((c == e ? p[c] : 0.0) - p[c] * p[e]) / N;
    }
    static double K[P * P], got[P * P];
    for (int r = 0; r < P; r++)
        for (int s = 0; s < P; s++) {
            /* theta index -> (class, augmented feature) */
            const int c = r < C * HID ? r / HID : r - C * HID;
            const int i = r < C * HID ? r % HID : HID;
            const int e = s < C * HID ? s / HID : s - C * HID;
            const int j = s < C * HID ? s % HID : HID;
            K[r * P + s] = G[c * C + e] * A[i * AUG + j];
        }
    CK_OK(ibvi_laplace_get_hessian(la, got, P * P));
    const double err = max_abs_diff(got, K, P * P);
    printf("KFAC: max |G (x) A - reference| = %.3g (max %.3g)\n", err,
           max_abs(K, P * P));
    ck_assert(err < 1e-5 * max_abs(K, P * P));
    /* the closed-form marglik against the dense one of G (x) A */
    const double lambdas[] = {1e-2, 1.0, 40.0};
    for (int k = 0; k < 3; k++) {
        double m;
        CK_OK(ibvi_laplace_log_marglik_at(la, lambdas[k], &m));
        const double ref = direct_marglik(&f, K, lambdas[k]);
        ck_assert_msg(fabs(m - ref) < 1e-5 * fmax(1.0, fabs(ref)),
                      "%.12g against %.12g", m, ref);
    }
    ibvi_laplace_free(la);
    teardown(&f);
}
END_TEST

/* ---- validation-NLL tuning ---------------------------------------------------- */

START_TEST(test_validation_prior)
{
    fixture f;
    setup(&f, 18);
    for (int32_t s = 0; s < 2; s++) {
        ibvi_laplace_options o;
        CK_OK(ibvi_laplace_options_init(&o));
        o.structure = s;
        o.prior = IBVI_LAPLACE_PRIOR_VALIDATION;
        o.lambda_min = 1e-2f;
        o.lambda_max = 1e3f;
        o.grid_points = 11;
        ibvi_laplace *la = NULL;
        CK_OK(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, N, f.xv, f.yv, NV));
        double chosen;
        CK_OK(ibvi_laplace_prior_precision(la, &chosen));
        /* the reference: a fixed-prior fit per grid point, its probit NLL */
        double best = INFINITY, best_lambda = 0.0;
        for (int g = 0; g < o.grid_points; g++) {
            const double t = log(1e-2) + (log(1e3) - log(1e-2)) * g / 10.0;
            ibvi_laplace *lg = fit(&f, s, IBVI_LAPLACE_PRIOR_FIXED,
                                   (float)exp(t));
            float probs[NV * C];
            CK_OK(ibvi_laplace_probit(lg, f.net, f.xv, NV, probs, NULL));
            double nll = 0.0;
            for (int i = 0; i < NV; i++)
                nll -= log(probs[i * C + f.yv[i]]);
            if (nll < best) {
                best = nll;
                best_lambda = exp(t);
            }
            ibvi_laplace_free(lg);
        }
        printf("%s: grid best at point %d of 11\n", s ? "KFAC" : "full",
               (int)lround((log(best_lambda) - log(1e-2)) /
                           ((log(1e3) - log(1e-2)) / 10.0)));
        printf("%s: validation lambda %.6g, the grid's best %.6g (NLL %.6g)\n",
               s ? "KFAC" : "full", chosen, best_lambda, best / NV);
        ck_assert(fabs(log(chosen) - log(best_lambda)) < 1e-4);
        ibvi_laplace_free(la);
    }
    teardown(&f);
}
END_TEST

/* ---- refusals -------------------------------------------------------------------- */

#define EXPECT(expr, status, text)                                             \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        const int rc_ = (expr);                                               \
        ck_assert_msg(rc_ == (status), "%s returned %d: %s", #expr, rc_,      \
                      ibvi_last_error());                                     \
        ck_assert_msg(strstr(ibvi_last_error(), text) != NULL,                \
                      "%s: message \"%s\" lacks \"%s\"", #expr,               \
                      ibvi_last_error(), text);                               \
    } while (0)

START_TEST(test_memory_refusal)
{
    fixture f;
    setup(&f, 19);
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    o.max_bytes = 8 * P * P - 1;
    ibvi_laplace *la = NULL;
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_NOMEM, "IBVI_LAPLACE_KFAC");
    ck_assert_ptr_null(la);
    ck_assert(strstr(ibvi_last_error(), "P = 15") != NULL);
    ck_assert(strstr(ibvi_last_error(), "MB") != NULL);
    o.max_bytes = 8 * P * P; /* exactly enough */
    CK_OK(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, N, NULL, NULL, 0));
    ibvi_laplace_free(la);
    o.max_bytes = 0;
    o.structure = IBVI_LAPLACE_KFAC; /* needs no P x P */
    CK_OK(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, N, NULL, NULL, 0));
    ibvi_net *post = (ibvi_net *)la;
    EXPECT(ibvi_laplace_build(la, f.net, &post), IBVI_ERR_NOMEM, "4 P^2");
    ck_assert_ptr_null(post);
    ibvi_laplace_free(la);
    teardown(&f);
}
END_TEST

START_TEST(test_refusals)
{
    fixture f;
    setup(&f, 20);
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    ibvi_laplace *la = (ibvi_laplace *)&o;
    const char *fn = "ibvi_laplace_fit";
    EXPECT(ibvi_laplace_fit(NULL, f.net, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, fn);
    EXPECT(ibvi_laplace_fit(&la, NULL, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, fn);
    ck_assert_ptr_null(la);
    EXPECT(ibvi_laplace_fit(&la, f.net, NULL, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, fn);
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, NULL, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, fn);
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, f.x, NULL, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, fn);
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, 0, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "n = 0");
    /* labels */
    int32_t y[N];
    memcpy(y, f.y, sizeof y);
    y[7] = C;
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, f.x, y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "y[7] = 3");
    y[7] = -1;
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, f.x, y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "y[7] = -1");
    /* x not finite */
    float x[N * D];
    memcpy(x, f.x, sizeof x);
    x[5] = NAN;
    EXPECT(ibvi_laplace_fit(&la, f.net, &o, x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_NONFINITE, fn);
    /* options */
    ibvi_laplace_options b = o;
    b.version = 2;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "version");
    b = o; b.structure = 2;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "structure");
    b = o; b.prior = 3;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "prior");
    const float bad_lambda[] = {0.0f, -1.0f, NAN, INFINITY};
    for (int k = 0; k < 4; k++) {
        b = o; b.prior_precision = bad_lambda[k];
        EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
               IBVI_ERR_INVALID_ARG, "prior_precision");
    }
    b = o; b.lambda_min = b.lambda_max;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "lambda_min");
    b = o; b.grid_points = 1;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "grid_points");
    b = o; b.max_bytes = -1;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "max_bytes");
    b = o; b.batch = 0;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "batch");
    /* the validation prior needs a validation set */
    b = o; b.prior = IBVI_LAPLACE_PRIOR_VALIDATION;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "x_val");
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, f.xv, f.yv, 0),
           IBVI_ERR_INVALID_ARG, "n_val");
    int32_t yv[NV];
    memcpy(yv, f.yv, sizeof yv);
    yv[2] = 9;
    EXPECT(ibvi_laplace_fit(&la, f.net, &b, f.x, f.y, N, f.xv, yv, NV),
           IBVI_ERR_INVALID_ARG, "y_val[2] = 9");
    ck_assert_ptr_null(la);

    /* a network that is not initialised, variational, or without a last
     * dense classifier */
    ibvi_net *bad = NULL;
    CK_OK(ibvi_net_create(&bad, D, NULL));
    CK_OK(ibvi_net_add_dense(bad, C, 2));
    EXPECT(ibvi_laplace_fit(&la, bad, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_STATE, fn);
    CK_OK(ibvi_net_init(bad, IBVI_PARAM_SP, 1));
    EXPECT(ibvi_laplace_fit(&la, bad, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "deterministic");
    ibvi_net_free(bad);
    CK_OK(ibvi_net_create(&bad, D, NULL));
    CK_OK(ibvi_net_add_dense(bad, 1, 0));
    CK_OK(ibvi_net_init(bad, IBVI_PARAM_SP, 1));
    int32_t zeros[N] = {0};
    EXPECT(ibvi_laplace_fit(&la, bad, &o, f.x, zeros, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "2 or more classes");
    ibvi_net_free(bad);
    CK_OK(ibvi_net_create_image(&bad, 1, 3, 1, NULL));
    CK_OK(ibvi_net_add_conv2d(bad, C, 1, 1, 0, 0));
    CK_OK(ibvi_net_init(bad, IBVI_PARAM_SP, 1));
    EXPECT(ibvi_laplace_fit(&la, bad, &o, f.x, f.y, N, NULL, NULL, 0),
           IBVI_ERR_INVALID_ARG, "expected dense");
    ibvi_net_free(bad);

    /* the other functions */
    CK_OK(ibvi_laplace_fit(&la, f.net, &o, f.x, f.y, N, NULL, NULL, 0));
    double v;
    EXPECT(ibvi_laplace_prior_precision(NULL, &v), IBVI_ERR_INVALID_ARG,
           "ibvi_laplace_prior_precision");
    EXPECT(ibvi_laplace_log_marglik_at(la, 0.0, &v), IBVI_ERR_INVALID_ARG,
           "lambda = 0");
    EXPECT(ibvi_laplace_log_marglik_at(la, NAN, &v), IBVI_ERR_INVALID_ARG,
           "ibvi_laplace_log_marglik_at");
    double h[4];
    EXPECT(ibvi_laplace_get_hessian(la, h, 4), IBVI_ERR_SHAPE, "P^2 = 225");
    float probs[NV * C];
    EXPECT(ibvi_laplace_probit(la, f.net, f.xv, 0, probs, NULL),
           IBVI_ERR_INVALID_ARG, "n = 0");
    EXPECT(ibvi_laplace_probit(la, f.net, NULL, NV, probs, NULL),
           IBVI_ERR_INVALID_ARG, "ibvi_laplace_probit");
    /* a changed network is not the one fitted */
    float m[HID * D + HID];
    CK_OK(ibvi_layer_get_mean(tu_layer(f.net, 0), m, HID * D + HID));
    m[0] += 1.0f;
    CK_OK(ibvi_layer_set_mean(tu_layer(f.net, 0), m, HID * D + HID));
    ibvi_net *post = NULL;
    EXPECT(ibvi_laplace_probit(la, f.net, f.xv, NV, probs, NULL),
           IBVI_ERR_STATE, "not the network");
    EXPECT(ibvi_laplace_build(la, f.net, &post), IBVI_ERR_STATE,
           "not the network");
    ibvi_laplace_free(la);
    ibvi_laplace_free(NULL);
    teardown(&f);
}
END_TEST

/* ---- a layer large enough for the blocked Cholesky (P > 96) ------------- */

START_TEST(test_blocked_sizes)
{
    /* 5 -> 60 (tanh) -> 4: P = 244, two blocks of 96 and one of 52 */
    enum { IN = 5, W = 60, K = 4, PB = K * W + K, NB = 300 };
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, W, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, K, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 21));
    static float x[NB * IN];
    static int32_t y[NB];
    tu_rng rng;
    tu_rng_seed(&rng, 21);
    tu_fill_normal_f(&rng, x, NB * IN, 1.0);
    for (int i = 0; i < NB; i++)
        y[i] = tu_rng_int(&rng, K);
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    o.batch = 64;
    ibvi_laplace *la = NULL;
    CK_OK(ibvi_laplace_fit(&la, net, &o, x, y, NB, NULL, NULL, 0));
    double lambda, best;
    CK_OK(ibvi_laplace_prior_precision(la, &lambda));
    CK_OK(ibvi_laplace_log_marglik(la, &best));
    static double H[PB * PB], l[PB * PB], sigma[PB * PB], got[PB * PB];
    CK_OK(ibvi_laplace_get_hessian(la, H, PB * PB));
    /* the test's own unblocked Cholesky of H + lambda I: the log
     * determinant in the marglik, the inverse in the factor */
    memcpy(l, H, sizeof l);
    for (int k = 0; k < PB; k++)
        l[k * PB + k] += lambda;
    ck_assert_int_eq(tu_cholesky(l, PB), 0);
    double logdet = 0.0;
    for (int k = 0; k < PB; k++)
        logdet += 2.0 * log(l[k * PB + k]);
    double up, down;
    CK_OK(ibvi_laplace_log_marglik_at(la, 2.0 * lambda, &up));
    CK_OK(ibvi_laplace_log_marglik_at(la, 0.5 * lambda, &down));
    ck_assert(up < best && down < best);
    /* marglik(lambda) - marglik(2 lambda) from the test's determinants */
    double l2[PB * PB];
    memcpy(l2, H, sizeof l2);
    for (int k = 0; k < PB; k++)
        l2[k * PB + k] += 2.0 * lambda;
    ck_assert_int_eq(tu_cholesky(l2, PB), 0);
    double logdet2 = 0.0, sq = 0.0;
    for (int k = 0; k < PB; k++)
        logdet2 += 2.0 * log(l2[k * PB + k]);
    float theta[PB];
    CK_OK(ibvi_layer_get_mean(tu_layer(net, 2), theta, PB));
    for (int k = 0; k < PB; k++)
        sq += (double)theta[k] * theta[k];
    const double diff = 0.5 * lambda * sq + 0.5 * PB * log(0.5) -
                        0.5 * (logdet - logdet2);
    printf("blocked: P = %d, lambda* = %.6g, marglik(l) - marglik(2 l) = "
           "%.9g, direct %.9g\n", PB, lambda, best - up, diff);
    ck_assert(fabs((best - up) - diff) < 1e-6 * fmax(1.0, fabs(diff)));
    for (int i = 0; i < PB * PB; i++)
        sigma[i] = (i / PB == i % PB);
    tu_cholesky_solve(l, sigma, PB, PB);
    ibvi_net *post = NULL;
    CK_OK(ibvi_laplace_build(la, net, &post));
    static float S[PB * PB];
    CK_OK(ibvi_layer_get_factor(tu_layer(post, 2), S, PB * PB));
    for (int i = 0; i < PB; i++)
        for (int j = 0; j < PB; j++) {
            double acc = 0.0;
            for (int r = 0; r < PB; r++)
                acc += (double)S[i * PB + r] * S[j * PB + r];
            got[i * PB + j] = acc;
        }
    const double err = max_abs_diff(got, sigma, PB * PB);
    printf("blocked: max |S S^T - (H + lambda I)^-1| = %.3g (max %.3g)\n", err,
           max_abs(sigma, PB * PB));
    ck_assert(err < 1e-5 * max_abs(sigma, PB * PB));
    /* the probit's variances: the sampled logits' (off the common shift) */
    enum { M = 20000 };
    float *out = malloc(sizeof(float) * M * K);
    ck_assert_ptr_nonnull(out);
    CK_OK(ibvi_net_forward(post, x, 1, M, out));
    float probs[K], var[K];
    CK_OK(ibvi_laplace_probit(la, net, x, 1, probs, var));
    for (int c = 0; c < K; c++) {
        double m = 0.0, v = 0.0;
        for (int s2 = 0; s2 < M; s2++) {
            double mean = 0.0;
            for (int e = 0; e < K; e++)
                mean += out[s2 * K + e] / K;
            m += (out[s2 * K + c] - mean) / M;
        }
        for (int s2 = 0; s2 < M; s2++) {
            double mean = 0.0;
            for (int e = 0; e < K; e++)
                mean += out[s2 * K + e] / K;
            const double d = out[s2 * K + c] - mean - m;
            v += d * d / (M - 1);
        }
        printf("blocked: class %d probit var %.5g, sampled %.5g\n", c, var[c], v);
        ck_assert(fabs(v - var[c]) < 0.05 * var[c]);
    }
    free(out);
    ibvi_net_free(post);
    ibvi_laplace_free(la);
    ibvi_net_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("laplace");
    TCase *tc = tu_tcase("laplace");
    tcase_add_test(tc, test_hessian_brute_force);
    tcase_add_test(tc, test_hessian_finite_differences);
    tcase_add_test(tc, test_marglik_direct);
    tcase_add_test(tc, test_marglik_maximum);
    tcase_add_test(tc, test_build_full);
    tcase_add_test(tc, test_build_kfac);
    tcase_add_test(tc, test_probit_full);
    tcase_add_test(tc, test_probit_kfac);
    tcase_add_test(tc, test_kfac_factors);
    tcase_add_test(tc, test_validation_prior);
    tcase_add_test(tc, test_memory_refusal);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_blocked_sizes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

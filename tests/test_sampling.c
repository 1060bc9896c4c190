/*
 * libibvi tests - sampling and initialisation statistics, reproducibility.
 *
 * - theta_s = mu + S z: the weights a forward pass uses, read back from the
 *   outputs on the inputs e_j and 0, have mean mu and covariance S S^T, and
 *   equal mu + S z for the z reported by ibvi_net_last_noise;
 * - the noise is N(0, 1) and independent;
 * - the prior follows docs/concepts.md ("The prior and the
 *   parameterizations") for SP and muP and every role;
 * - the same seed gives bit-identical training runs, ibvi_net_set_rng_position
 *   replays the noise, forward_mean equals forward_noise with z = 0.
 *
 * Statistical tolerances are 5 standard errors (all seeds are fixed, so a
 * pass is reproducible; a broken sampler misses by far more).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- theta moments ------------------------------------------------------- */

/* _i = 0: rank 3 with a user-set mean and factor; _i = 1: rank 1 at the
 * prior. One dense layer, 3 inputs, 2 outputs, P = 8. */
START_TEST(test_theta_moments)
{
    const int32_t in = 3, out = 2, R = _i == 0 ? 3 : 1, P = 8;
    const int64_t M = 100000, n = 4;
    ibvi_net *net = tu_net_new(in, NULL);
    CK_OK(ibvi_net_add_dense(net, out, R));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 123 + (uint64_t)_i));
    ibvi_layer *l = tu_layer(net, 0);
    ck_assert_int_eq(ibvi_layer_param_count(l), P);
    float mu[8], s[8 * 3];
    if (_i == 0) {
        tu_rng rng;
        tu_rng_seed(&rng, 8);
        tu_fill_normal_f(&rng, mu, P, 2.0);
        tu_fill_normal_f(&rng, s, P * R, 0.7);
        CK_OK(ibvi_layer_set_mean(l, mu, P));
        CK_OK(ibvi_layer_set_factor(l, s, P * R));
    }
    CK_OK(ibvi_layer_get_mean(l, mu, P));
    CK_OK(ibvi_layer_get_factor(l, s, P * R));
    double sigma[8 * 8];
    for (int p = 0; p < P; p++)
        for (int q = 0; q < P; q++) {
            double v = 0.0;
            for (int r = 0; r < R; r++)
                v += (double)s[p * R + r] * s[q * R + r];
            sigma[p * P + q] = v;
        }

    float x[4 * 3] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    float *y = malloc(sizeof(float) * (size_t)(M * n * out));
    float *z = malloc(sizeof(float) * (size_t)(M * R));
    ck_assert(y && z);
    /* in two calls of M / 2 samples (the library caps samples per call) */
    for (int half = 0; half < 2; half++) {
        CK_OK(ibvi_net_forward(net, x, n, (int32_t)(M / 2),
                               y + half * (M / 2) * n * out));
        CK_OK(ibvi_net_last_noise(net, z + half * (M / 2) * R, (M / 2) * R));
    }

    double mean[8] = {0}, cov[8 * 8] = {0};
    double maxdev = 0.0;
    for (int64_t m = 0; m < M; m++) {
        const float *ym = y + m * n * out;
        double th[8];
        for (int o = 0; o < out; o++) {
            double b = ym[3 * out + o];
            for (int j = 0; j < in; j++)
                th[o * in + j] = ym[j * out + o] - b;
            th[out * in + o] = b;
        }
        /* theta_s = mu + S z_s */
        for (int p = 0; p < P; p++) {
            double t = mu[p];
            for (int r = 0; r < R; r++)
                t += (double)s[p * R + r] * z[m * R + r];
            double dev = fabs(t - th[p]) / (1.0 + fabs(t));
            if (dev > maxdev)
                maxdev = dev;
        }
        for (int p = 0; p < P; p++) {
            double dp = th[p] - mu[p];
            mean[p] += th[p];
            for (int q = 0; q < P; q++)
                cov[p * P + q] += dp * (th[q] - mu[q]);
        }
    }
    ck_assert_msg(maxdev < 1e-5, "theta_s differs from mu + S z by %g", maxdev);
    for (int p = 0; p < P; p++) {
        mean[p] /= (double)M;
        double se = sqrt(sigma[p * P + p] / (double)M);
        ck_assert_msg(fabs(mean[p] - mu[p]) <= 5.0 * se + 1e-6,
                      "rank %d: E[theta_%d] = %g, mu = %g (se %g)", (int)R, p,
                      mean[p], mu[p], se);
    }
    for (int p = 0; p < P; p++)
        for (int q = 0; q < P; q++) {
            /* centred at the known mean: E[(x-mu)(y-mu)] = Sigma_pq */
            double c = cov[p * P + q] / (double)M;
            double spq = sigma[p * P + q];
            double se = sqrt((sigma[p * P + p] * sigma[q * P + q] + spq * spq) /
                             (double)M);
            ck_assert_msg(fabs(c - spq) <= 5.0 * se + 1e-6,
                          "rank %d: Cov[%d,%d] = %g, (S S^T) = %g (se %g)",
                          (int)R, p, q, c, spq, se);
        }
    free(y);
    free(z);
    ibvi_net_free(net);
}
END_TEST

/* ---- the noise ------------------------------------------------------------- */

START_TEST(test_noise_standard_normal)
{
    ibvi_net *net = tu_net_new(2, NULL);
    CK_OK(ibvi_net_add_dense(net, 3, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 2, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 77));
    const int32_t ns = ibvi_net_noise_size(net);
    ck_assert_int_eq(ns, 5);
    const int32_t M = 40000; /* per call */
    const int calls = 3;     /* 120000 samples, 600000 values */
    float x[2] = {0.5f, -1.0f};
    float *out = malloc(sizeof(float) * (size_t)M * 2);
    float *z = malloc(sizeof(float) * (size_t)M * ns * calls);
    ck_assert(out && z);
    for (int c = 0; c < calls; c++) {
        CK_OK(ibvi_net_forward(net, x, 1, M, out));
        CK_OK(ibvi_net_last_noise(net, z + (size_t)c * M * ns,
                                  (int64_t)M * ns));
    }
    /* the calls drew different noise */
    ck_assert(memcmp(z, z + (size_t)M * ns, sizeof(float) * (size_t)M * ns) != 0);

    const int64_t total = (int64_t)M * ns * calls;
    double s1 = 0, s2 = 0, s4 = 0, lag = 0;
    for (int64_t k = 0; k < total; k++) {
        double v = z[k];
        ck_assert(isfinite(v));
        s1 += v;
        s2 += v * v;
        s4 += v * v * v * v;
        if (k > 0)
            lag += v * z[k - 1];
    }
    double nn = (double)total;
    double mean = s1 / nn, var = s2 / nn, m4 = s4 / nn, rho = lag / (nn - 1);
    printf("noise: mean %.5f var %.5f m4 %.4f lag1 %.5f over %lld values\n",
           mean, var, m4, rho, (long long)total);
    ck_assert_msg(fabs(mean) <= 5.0 / sqrt(nn), "noise mean %g", mean);
    ck_assert_msg(fabs(var - 1.0) <= 5.0 * sqrt(2.0 / nn), "noise var %g", var);
    ck_assert_msg(fabs(m4 - 3.0) <= 5.0 * sqrt(96.0 / nn), "noise E z^4 %g", m4);
    ck_assert_msg(fabs(rho) <= 5.0 / sqrt(nn), "noise lag-1 correlation %g",
                  rho);
    /* per component (layer, index) and cross-component correlations */
    const int64_t S = (int64_t)M * calls;
    for (int a = 0; a < ns; a++) {
        double m = 0, v = 0;
        for (int64_t k = 0; k < S; k++) {
            m += z[k * ns + a];
            v += (double)z[k * ns + a] * z[k * ns + a];
        }
        m /= (double)S;
        v /= (double)S;
        ck_assert_msg(fabs(m) <= 5.0 / sqrt((double)S), "z[%d] mean %g", a, m);
        ck_assert_msg(fabs(v - 1.0) <= 5.0 * sqrt(2.0 / (double)S),
                      "z[%d] var %g", a, v);
        for (int b = a + 1; b < ns; b++) {
            double c = 0;
            for (int64_t k = 0; k < S; k++)
                c += (double)z[k * ns + a] * z[k * ns + b];
            c /= (double)S;
            ck_assert_msg(fabs(c) <= 5.0 / sqrt((double)S),
                          "corr(z[%d], z[%d]) = %g", a, b, c);
        }
    }
    /* a crude tail check: P(|z| > 3) = 0.0027 */
    int64_t tail = 0;
    for (int64_t k = 0; k < total; k++)
        tail += fabsf(z[k]) > 3.0f;
    double pt = (double)tail / nn;
    ck_assert_msg(fabs(pt - 0.0026998) <= 5.0 * sqrt(0.0027 / nn),
                  "P(|z| > 3) = %g", pt);
    free(out);
    free(z);
    ibvi_net_free(net);
}
END_TEST

/* ---- the prior --------------------------------------------------------------- */

typedef struct moments {
    double n, s1, s2, s4;
} moments;

static void mom_add(moments *m, double v)
{
    m->n += 1;
    m->s1 += v;
    m->s2 += v * v;
    m->s4 += v * v * v * v;
}

/* Checks zero mean, standard deviation `std` and Gaussian kurtosis within 5
 * standard errors. */
static void mom_check(const moments *m, double std, const char *what)
{
    ck_assert_msg(m->n > 100, "%s: too few values", what);
    double mean = m->s1 / m->n;
    double var = m->s2 / m->n;
    double est = sqrt(var);
    ck_assert_msg(fabs(mean) <= 5.0 * std / sqrt(m->n), "%s: mean %g (std %g)",
                  what, mean, std);
    /* se of the std estimate of a Gaussian: std / sqrt(2 n) */
    ck_assert_msg(fabs(est - std) <= 5.0 * std / sqrt(2.0 * m->n),
                  "%s: std %.6g, expected %.6g (n = %.0f)", what, est, std,
                  m->n);
    if (m->n >= 5000) {
        double kurt = (m->s4 / m->n) / (var * var);
        ck_assert_msg(fabs(kurt - 3.0) <= 5.0 * sqrt(24.0 / m->n),
                      "%s: kurtosis %g, expected 3 (Gaussian)", what, kurt);
    }
}

static double expected_w_std(int param, int role, int fan_in)
{
    if (param == IBVI_PARAM_MUP && role == IBVI_ROLE_OUTPUT)
        return 1.0 / fan_in;
    return 1.0 / sqrt((double)fan_in);
}

/* _i: parameterization x architecture (0: input/hidden/output, 1: single). */
START_TEST(test_prior_distribution)
{
    int param = _i % 2;
    int single = _i / 2;
    ibvi_net *net = tu_net_new(single ? 20 : 60, NULL);
    if (single) {
        CK_OK(ibvi_net_add_dense(net, 30, 2));
    } else {
        CK_OK(ibvi_net_add_dense(net, 100, 4));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_dense(net, 150, 0));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_dense(net, 40, 3));
    }
    int32_t nl = ibvi_net_layer_count(net);
    moments w[5], b[5], fw[5], fb[5];
    memset(w, 0, sizeof w);
    memset(b, 0, sizeof b);
    memset(fw, 0, sizeof fw);
    memset(fb, 0, sizeof fb);
    const int seeds = 30; /* re-drawn priors pooled for enough biases */
    for (int sd = 0; sd < seeds; sd++) {
        CK_OK(ibvi_net_init(net, param, 1000u + (uint64_t)sd));
        for (int32_t i = 0; i < nl; i++) {
            ibvi_layer *l = tu_layer(net, i);
            if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
                continue;
            int32_t in, out, R;
            CK_OK(ibvi_layer_shape(l, &in, &out, &R));
            int64_t P;
            float *mu = tu_get_mean(l, &P);
            for (int64_t p = 0; p < P; p++)
                mom_add(p < (int64_t)in * out ? &w[i] : &b[i], mu[p]);
            free(mu);
            if (R > 0) {
                float *s = tu_get_factor(l, NULL);
                for (int64_t k = 0; k < P * R; k++)
                    mom_add(k / R < (int64_t)in * out ? &fw[i] : &fb[i], s[k]);
                free(s);
            }
        }
    }
    for (int32_t i = 0; i < nl; i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t in, out, R, role = ibvi_layer_get_role(l);
        CK_OK(ibvi_layer_shape(l, &in, &out, &R));
        double ws = expected_w_std(param, role, in);
        float qw, qb;
        CK_OK(ibvi_layer_init_std(l, &qw, &qb));
        ck_assert_msg(fabs(qw - ws) <= 1e-6 * ws && fabs(qb - 1.0f) <= 1e-6f,
                      "layer %d: init_std %g/%g, table %g/1", (int)i, qw, qb, ws);
        char what[96];
        snprintf(what, sizeof what, "param %d layer %d role %d W", param,
                 (int)i, (int)role);
        mom_check(&w[i], ws, what);
        what[strlen(what) - 1] = 'b';
        mom_check(&b[i], 1.0, what);
        if (R > 0) {
            snprintf(what, sizeof what, "param %d layer %d role %d S(W rows)",
                     param, (int)i, (int)role);
            mom_check(&fw[i], ws / sqrt((double)R), what);
            snprintf(what, sizeof what, "param %d layer %d role %d S(b rows)",
                     param, (int)i, (int)role);
            mom_check(&fb[i], 1.0 / sqrt((double)R), what);
        }
    }
    ibvi_net_free(net);
}
END_TEST

/* Mean and factor of one layer are not the same numbers, and the layers of
 * one network draw different values (a shared or restarted stream would
 * repeat them). */
START_TEST(test_prior_streams_distinct)
{
    ibvi_net *net = tu_net_new(8, NULL);
    CK_OK(ibvi_net_add_dense(net, 8, 8));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 8, 8));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 5));
    int64_t P;
    float *m0 = tu_get_mean(tu_layer(net, 0), &P);
    float *m2 = tu_get_mean(tu_layer(net, 2), NULL);
    float *s0 = tu_get_factor(tu_layer(net, 0), NULL);
    float *s2 = tu_get_factor(tu_layer(net, 2), NULL);
    /* correlation between the standardised draws */
    double c02 = 0, a = 0, bb = 0;
    for (int64_t p = 0; p < P; p++) {
        c02 += (double)m0[p] * m2[p];
        a += (double)m0[p] * m0[p];
        bb += (double)m2[p] * m2[p];
    }
    ck_assert_msg(fabs(c02) / sqrt(a * bb) < 0.5, "layers 0 and 2 correlate");
    ck_assert(memcmp(s0, s2, sizeof(float) * (size_t)P * 8) != 0);
    ck_assert(memcmp(m0, m2, sizeof(float) * (size_t)P) != 0);
    free(m0);
    free(m2);
    free(s0);
    free(s2);
    ibvi_net_free(net);
}
END_TEST

/* ---- reproducibility ----------------------------------------------------------- */

static ibvi_net *repro_net(uint64_t seed)
{
    ibvi_net *net = tu_net_new(5, NULL);
    CK_OK(ibvi_net_add_dense(net, 16, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 16, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

static void repro_train(ibvi_net *net, int steps)
{
    tu_rng rng;
    tu_rng_seed(&rng, 31337);
    float x[12 * 5];
    int32_t labels[12];
    tu_fill_normal_f(&rng, x, 12 * 5, 1.0);
    for (int i = 0; i < 12; i++)
        labels[i] = tu_rng_int(&rng, 4);
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.05f));
    CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
    for (int t = 0; t < steps; t++)
        CK_OK(ibvi_train_step(net, opt, x, 12, 2, IBVI_LOSS_SOFTMAX_XENT, labels,
                              NULL, NULL));
    ibvi_optimizer_free(opt);
}

/* 1 when every mean and factor of a and b is bit-identical. */
static int same_params(ibvi_net *a, ibvi_net *b)
{
    int same = 1;
    for (int32_t i = 0; i < ibvi_net_layer_count(a); i += 2) {
        ibvi_layer *la = tu_layer(a, i), *lb = tu_layer(b, i);
        int64_t P;
        float *ma = tu_get_mean(la, &P), *mb = tu_get_mean(lb, NULL);
        same &= memcmp(ma, mb, sizeof(float) * (size_t)P) == 0;
        free(ma);
        free(mb);
        int32_t R;
        CK_OK(ibvi_layer_shape(la, NULL, NULL, &R));
        if (R > 0) {
            float *fa = tu_get_factor(la, NULL), *fb = tu_get_factor(lb, NULL);
            same &= memcmp(fa, fb, sizeof(float) * (size_t)(P * R)) == 0;
            free(fa);
            free(fb);
        }
    }
    return same;
}

/* _i: BLIS threads per network (1 or 2); results are reproducible for a
 * fixed thread count. */
START_TEST(test_reproducible_training)
{
    ibvi_net *a = repro_net(99), *b = repro_net(99), *c = repro_net(100);
    CK_OK(ibvi_net_set_threads(a, 1 + _i));
    CK_OK(ibvi_net_set_threads(b, 1 + _i));
    CK_OK(ibvi_net_set_threads(c, 1 + _i));
    ck_assert_msg(same_params(a, b), "same seed, different prior");
    ck_assert_msg(!same_params(a, c), "different seeds, same prior");
    repro_train(a, 15);
    repro_train(b, 15);
    repro_train(c, 15);
    ck_assert_msg(same_params(a, b), "same seed and steps, different results");
    ck_assert_msg(!same_params(a, c), "different seeds, same results");
    uint64_t pa, pb, sa;
    CK_OK(ibvi_net_rng_position(a, &pa));
    CK_OK(ibvi_net_rng_position(b, &pb));
    ck_assert(pa == pb && pa > 0);
    CK_OK(ibvi_net_seed(a, &sa));
    ck_assert(sa == 99);

    /* Re-initialising with the seed re-draws the same prior and restarts the
     * stream at position 0. */
    ibvi_net *d = repro_net(99);
    CK_OK(ibvi_net_init(a, IBVI_PARAM_MUP, 99));
    ck_assert_msg(same_params(a, d), "re-init did not restore the prior");
    CK_OK(ibvi_net_rng_position(a, &pa));
    ck_assert(pa == 0);
    ibvi_net_free(a);
    ibvi_net_free(b);
    ibvi_net_free(c);
    ibvi_net_free(d);
}
END_TEST

START_TEST(test_rng_position_replays_noise)
{
    ibvi_net *net = repro_net(7);
    int32_t ns = ibvi_net_noise_size(net);
    ck_assert_int_eq(ns, 5);
    float x[2 * 5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, -1, 1, -1, 1, 0};
    float out[3 * 2 * 4], out2[3 * 2 * 4];
    float z1[15], z2[15], z3[15];
    uint64_t p0, p1, p2, p;
    CK_OK(ibvi_net_rng_position(net, &p0));
    ck_assert(p0 == 0);
    CK_OK(ibvi_net_forward(net, x, 2, 3, out));
    CK_OK(ibvi_net_last_noise(net, z1, 15));
    CK_OK(ibvi_net_rng_position(net, &p1));
    ck_assert(p1 > p0);
    CK_OK(ibvi_net_forward(net, x, 2, 3, out));
    CK_OK(ibvi_net_last_noise(net, z2, 15));
    CK_OK(ibvi_net_rng_position(net, &p2));
    ck_assert(p2 > p1);
    ck_assert(memcmp(z1, z2, sizeof z1) != 0);

    /* forward_noise does not advance the stream */
    CK_OK(ibvi_net_forward_noise(net, x, 2, 3, z1, 15, out2));
    CK_OK(ibvi_net_rng_position(net, &p));
    ck_assert(p == p2);

    /* back to p1: the second draw again */
    CK_OK(ibvi_net_set_rng_position(net, p1));
    CK_OK(ibvi_net_rng_position(net, &p));
    ck_assert(p == p1);
    CK_OK(ibvi_net_forward(net, x, 2, 3, out2));
    CK_OK(ibvi_net_last_noise(net, z3, 15));
    ck_assert_msg(memcmp(z2, z3, sizeof z2) == 0, "replay from p1 differs");
    ck_assert(memcmp(out, out2, sizeof out) == 0);
    /* back to 0: the first draw */
    CK_OK(ibvi_net_set_rng_position(net, p0));
    CK_OK(ibvi_net_forward(net, x, 2, 3, out2));
    CK_OK(ibvi_net_last_noise(net, z3, 15));
    ck_assert_msg(memcmp(z1, z3, sizeof z1) == 0, "replay from 0 differs");

    /* a resumed network (same seed, position set) draws what the
     * uninterrupted one drew */
    ibvi_net *other = repro_net(7);
    CK_OK(ibvi_net_set_rng_position(other, p1));
    CK_OK(ibvi_net_forward(other, x, 2, 3, out2));
    CK_OK(ibvi_net_last_noise(other, z3, 15));
    ck_assert_msg(memcmp(z2, z3, sizeof z2) == 0, "resumed network differs");
    ck_assert(memcmp(out, out2, sizeof out) == 0);
    ibvi_net_free(other);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_forward_mean_is_zero_noise)
{
    ibvi_net *net = repro_net(3);
    tu_rng rng;
    tu_rng_seed(&rng, 3);
    float x[7 * 5], a[7 * 4], b[2 * 7 * 4], zero[10] = {0};
    tu_fill_normal_f(&rng, x, 35, 1.0);
    CK_OK(ibvi_net_forward_mean(net, x, 7, a));
    CK_OK(ibvi_net_forward_noise(net, x, 7, 2, zero, 10, b));
    for (int k = 0; k < 28; k++) {
        ck_assert_msg(fabsf(a[k] - b[k]) <= 1e-6f * (1.0f + fabsf(a[k])),
                      "out[%d]: mean %g, zero noise %g", k, a[k], b[k]);
        ck_assert_msg(fabsf(a[k] - b[28 + k]) <= 1e-6f * (1.0f + fabsf(a[k])),
                      "second block out[%d]", k);
    }
    /* and nonzero noise changes the outputs */
    float z[5] = {1, -1, 0.5f, 2, -0.3f};
    CK_OK(ibvi_net_forward_noise(net, x, 7, 1, z, 5, b));
    double d = 0;
    for (int k = 0; k < 28; k++)
        d += fabsf(a[k] - b[k]);
    ck_assert(d > 1e-3);
    ibvi_net_free(net);
}
END_TEST

/* A deterministic network gives identical sample blocks. */
START_TEST(test_deterministic_blocks)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 6, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 4));
    ck_assert_int_eq(ibvi_net_noise_size(net), 0);
    float x[4 * 3] = {1, 2, 3, -1, 0, 1, 0.5f, 0.5f, 0.5f, 0, 0, 0};
    float out[3 * 4 * 2];
    CK_OK(ibvi_net_forward(net, x, 4, 3, out));
    for (int m = 1; m < 3; m++)
        ck_assert(memcmp(out, out + m * 8, sizeof(float) * 8) == 0);
    ibvi_net_free(net);
}
END_TEST

static Suite *sampling_suite(void)
{
    Suite *s = suite_create("sampling");
    TCase *tc = tu_tcase("stats");
    tcase_add_loop_test(tc, test_theta_moments, 0, 2);
    tcase_add_test(tc, test_noise_standard_normal);
    tcase_add_loop_test(tc, test_prior_distribution, 0, 4);
    tcase_add_test(tc, test_prior_streams_distinct);
    suite_add_tcase(s, tc);
    TCase *tr = tu_tcase("repro");
    tcase_add_loop_test(tr, test_reproducible_training, 0, 2);
    tcase_add_test(tr, test_rng_position_replays_noise);
    tcase_add_test(tr, test_forward_mean_is_zero_noise);
    tcase_add_test(tr, test_deterministic_blocks);
    suite_add_tcase(s, tr);
    return s;
}

int main(void) { return tu_run_suite(sampling_suite()); }

/*
 * libibvi tests - SWAG (include/ibvi/swag.h, docs/swag.md): the collected
 * moments and deviation ring against a direct computation from stored
 * snapshots, the DIAG_LOWRANK family's sampling (theta = mu + d .* z1 +
 * S z2, exactly and in its empirical covariance against the paper's closed
 * form 0.5 diag(var) + D D^T / (2 (K - 1))), the predictor and save/load
 * of built networks (MLP and conv2d + groupnorm + dense), and the
 * refusals.
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"
#include "testutil.h"

static float *alloc_f(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static double *alloc_d(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    ck_assert_ptr_nonnull(p);
    return p;
}

static ibvi_net *mlp(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 3, NULL));
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

/* conv2d + groupnorm + dense, the brief's image case. */
static ibvi_net *conv_net(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 5, 5, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_groupnorm(net, 1, 1e-5f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

static int64_t total_params(ibvi_net *net)
{
    int64_t total = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++)
        total += ibvi_layer_param_count(tu_layer(net, i));
    return total;
}

/* Sets every mean of net to base + scale * N(0, 1) (the flat order of the
 * layers' means into snap, total_params floats). */
static void perturb(ibvi_net *net, const float *base, double scale,
                    tu_rng *rng, float *snap)
{
    int64_t e = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        const int64_t P = ibvi_layer_param_count(l);
        if (P == 0)
            continue;
        for (int64_t p = 0; p < P; p++)
            snap[e + p] = base[e + p] + (float)(scale * tu_rng_normal(rng));
        CK_OK(ibvi_layer_set_mean(l, snap + e, P));
        e += P;
    }
}

static void get_means(ibvi_net *net, float *flat)
{
    int64_t e = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        const int64_t P = ibvi_layer_param_count(l);
        if (P == 0)
            continue;
        CK_OK(ibvi_layer_get_mean(l, flat + e, P));
        e += P;
    }
}

/* Collects `count` snapshots of net around its current means (spread
 * `scale`) into swag, keeping them in snaps (count x entries). */
static void collect_snapshots(ibvi_swag *swag, ibvi_net *net, int count,
                              double scale, uint64_t seed, float *snaps)
{
    const int64_t E = total_params(net);
    float *base = alloc_f(E);
    get_means(net, base);
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    for (int k = 0; k < count; k++) {
        perturb(net, base, scale, &rng, snaps + (int64_t)k * E);
        CK_OK(ibvi_swag_collect(swag, net));
        ck_assert_int_eq(ibvi_swag_count(swag), k + 1);
    }
    free(base);
}

/* The paper's quantities from the stored snapshots, in double: the mean,
 * the standard deviation and the deviation columns D_i = theta_i -
 * mean(theta_1..theta_i) of the last K snapshots (K x E, oldest first). */
static void reference(const float *snaps, int count, int K, int64_t E,
                      double *mean, double *std, double *dev)
{
    for (int64_t e = 0; e < E; e++) {
        double m = 0.0, q = 0.0;
        for (int k = 0; k < count; k++) {
            const double x = snaps[(int64_t)k * E + e];
            m += x;
            q += x * x;
            if (k >= count - K)
                dev[(int64_t)(k - (count - K)) * E + e] = x - m / (k + 1);
        }
        mean[e] = m / count;
        const double var = q / count - mean[e] * mean[e];
        std[e] = sqrt(var > 0.0 ? var : 0.0);
    }
}

/* ---- moments and the ring ------------------------------------------------ */

/* For count snapshots and rank 3: the built network's mean, d and S
 * against reference() (mu = mean, d = std / sqrt 2, S = D / sqrt(2 (K -
 * 1)), K = min(count, 3)), which shows the ring keeps the LAST 3 columns,
 * oldest first. */
static void check_moments(int count)
{
    ibvi_net *net = mlp(1);
    const int64_t E = total_params(net);
    ibvi_swag_options o;
    CK_OK(ibvi_swag_options_init(&o));
    ck_assert_int_eq(o.rank, 20);
    o.rank = 3;
    ibvi_swag *swag = NULL;
    CK_OK(ibvi_swag_create(&swag, net, &o));
    ck_assert_int_eq(ibvi_swag_count(swag), 0);
    float *snaps = alloc_f(count * E);
    collect_snapshots(swag, net, count, 0.3, 7 + count, snaps);
    const int K = count < 3 ? count : 3;
    double *mean = alloc_d(E), *std = alloc_d(E), *dev = alloc_d(K * E);
    reference(snaps, count, K, E, mean, std, dev);

    ibvi_net *post = NULL;
    CK_OK(ibvi_swag_build(swag, &post));
    ck_assert_int_eq(ibvi_net_is_initialized(post), 1);
    ck_assert_int_eq(ibvi_net_layer_count(post), ibvi_net_layer_count(net));
    int64_t e0 = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(post); i++) {
        ibvi_layer *l = tu_layer(post, i);
        const int64_t P = ibvi_layer_param_count(l);
        if (P == 0) {
            ck_assert_int_eq(ibvi_layer_covariance(l), IBVI_COVARIANCE_NONE);
            continue;
        }
        ck_assert_int_eq(ibvi_layer_covariance(l),
                         IBVI_COVARIANCE_DIAG_LOWRANK);
        int32_t rank = -1;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
        ck_assert_int_eq(rank, K);
        float *mu = alloc_f(P), *d = alloc_f(P), *S = alloc_f(P * K);
        CK_OK(ibvi_layer_get_mean(l, mu, P));
        CK_OK(ibvi_layer_get_diag(l, d, P));
        CK_OK(ibvi_layer_get_factor(l, S, P * K));
        const double s_scale = 1.0 / sqrt(2.0 * (K - 1));
        for (int64_t p = 0; p < P; p++) {
            const int64_t e = e0 + p;
            ck_assert_msg(fabs(mu[p] - mean[e]) <= 1e-6 * (1 + fabs(mean[e])),
                          "mean %lld: %g vs %g", (long long)e, mu[p],
                          mean[e]);
            const double d_ref = std[e] / sqrt(2.0);
            /* second - mean^2 loses digits when the spread is small
             * against the mean: 1e-4 of the value, or the cancellation. */
            ck_assert_msg(fabs(d[p] - d_ref) <= 1e-4 * d_ref + 1e-6,
                          "d %lld: %g vs %g", (long long)e, d[p], d_ref);
            for (int k = 0; k < K; k++) {
                const double ref = dev[(int64_t)k * E + e] * s_scale;
                ck_assert_msg(fabs(S[p * K + k] - ref) <= 1e-5 * (1 + fabs(ref)),
                              "S[%lld, %d]: %g vs %g", (long long)e, k,
                              S[p * K + k], ref);
            }
        }
        free(mu);
        free(d);
        free(S);
        e0 += P;
    }
    ck_assert_int_eq(e0, E);
    /* The source network is untouched by build; the collector goes on. */
    CK_OK(ibvi_swag_collect(swag, net));
    ck_assert_int_eq(ibvi_swag_count(swag), count + 1);
    ibvi_net_free(post);
    ibvi_swag_free(swag);
    ibvi_net_free(net);
    free(snaps);
    free(mean);
    free(std);
    free(dev);
}

START_TEST(test_moments_two) { check_moments(2); }
END_TEST
START_TEST(test_moments_ring_full) { check_moments(3); }
END_TEST
START_TEST(test_moments_ring_wraps) { check_moments(8); }
END_TEST

/* ---- sampling -------------------------------------------------------------- */

/* A one-layer network (dense 2 -> 2, P = 6) whose outputs reveal theta:
 * f(0) = b, f(e_j) - f(0) = column j of W. */
static void theta_of_outputs(const float *out, int64_t sample, float *theta)
{
    const float *o = out + sample * 3 * 2; /* 3 inputs x 2 outputs */
    const float b0 = o[0], b1 = o[1];
    /* theta = [W row-major (2 x 2); b] */
    theta[0] = o[2] - b0; /* W[0][0]: input e_0, output 0 */
    theta[1] = o[4] - b0; /* W[0][1] */
    theta[2] = o[3] - b1; /* W[1][0] */
    theta[3] = o[5] - b1; /* W[1][1] */
    theta[4] = b0;
    theta[5] = b1;
}

static const float probe_x[6] = {0, 0, 1, 0, 0, 1};

/* The family's noise layout: theta = mu + d .* z1 + S z2 with z1 the first
 * P entries of a sample's noise and z2 the next R, exactly (float
 * rounding), through ibvi_net_forward_noise. */
START_TEST(test_noise_layout_exact)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 2, NULL));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    o.family = IBVI_COVARIANCE_DIAG_LOWRANK;
    o.rank = 3;
    o.init_sigma = 0.0f;
    CK_OK(ibvi_net_set_covariance(net, 0, &o));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 5));
    ck_assert_int_eq(ibvi_net_noise_size(net), 6 + 3);
    ck_assert_int_eq(ibvi_net_param_count(net), 6 + 6 + 18);
    ibvi_layer *l = tu_layer(net, 0);
    /* Fresh: d = 0, S = 0, the layer is its mean. */
    float d[6], S[18], mu[6];
    CK_OK(ibvi_layer_get_diag(l, d, 6));
    CK_OK(ibvi_layer_get_factor(l, S, 18));
    for (int p = 0; p < 6; p++)
        ck_assert(d[p] == 0.0f);
    for (int p = 0; p < 18; p++)
        ck_assert(S[p] == 0.0f);
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    for (int p = 0; p < 6; p++)
        d[p] = (float)(0.1 + 0.5 * tu_rng_uniform(&rng));
    tu_fill_normal_f(&rng, S, 18, 0.4);
    CK_OK(ibvi_layer_set_diag(l, d, 6));
    CK_OK(ibvi_layer_set_factor(l, S, 18));
    CK_OK(ibvi_layer_get_mean(l, mu, 6));
    enum { M = 4 };
    float z[M * 9], out[M * 6];
    tu_fill_normal_f(&rng, z, M * 9, 1.0);
    CK_OK(ibvi_net_forward_noise(net, probe_x, 3, M, z, M * 9, out));
    for (int m = 0; m < M; m++) {
        float theta[6];
        theta_of_outputs(out, m, theta);
        for (int p = 0; p < 6; p++) {
            double ref = mu[p] + (double)d[p] * z[m * 9 + p];
            for (int r = 0; r < 3; r++)
                ref += (double)S[p * 3 + r] * z[m * 9 + 6 + r];
            ck_assert_msg(fabs(theta[p] - ref) <= 1e-5,
                          "sample %d entry %d: %g vs %g", m, p, theta[p],
                          ref);
        }
    }
    ibvi_net_free(net);
}
END_TEST

/* The backward of a diag-lowrank layer: dL/dmu = sum_m g_m and the factor
 * gradient sum_m g_m z2_m^T with z2 the LAST R entries of the layer's
 * noise (after z1), against finite differences of the loss in mu and S. */
START_TEST(test_backward_factor_gradient)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 2, NULL));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    ibvi_covariance_options o = {IBVI_COVARIANCE_OPTIONS_VERSION,
                                 IBVI_COVARIANCE_DIAG_LOWRANK, 2, 0.0f};
    CK_OK(ibvi_net_set_covariance(net, 0, &o));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
    ibvi_layer *l = tu_layer(net, 0);
    tu_rng rng;
    tu_rng_seed(&rng, 17);
    float d[6], S[12], z[2 * 8], g_out[2 * 3 * 2], out[2 * 3 * 2];
    for (int p = 0; p < 6; p++)
        d[p] = (float)(0.2 + 0.3 * tu_rng_uniform(&rng));
    tu_fill_normal_f(&rng, S, 12, 0.5);
    tu_fill_normal_f(&rng, z, 16, 1.0);
    tu_fill_normal_f(&rng, g_out, 12, 1.0);
    CK_OK(ibvi_layer_set_diag(l, d, 6));
    CK_OK(ibvi_layer_set_factor(l, S, 12));
    /* L = sum g_out . f(x; theta_m) over 2 samples: linear in the outputs */
    CK_OK(ibvi_net_forward_noise(net, probe_x, 3, 2, z, 16, out));
    CK_OK(ibvi_net_backward(net, g_out, 6, 2));
    float gm[6], gs[12];
    CK_OK(ibvi_layer_get_grad_mean(l, gm, 6));
    CK_OK(ibvi_layer_get_grad_factor(l, gs, 12));
    float mu[6];
    CK_OK(ibvi_layer_get_mean(l, mu, 6));
    const double h = 1e-2; /* L is linear in mu and S: exact up to rounding */
    for (int k = 0; k < 6 + 12; k++) {
        double lv[2];
        for (int side = 0; side < 2; side++) {
            float m2[6], s2[12];
            memcpy(m2, mu, sizeof m2);
            memcpy(s2, S, sizeof s2);
            const float step = (float)(side ? h : -h);
            if (k < 6)
                m2[k] += step;
            else
                s2[k - 6] += step;
            CK_OK(ibvi_layer_set_mean(l, m2, 6));
            CK_OK(ibvi_layer_set_factor(l, s2, 12));
            CK_OK(ibvi_net_forward_noise(net, probe_x, 3, 2, z, 16, out));
            double sum = 0.0;
            for (int i = 0; i < 12; i++)
                sum += (double)g_out[i] * out[i];
            lv[side] = sum;
        }
        const double fd = (lv[1] - lv[0]) / (2 * h);
        const double got = k < 6 ? gm[k] : gs[k - 6];
        ck_assert_msg(fabs(fd - got) <= 1e-3 * (1 + fabs(fd)),
                      "entry %d: %g vs finite difference %g", k, got, fd);
    }
    ibvi_net_free(net);
}
END_TEST

/* The empirical covariance of many sampled theta of a built network
 * against the paper's closed form from the snapshots,
 *     Sigma = 0.5 diag(var) + D D^T / (2 (K - 1)),
 * with per-entry standard deviations near 0.3 (variance 0.09): using the
 * variance where the standard deviation belongs shrinks the diagonal part
 * by ~3x and fails by many standard errors. */
START_TEST(test_sampling_scale)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 2, NULL));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 2));
    enum { COUNT = 12, RANK = 4, E = 6 };
    ibvi_swag_options o = IBVI_SWAG_OPTIONS_INIT;
    o.rank = RANK;
    ibvi_swag *swag = NULL;
    CK_OK(ibvi_swag_create(&swag, net, &o));
    float snaps[COUNT * E];
    collect_snapshots(swag, net, COUNT, 0.3, 21, snaps);
    double mean[E], std[E], dev[RANK * E];
    reference(snaps, COUNT, RANK, E, mean, std, dev);
    double sigma[E * E];
    for (int a = 0; a < E; a++)
        for (int b = 0; b < E; b++) {
            double s = a == b ? 0.5 * std[a] * std[a] : 0.0;
            for (int k = 0; k < RANK; k++)
                s += dev[k * E + a] * dev[k * E + b] / (2.0 * (RANK - 1));
            sigma[a * E + b] = s;
        }
    /* The test means something: std and variance differ here. */
    for (int a = 0; a < E; a++)
        ck_assert_msg(std[a] > 0.15 && std[a] < 0.6, "std %g", std[a]);

    ibvi_net *post = NULL;
    CK_OK(ibvi_swag_build(swag, &post));
    enum { M = 40000 };
    float *out = alloc_f((int64_t)M * 6);
    CK_OK(ibvi_net_forward(post, probe_x, 3, M, out));
    double sum[E] = {0}, cross[E * E] = {0};
    for (int64_t m = 0; m < M; m++) {
        float theta[E];
        theta_of_outputs(out, m, theta);
        for (int a = 0; a < E; a++) {
            sum[a] += theta[a];
            for (int b = 0; b < E; b++)
                cross[a * E + b] += (double)theta[a] * theta[b];
        }
    }
    for (int a = 0; a < E; a++) {
        const double m_a = sum[a] / M;
        /* the sample mean: standard error sqrt(Sigma_aa / M) */
        ck_assert_msg(fabs(m_a - mean[a]) <= 5 * sqrt(sigma[a * E + a] / M),
                      "mean %d: %g vs %g", a, m_a, mean[a]);
        for (int b = 0; b < E; b++) {
            const double c = cross[a * E + b] / M - m_a * sum[b] / M;
            /* Var of a product moment of Gaussians: (S_aa S_bb + S_ab^2) / M */
            const double se = sqrt((sigma[a * E + a] * sigma[b * E + b] +
                                    sigma[a * E + b] * sigma[a * E + b]) / M);
            ck_assert_msg(fabs(c - sigma[a * E + b]) <= 5 * se,
                          "cov[%d][%d]: %g vs %g (se %g)", a, b, c,
                          sigma[a * E + b], se);
        }
        /* The buggy variance-for-std diagonal would be this far off. */
        const double buggy = 0.5 * pow(std[a], 4) +
                             (sigma[a * E + a] - 0.5 * std[a] * std[a]);
        const double se = sqrt(2.0 / M) * sigma[a * E + a];
        ck_assert_msg(fabs(buggy - sigma[a * E + a]) > 20 * se,
                      "the test would not catch the variance bug");
    }
    free(out);
    ibvi_net_free(post);
    ibvi_swag_free(swag);
    ibvi_net_free(net);
}
END_TEST

/* ---- the predictor and save/load ---------------------------------------- */

/* Bitwise-equal predictions of two networks with the same predictor seed. */
static void same_predictions(ibvi_net *a, ibvi_net *b, int32_t K)
{
    const int32_t in = ibvi_net_input_dim(a);
    const int32_t classes = ibvi_net_output_dim(a);
    enum { N = 5 };
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    float *x = alloc_f(N * in), *pa = alloc_f(N * classes),
          *pb = alloc_f(N * classes);
    tu_fill_normal_f(&rng, x, N * in, 1.0);
    ibvi_predictor *qa = NULL, *qb = NULL;
    CK_OK(ibvi_predictor_create(&qa, a, K, 77));
    CK_OK(ibvi_predictor_create(&qb, b, K, 77));
    CK_OK(ibvi_predictor_run(qa, x, N, pa, NULL, NULL, NULL));
    CK_OK(ibvi_predictor_run(qb, x, N, pb, NULL, NULL, NULL));
    ck_assert(memcmp(pa, pb, (size_t)N * classes * sizeof(float)) == 0);
    ibvi_predictor_free(qa);
    ibvi_predictor_free(qb);
    free(x);
    free(pa);
    free(pb);
}

/* Builds a SWAG network from 6 snapshots of src (rank 4). */
static ibvi_net *built(ibvi_net *src, uint64_t seed)
{
    ibvi_swag_options o = IBVI_SWAG_OPTIONS_INIT;
    o.rank = 4;
    ibvi_swag *swag = NULL;
    CK_OK(ibvi_swag_create(&swag, src, &o));
    float *snaps = alloc_f(6 * total_params(src));
    collect_snapshots(swag, src, 6, 0.2, seed, snaps);
    ibvi_net *post = NULL;
    CK_OK(ibvi_swag_build(swag, &post));
    ibvi_swag_free(swag);
    free(snaps);
    return post;
}

static void check_round_trip_and_predictor(ibvi_net *post)
{
    /* The predictor against K forwards with its noise. */
    tu_naive_predict r;
    tu_predict_vs_naive(&post, 1, 8, 5, 6, &r);
    ck_assert_msg(r.worst <= 1e-5, "predictor vs forward_noise: %g", r.worst);
    /* ... and the samples differ from the mean network. */
    ibvi_predictor *mean = NULL;
    float *pm = alloc_f(r.n * r.classes);
    CK_OK(ibvi_predictor_create(&mean, post, 1, 5));
    CK_OK(ibvi_predictor_set_mean_network(mean, 1));
    CK_OK(ibvi_predictor_run(mean, r.x, r.n, pm, NULL, NULL, NULL));
    double diff = 0.0;
    for (int64_t i = 0; i < r.n * r.classes; i++)
        diff += fabs(pm[i] - r.probs[i]);
    ck_assert_msg(diff > 1e-4, "samples equal the mean: %g", diff);
    free(pm);
    ibvi_predictor_free(mean);
    tu_naive_predict_free(&r);

    int64_t len = 0;
    CK_OK(ibvi_net_save_size(post, NULL, &len));
    uint8_t *b = malloc((size_t)len), *again = malloc((size_t)len);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(again);
    CK_OK(ibvi_net_save_buffer(post, NULL, b, len));
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load_buffer(&back, NULL, b, len, NULL));
    for (int32_t i = 0; i < ibvi_net_layer_count(post); i++) {
        ibvi_layer *l = tu_layer(post, i), *m = tu_layer(back, i);
        ck_assert_int_eq(ibvi_layer_covariance(m), ibvi_layer_covariance(l));
        const int64_t P = ibvi_layer_param_count(l);
        if (ibvi_layer_covariance(l) != IBVI_COVARIANCE_DIAG_LOWRANK)
            continue;
        float *d1 = alloc_f(P), *d2 = alloc_f(P);
        CK_OK(ibvi_layer_get_diag(l, d1, P));
        CK_OK(ibvi_layer_get_diag(m, d2, P));
        ck_assert(memcmp(d1, d2, (size_t)P * sizeof(float)) == 0);
        free(d1);
        free(d2);
    }
    CK_OK(ibvi_net_save_buffer(back, NULL, again, len));
    ck_assert(memcmp(b, again, (size_t)len) == 0);
    same_predictions(post, back, 8);
    free(b);
    free(again);
    ibvi_net_free(back);
}

START_TEST(test_mlp_predict_save_load)
{
    ibvi_net *net = mlp(3);
    ibvi_net *post = built(net, 31);
    check_round_trip_and_predictor(post);
    ibvi_net_free(post);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_conv_predict_save_load)
{
    ibvi_net *net = conv_net(4);
    ibvi_net *post = built(net, 41);
    /* conv2d, groupnorm and dense all carry the family. */
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 0)),
                     IBVI_COVARIANCE_DIAG_LOWRANK);
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 1)),
                     IBVI_COVARIANCE_DIAG_LOWRANK);
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 4)),
                     IBVI_COVARIANCE_DIAG_LOWRANK);
    check_round_trip_and_predictor(post);
    ibvi_net_free(post);
    ibvi_net_free(net);
}
END_TEST

/* A residual's projection stays deterministic (its SWA mean only). */
START_TEST(test_residual_projection_deterministic)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 4, 4, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_residual(net, 1, 1));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 6));
    ibvi_net *post = built(net, 51);
    ibvi_layer *res = tu_layer(post, 3);
    ck_assert_int_gt(ibvi_layer_param_count(res), 0);
    ck_assert_int_eq(ibvi_layer_covariance(res), IBVI_COVARIANCE_NONE);
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 2)),
                     IBVI_COVARIANCE_DIAG_LOWRANK);
    check_round_trip_and_predictor(post);
    ibvi_net_free(post);
    ibvi_net_free(net);
}
END_TEST

/* ---- refusals -------------------------------------------------------------- */

START_TEST(test_refusals)
{
    ibvi_net *net = mlp(8), *other = NULL;
    CK_OK(ibvi_net_create(&other, 3, NULL));
    CK_OK(ibvi_net_add_dense(other, 5, 0)); /* 4 units in net */
    CK_OK(ibvi_net_add_activation(other, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(other, 3, 0));
    CK_OK(ibvi_net_init(other, IBVI_PARAM_MUP, 1));
    ibvi_swag *swag = NULL;
    ibvi_swag_options o = IBVI_SWAG_OPTIONS_INIT;

    /* create: options, state of the network */
    o.rank = 1;
    CK_STATUS(ibvi_swag_create(&swag, net, &o), IBVI_ERR_INVALID_ARG);
    o.rank = IBVI_DIAG_LOWRANK_MAX_RANK + 1;
    CK_STATUS(ibvi_swag_create(&swag, net, &o), IBVI_ERR_INVALID_ARG);
    o = (ibvi_swag_options)IBVI_SWAG_OPTIONS_INIT;
    o.version = 99;
    CK_STATUS(ibvi_swag_create(&swag, net, &o), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_null(swag);
    ibvi_net *fresh = NULL;
    CK_OK(ibvi_net_create(&fresh, 3, NULL));
    CK_OK(ibvi_net_add_dense(fresh, 2, 0));
    CK_STATUS(ibvi_swag_create(&swag, fresh, NULL), IBVI_ERR_STATE);
    ibvi_net_free(fresh);
    ibvi_net *lowrank = NULL;
    CK_OK(ibvi_net_create(&lowrank, 3, NULL));
    CK_OK(ibvi_net_add_dense(lowrank, 2, 1));
    CK_OK(ibvi_net_init(lowrank, IBVI_PARAM_MUP, 1));
    CK_STATUS(ibvi_swag_create(&swag, lowrank, NULL), IBVI_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "deterministic"));
    ibvi_net_free(lowrank);

    /* build with fewer than 2 snapshots */
    CK_OK(ibvi_swag_create(&swag, net, NULL));
    ibvi_net *post = (ibvi_net *)&o; /* must be reset to NULL */
    CK_STATUS(ibvi_swag_build(swag, &post), IBVI_ERR_STATE);
    ck_assert_ptr_null(post);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "at least 2"));
    CK_OK(ibvi_swag_collect(swag, net));
    CK_STATUS(ibvi_swag_build(swag, &post), IBVI_ERR_STATE);

    /* collect on another architecture: unchanged */
    CK_STATUS(ibvi_swag_collect(swag, other), IBVI_ERR_SHAPE);
    ck_assert_int_eq(ibvi_swag_count(swag), 1);
    CK_STATUS(ibvi_swag_collect(swag, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_swag_collect(NULL, net), IBVI_ERR_INVALID_ARG);
    ck_assert_int_eq(ibvi_swag_count(swag), 1);
    CK_OK(ibvi_swag_collect(swag, net));
    CK_OK(ibvi_swag_build(swag, &post));

    /* a SWAG network is not trained, and has no flat layout */
    ibvi_optimizer *opt = NULL;
    CK_STATUS(ibvi_optimizer_create(&opt, post, IBVI_OPT_SGD, 0.1f),
              IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_null(opt);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "SWAG"));
    CK_STATUS(ibvi_optimizer_create(&opt, post, IBVI_OPT_ADAM, 0.1f),
              IBVI_ERR_UNSUPPORTED);
    const int64_t len = ibvi_net_param_count(post);
    float *buf = alloc_f(len);
    CK_STATUS(ibvi_net_get_params(post, buf, len), IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "SWAG"));
    CK_STATUS(ibvi_net_set_params(post, buf, len), IBVI_ERR_UNSUPPORTED);
    CK_STATUS(ibvi_net_get_grads(post, buf, len), IBVI_ERR_UNSUPPORTED);
    CK_STATUS(ibvi_net_grads_factored_size(post, 1), IBVI_ERR_UNSUPPORTED);
    CK_STATUS(ibvi_net_get_grads_factored(post, buf, len),
              IBVI_ERR_UNSUPPORTED);
    /* ... nor collected from (it is not deterministic) */
    ibvi_swag *again = NULL;
    CK_STATUS(ibvi_swag_create(&again, post, NULL), IBVI_ERR_STATE);
    /* but its means may be collected by a collector of its architecture */
    CK_OK(ibvi_swag_collect(swag, post));

    /* d: non-negative, finite, only on this family */
    ibvi_layer *l = tu_layer(post, 0);
    const int64_t P = ibvi_layer_param_count(l);
    float *d = alloc_f(P), *d0 = alloc_f(P);
    CK_OK(ibvi_layer_get_diag(l, d0, P));
    memcpy(d, d0, (size_t)P * sizeof(float));
    d[1] = -0.5f;
    CK_STATUS(ibvi_layer_set_diag(l, d, P), IBVI_ERR_INVALID_ARG);
    d[1] = NAN;
    CK_STATUS(ibvi_layer_set_diag(l, d, P), IBVI_ERR_NONFINITE);
    d[1] = -INFINITY;
    CK_STATUS(ibvi_layer_set_diag(l, d, P), IBVI_ERR_NONFINITE);
    CK_STATUS(ibvi_layer_set_diag(l, d, P - 1), IBVI_ERR_SHAPE);
    CK_OK(ibvi_layer_get_diag(l, d, P));
    ck_assert(memcmp(d, d0, (size_t)P * sizeof(float)) == 0);
    CK_STATUS(ibvi_layer_get_diag(tu_layer(net, 0), d, P),
              IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_layer_set_diag(tu_layer(net, 0), d, P),
              IBVI_ERR_INVALID_ARG);

    /* the family on a residual, with a bad rank, after init */
    ibvi_covariance_options c = IBVI_COVARIANCE_OPTIONS_INIT;
    c.family = IBVI_COVARIANCE_DIAG_LOWRANK;
    c.init_sigma = 0.0f;
    c.rank = 2;
    CK_STATUS(ibvi_net_set_covariance(net, 0, &c), IBVI_ERR_STATE);
    ibvi_net *res = NULL;
    CK_OK(ibvi_net_create_image(&res, 1, 4, 4, NULL));
    CK_OK(ibvi_net_add_conv2d(res, 2, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_residual(res, -1, 1));
    CK_STATUS(ibvi_net_set_covariance(res, 1, &c), IBVI_ERR_INVALID_ARG);
    c.rank = 0;
    CK_STATUS(ibvi_net_set_covariance(res, 0, &c), IBVI_ERR_INVALID_ARG);
    c.rank = IBVI_DIAG_LOWRANK_MAX_RANK + 1;
    CK_STATUS(ibvi_net_set_covariance(res, 0, &c), IBVI_ERR_INVALID_ARG);
    c.rank = 200; /* above P = 56: allowed for this family */
    CK_OK(ibvi_net_set_covariance(res, 0, &c));
    c.init_sigma = 0.5f;
    CK_STATUS(ibvi_net_set_covariance(res, 0, &c), IBVI_ERR_INVALID_ARG);
    ibvi_net_free(res);

    free(buf);
    free(d);
    free(d0);
    ibvi_net_free(post);
    ibvi_swag_free(swag);
    ibvi_net_free(other);
    ibvi_net_free(net);
}
END_TEST

static Suite *swag_suite(void)
{
    Suite *s = suite_create("swag");
    TCase *tc = tu_tcase("moments");
    tcase_add_test(tc, test_moments_two);
    tcase_add_test(tc, test_moments_ring_full);
    tcase_add_test(tc, test_moments_ring_wraps);
    suite_add_tcase(s, tc);
    tc = tu_tcase("sampling");
    tcase_add_test(tc, test_noise_layout_exact);
    tcase_add_test(tc, test_sampling_scale);
    tcase_add_test(tc, test_backward_factor_gradient);
    suite_add_tcase(s, tc);
    tc = tu_tcase("predictor_io");
    tcase_add_test(tc, test_mlp_predict_save_load);
    tcase_add_test(tc, test_conv_predict_save_load);
    tcase_add_test(tc, test_residual_projection_deterministic);
    suite_add_tcase(s, tc);
    tc = tu_tcase("refusals");
    tcase_add_test(tc, test_refusals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(swag_suite()); }

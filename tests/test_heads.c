/*
 * libibvi tests - prediction heads (predictor.h), the Gaussian NLL loss
 * (loss.h) and the noise-std fit (calibration.h).
 *
 * 1. Every head against a naive computation from ibvi_net_forward_noise
 *    with the predictor's own noise (ibvi_predictor_noise): the sigmoid
 *    head's probabilities, entropies and mutual information; the
 *    regression heads' mean, epistemic and aleatoric variances and raw
 *    samples; for K = 1 and 5, an ensemble, mean-network mode, an MLP and a
 *    conv network, a deterministic network (one block standing for K), and
 *    chunked batches (batch size < n) against one batch.
 * 2. The softmax head is the default and unchanged: switching heads and
 *    back gives bitwise the outputs of a fresh predictor.
 * 3. Every rejected call (bad options, bad combinations, the wrong run for
 *    the head) leaves the predictor as it was: later runs give bitwise the
 *    outputs from before, and the rejected run wrote nothing.
 * 4. The Gaussian NLL: a hand-computed case, a finite-difference gradient,
 *    the clamp of the log-variance, several samples per target, and
 *    training a heteroscedastic MLP recovers input-dependent noise.
 * 5. ibvi_fit_noise_std: the closed form exactly; with epistemic variance
 *    the fitted sigma is a maximum of the likelihood (the derivative
 *    changes sign there, and no sigma on a wide grid does better).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* in -> dense(hidden, rank) -> relu -> dense(out, rank2) */
static ibvi_net *mlp(int32_t in, int32_t hidden, int32_t out, int32_t rank,
                     int32_t rank2, uint64_t seed)
{
    ibvi_net *net = tu_net_new(in, NULL);
    CK_OK(ibvi_net_add_dense(net, hidden, rank));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, out, rank2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, seed));
    return net;
}

/* (2, 6, 6) -> conv(3, 3x3, rank) -> relu -> maxpool 2 -> flatten ->
 * dense(out, 1) */
static ibvi_net *convnet(int32_t out, int32_t rank, uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 6, 6, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 1, 1, rank));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, out, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, seed));
    return net;
}

static void set_head(ibvi_predictor *p, int32_t kind, float noise_std)
{
    ibvi_head_options o;
    CK_OK(ibvi_head_options_init(&o, kind));
    o.noise_std = noise_std;
    CK_OK(ibvi_predictor_set_head(p, &o));
    ck_assert_int_eq(ibvi_predictor_head(p), kind);
}

static double entropy2(double p)
{
    double h = 0.0;
    if (p > 0.0)
        h -= p * log(p);
    if (p < 1.0)
        h -= (1.0 - p) * log(1.0 - p);
    return h;
}

static double clamp_log_var(double s)
{
    return s < IBVI_LOG_VAR_MIN ? IBVI_LOG_VAR_MIN
           : s > IBVI_LOG_VAR_MAX ? IBVI_LOG_VAR_MAX : s;
}

static void close_to(const char *what, const float *got, const double *want,
                     int64_t count, double tol)
{
    for (int64_t i = 0; i < count; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                      "%s[%lld] = %.9g, expected %.9g", what, (long long)i,
                      (double)got[i], want[i]);
}

/* The outputs of every member sample the predictor averages, from
 * ibvi_net_forward_noise (or forward_mean in mean-network mode):
 * S x n x outputs doubles, S = count x K. */
static double *naive_outputs(ibvi_predictor *pred, ibvi_net *const *nets,
                             int32_t count, int32_t K, int mean_network,
                             const float *x, int64_t n)
{
    const int32_t outs = ibvi_net_output_dim(nets[0]);
    const int32_t ns = ibvi_net_noise_size(nets[0]);
    const int64_t zl = (int64_t)count * K * ns;
    float *z = alloc_f(zl), *f = alloc_f(n * outs);
    CK_OK(ibvi_predictor_noise(pred, z, zl));
    const int32_t Ks = mean_network ? 1 : K;
    double *all = alloc_d((int64_t)count * Ks * n * outs);
    for (int32_t m = 0; m < count; m++)
        for (int32_t k = 0; k < Ks; k++) {
            if (mean_network)
                CK_OK(ibvi_net_forward_mean(nets[m], x, n, f));
            else
                CK_OK(ibvi_net_forward_noise(
                    nets[m], x, n, 1, ns ? z + ((int64_t)m * K + k) * ns : NULL,
                    ns, f));
            double *dst = all + ((int64_t)m * Ks + k) * n * outs;
            for (int64_t i = 0; i < n * outs; i++)
                dst[i] = f[i];
        }
    free(z);
    free(f);
    return all;
}

typedef struct setup {
    ibvi_net *const *nets;
    int32_t count, K;
    int mean_network;
    int64_t batch; /* 0: the default */
    float temperature;
} setup;

static ibvi_predictor *make(const setup *s, uint64_t seed)
{
    ibvi_predictor *p = NULL;
    if (s->count == 1)
        CK_OK(ibvi_predictor_create(&p, s->nets[0], s->K, seed));
    else
        CK_OK(ibvi_predictor_create_ensemble(&p, s->nets, s->count, s->K,
                                             seed));
    if (s->mean_network)
        CK_OK(ibvi_predictor_set_mean_network(p, 1));
    if (s->batch)
        CK_OK(ibvi_predictor_set_batch_size(p, s->batch));
    return p;
}

static float *inputs(ibvi_net *net, int64_t n, uint64_t seed)
{
    const int32_t d = ibvi_net_input_dim(net);
    float *x = alloc_f(n * d);
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    tu_fill_normal_f(&rng, x, n * d, 1.0);
    return x;
}

/* The sigmoid head against the naive average of sigmoid(f / T). */
static void check_sigmoid(const setup *s, uint64_t seed)
{
    const int64_t n = 11;
    const float T = s->temperature > 0 ? s->temperature : 1.0f;
    ibvi_predictor *p = make(s, seed);
    CK_OK(ibvi_predictor_set_temperature(p, T));
    set_head(p, IBVI_HEAD_SIGMOID, 0.0f);
    ck_assert_int_eq(ibvi_predictor_output_dim(p), 2);
    float *x = inputs(s->nets[0], n, seed + 1);
    float probs[2 * 11], pe[11], ee[11], mi[11];
    CK_OK(ibvi_predictor_run(p, x, n, probs, pe, ee, mi));
    const int32_t S = s->count * (s->mean_network ? 1 : s->K);
    double *f = naive_outputs(p, s->nets, s->count, s->K, s->mean_network, x, n);
    double want_p[2 * 11], want_pe[11], want_ee[11], want_mi[11];
    double spread = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double pk = 0.0, e = 0.0;
        for (int32_t k = 0; k < S; k++) {
            const double q = 1.0 / (1.0 + exp(-f[k * n + i] / T));
            pk += q / S;
            e += entropy2(q) / S;
        }
        want_p[2 * i] = 1.0 - pk;
        want_p[2 * i + 1] = pk;
        want_pe[i] = entropy2(pk);
        want_ee[i] = e;
        want_mi[i] = want_pe[i] > e ? want_pe[i] - e : 0.0;
        spread += fabs(pk - 0.5);
    }
    close_to("sigmoid probs", probs, want_p, 2 * n, 1e-5);
    close_to("sigmoid predictive entropy", pe, want_pe, n, 1e-5);
    close_to("sigmoid expected entropy", ee, want_ee, n, 1e-5);
    close_to("sigmoid mutual information", mi, want_mi, n, 1e-5);
    ck_assert_msg(spread > 1e-3, "the probabilities are all 1/2");
    free(f);
    free(x);
    ibvi_predictor_free(p);
}

/* A regression head against the naive mean and variances of the samples;
 * returns the largest epistemic variance seen (> 0 shows the samples
 * differ). */
static double check_regression(const setup *s, int32_t kind, float sigma,
                               uint64_t seed)
{
    const int64_t n = 13;
    const int32_t outs = ibvi_net_output_dim(s->nets[0]);
    const int32_t D = kind == IBVI_HEAD_HETEROSCEDASTIC ? outs / 2 : outs;
    ibvi_predictor *p = make(s, seed);
    set_head(p, kind, sigma);
    ck_assert_int_eq(ibvi_predictor_output_dim(p), D);
    const int32_t Ks = s->mean_network ? 1 : s->K;
    ck_assert_int_eq(ibvi_predictor_samples(p), Ks);
    const int32_t S = s->count * Ks;
    float *x = inputs(s->nets[0], n, seed + 1);
    float *mean = alloc_f(n * D), *ve = alloc_f(n * D), *va = alloc_f(n * D);
    float *samples = alloc_f((int64_t)S * n * D);
    CK_OK(ibvi_predictor_run_regression(p, x, n, mean, ve, va, samples));
    double *f = naive_outputs(p, s->nets, s->count, s->K, s->mean_network, x, n);
    double *wm = alloc_d(n * D), *wve = alloc_d(n * D), *wva = alloc_d(n * D);
    double *ws = alloc_d((int64_t)S * n * D);
    double worst_ve = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < D; j++) {
            double m = 0.0, v = 0.0, a = 0.0;
            for (int32_t k = 0; k < S; k++) {
                const double *row = f + ((int64_t)k * n + i) * outs;
                m += row[j] / S;
                ws[((int64_t)k * n + i) * D + j] = row[j];
                a += kind == IBVI_HEAD_HETEROSCEDASTIC
                         ? exp(clamp_log_var(row[D + j])) / S
                         : 0.0;
            }
            for (int32_t k = 0; k < S; k++) {
                const double d = f[((int64_t)k * n + i) * outs + j] - m;
                v += d * d / S;
            }
            wm[i * D + j] = m;
            wve[i * D + j] = v;
            wva[i * D + j] =
                kind == IBVI_HEAD_HETEROSCEDASTIC ? a : (double)sigma * sigma;
            worst_ve = v > worst_ve ? v : worst_ve;
        }
    close_to("mean", mean, wm, n * D, 1e-5);
    close_to("var_epistemic", ve, wve, n * D, 1e-5);
    close_to("var_aleatoric", va, wva, n * D, 1e-5);
    close_to("samples", samples, ws, (int64_t)S * n * D, 1e-6);
    /* Each output alone, the others NULL, gives the same values. */
    float *again = alloc_f(n * D);
    CK_OK(ibvi_predictor_run_regression(p, x, n, NULL, again, NULL, NULL));
    ck_assert(memcmp(again, ve, sizeof(float) * (size_t)(n * D)) == 0);
    free(again);
    free(f);
    free(wm);
    free(wve);
    free(wva);
    free(ws);
    free(x);
    free(mean);
    free(ve);
    free(va);
    free(samples);
    ibvi_predictor_free(p);
    return worst_ve;
}

START_TEST(test_sigmoid_head)
{
    ibvi_net *net = mlp(4, 6, 1, 2, 1, 3);
    for (int32_t K = 1; K <= 5; K += 4) {
        setup s = {&net, 1, K, 0, 0, 1.0f};
        check_sigmoid(&s, 10 + K);
        s.temperature = 2.5f;
        check_sigmoid(&s, 20 + K);
        s.mean_network = 1;
        check_sigmoid(&s, 30 + K);
    }
    ibvi_net *nets[3] = {mlp(4, 6, 1, 2, 1, 4), mlp(4, 6, 1, 2, 1, 5),
                         mlp(4, 6, 1, 2, 1, 6)};
    setup e = {nets, 3, 5, 0, 0, 1.0f};
    check_sigmoid(&e, 40);
    e.mean_network = 1;
    check_sigmoid(&e, 41);
    ibvi_net *conv = convnet(1, 2, 7);
    setup c = {&conv, 1, 5, 0, 0, 1.0f};
    check_sigmoid(&c, 50);
    c.batch = 4; /* chunks of 4 of the 11 inputs */
    check_sigmoid(&c, 51);
    for (int i = 0; i < 3; i++)
        ibvi_net_free(nets[i]);
    ibvi_net_free(conv);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_regression_head)
{
    ibvi_net *net = mlp(4, 6, 3, 2, 1, 3);
    setup s1 = {&net, 1, 1, 0, 0, 1.0f};
    ck_assert(check_regression(&s1, IBVI_HEAD_REGRESSION, 0.3f, 1) == 0.0);
    setup s5 = {&net, 1, 5, 0, 0, 1.0f};
    ck_assert(check_regression(&s5, IBVI_HEAD_REGRESSION, 0.3f, 2) > 1e-6);
    ck_assert(check_regression(&s5, IBVI_HEAD_REGRESSION, 0.0f, 3) > 1e-6);
    s5.batch = 5; /* 13 inputs in chunks of 5 */
    ck_assert(check_regression(&s5, IBVI_HEAD_REGRESSION, 1.5f, 4) > 1e-6);
    setup mean = {&net, 1, 5, 1, 0, 1.0f};
    ck_assert(check_regression(&mean, IBVI_HEAD_REGRESSION, 0.3f, 5) == 0.0);
    ibvi_net *nets[2] = {mlp(4, 6, 3, 2, 1, 8), mlp(4, 6, 3, 2, 1, 9)};
    setup e = {nets, 2, 5, 0, 3, 1.0f};
    ck_assert(check_regression(&e, IBVI_HEAD_REGRESSION, 0.2f, 6) > 1e-6);
    /* mean-network ensemble: the spread of the members */
    setup em = {nets, 2, 5, 1, 0, 1.0f};
    ck_assert(check_regression(&em, IBVI_HEAD_REGRESSION, 0.2f, 7) > 1e-6);
    ibvi_net *conv = convnet(2, 2, 7);
    setup c = {&conv, 1, 5, 0, 0, 1.0f};
    ck_assert(check_regression(&c, IBVI_HEAD_REGRESSION, 0.1f, 8) > 1e-6);
    /* A deterministic network: one block stands for the K equal samples. */
    ibvi_net *det = mlp(4, 6, 3, 0, 0, 10);
    setup d = {&det, 1, 5, 0, 0, 1.0f};
    ck_assert(check_regression(&d, IBVI_HEAD_REGRESSION, 0.1f, 9) == 0.0);
    ibvi_net *dets[2] = {det, mlp(4, 6, 3, 0, 0, 11)};
    setup de = {dets, 2, 3, 0, 0, 1.0f};
    ck_assert(check_regression(&de, IBVI_HEAD_REGRESSION, 0.1f, 10) > 1e-6);
    ibvi_net_free(dets[1]);
    ibvi_net_free(det);
    ibvi_net_free(conv);
    ibvi_net_free(nets[0]);
    ibvi_net_free(nets[1]);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_heteroscedastic_head)
{
    ibvi_net *net = mlp(4, 6, 4, 2, 1, 3);
    setup s1 = {&net, 1, 1, 0, 0, 1.0f};
    check_regression(&s1, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 1);
    setup s5 = {&net, 1, 5, 0, 0, 1.0f};
    ck_assert(check_regression(&s5, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 2) > 1e-6);
    s5.batch = 3;
    ck_assert(check_regression(&s5, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 3) > 1e-6);
    setup mean = {&net, 1, 5, 1, 0, 1.0f};
    check_regression(&mean, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 4);
    ibvi_net *nets[3] = {mlp(4, 6, 4, 2, 1, 5), mlp(4, 6, 4, 2, 1, 6),
                         mlp(4, 6, 4, 2, 1, 7)};
    setup e = {nets, 3, 2, 0, 0, 1.0f};
    ck_assert(check_regression(&e, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 5) > 1e-6);
    ibvi_net *conv = convnet(2, 1, 8);
    setup c = {&conv, 1, 5, 0, 4, 1.0f};
    ck_assert(check_regression(&c, IBVI_HEAD_HETEROSCEDASTIC, 0.0f, 6) > 1e-6);
    for (int i = 0; i < 3; i++)
        ibvi_net_free(nets[i]);
    ibvi_net_free(conv);
    ibvi_net_free(net);
}
END_TEST

/* The log-variances are clamped as the loss clamps them: a bias of +-30 on
 * them gives exactly exp(+-20). */
START_TEST(test_heteroscedastic_clamp)
{
    ibvi_net *net = mlp(3, 5, 2, 0, 0, 4);
    ibvi_layer *last = tu_layer(net, 2);
    int64_t P;
    float *theta = tu_get_mean(last, &P);
    ibvi_predictor *p = NULL;
    CK_OK(ibvi_predictor_create(&p, net, 2, 1));
    set_head(p, IBVI_HEAD_HETEROSCEDASTIC, 0.0f);
    float *x = inputs(net, 4, 2);
    const float bias[2] = {30.0f, -30.0f};
    for (int b = 0; b < 2; b++) {
        /* zero the log-variance's weights, set its bias */
        for (int32_t i = 0; i < 5; i++)
            theta[5 + i] = 0.0f;
        theta[P - 1] = bias[b];
        CK_OK(ibvi_layer_set_mean(last, theta, P));
        float va[4];
        CK_OK(ibvi_predictor_run_regression(p, x, 4, NULL, NULL, va, NULL));
        const float want = (float)exp(clamp_log_var(bias[b]));
        for (int i = 0; i < 4; i++)
            ck_assert_msg(fabsf(va[i] - want) <= 1e-6f * want,
                          "var_aleatoric %g, expected %g", (double)va[i],
                          (double)want);
    }
    free(theta);
    free(x);
    ibvi_predictor_free(p);
    ibvi_net_free(net);
}
END_TEST

/* Chunks of every size give what one batch gives (to rounding: the
 * predictor's path may change with the chunk's rows). */
START_TEST(test_chunks_equal_one_batch)
{
    ibvi_net *net = mlp(4, 8, 4, 3, 2, 12);
    const int64_t n = 23;
    float *x = inputs(net, n, 3);
    const int32_t kinds[3] = {IBVI_HEAD_REGRESSION, IBVI_HEAD_HETEROSCEDASTIC,
                              IBVI_HEAD_SOFTMAX};
    for (int h = 0; h < 3; h++) {
        float ref[23 * 4], ref_v[23 * 4], ref_s[6 * 23 * 4];
        ibvi_predictor *p = NULL;
        CK_OK(ibvi_predictor_create(&p, net, 6, 9));
        set_head(p, kinds[h], 0.5f);
        const int32_t D = ibvi_predictor_output_dim(p);
        if (kinds[h] == IBVI_HEAD_SOFTMAX)
            CK_OK(ibvi_predictor_run(p, x, n, ref, ref_v, NULL, NULL));
        else
            CK_OK(ibvi_predictor_run_regression(p, x, n, ref, ref_v, NULL,
                                                ref_s));
        const int64_t batches[3] = {1, 4, 22};
        for (int b = 0; b < 3; b++) {
            float got[23 * 4], got_v[23 * 4], got_s[6 * 23 * 4];
            CK_OK(ibvi_predictor_set_batch_size(p, batches[b]));
            if (kinds[h] == IBVI_HEAD_SOFTMAX)
                CK_OK(ibvi_predictor_run(p, x, n, got, got_v, NULL, NULL));
            else
                CK_OK(ibvi_predictor_run_regression(p, x, n, got, got_v, NULL,
                                                    got_s));
            for (int64_t i = 0; i < n * D; i++)
                ck_assert(fabsf(got[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i])));
            for (int64_t i = 0; i < n * (kinds[h] == IBVI_HEAD_SOFTMAX ? 1 : D);
                 i++)
                ck_assert(fabsf(got_v[i] - ref_v[i]) <=
                          1e-5f * (1 + fabsf(ref_v[i])));
            if (kinds[h] != IBVI_HEAD_SOFTMAX)
                for (int64_t i = 0; i < 6 * n * D; i++)
                    ck_assert(fabsf(got_s[i] - ref_s[i]) <=
                              1e-5f * (1 + fabsf(ref_s[i])));
        }
        ibvi_predictor_free(p);
    }
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* The softmax head is the default, and switching to other heads and back
 * gives bitwise the outputs of a predictor that never switched. */
START_TEST(test_softmax_head_unchanged)
{
    ibvi_net *net = mlp(5, 7, 4, 2, 1, 21);
    const int64_t n = 9;
    float *x = inputs(net, n, 4);
    ibvi_predictor *fresh = NULL, *p = NULL;
    CK_OK(ibvi_predictor_create(&fresh, net, 5, 3));
    CK_OK(ibvi_predictor_create(&p, net, 5, 3));
    ck_assert_int_eq(ibvi_predictor_head(fresh), IBVI_HEAD_SOFTMAX);
    ck_assert_int_eq(ibvi_predictor_output_dim(fresh), 4);
    float a[9 * 4], ae[9], aee[9], am[9], b[9 * 4], be[9], bee[9], bm[9];
    CK_OK(ibvi_predictor_run(fresh, x, n, a, ae, aee, am));
    set_head(p, IBVI_HEAD_REGRESSION, 0.5f);
    CK_OK(ibvi_predictor_run_regression(p, x, n, b, NULL, NULL, NULL));
    set_head(p, IBVI_HEAD_HETEROSCEDASTIC, 0.0f);
    CK_OK(ibvi_predictor_run_regression(p, x, n, b, NULL, NULL, NULL));
    set_head(p, IBVI_HEAD_SOFTMAX, 0.0f);
    CK_OK(ibvi_predictor_run(p, x, n, b, be, bee, bm));
    ck_assert(memcmp(a, b, sizeof a) == 0);
    ck_assert(memcmp(ae, be, sizeof ae) == 0);
    ck_assert(memcmp(aee, bee, sizeof aee) == 0);
    ck_assert(memcmp(am, bm, sizeof am) == 0);
    free(x);
    ibvi_predictor_free(fresh);
    ibvi_predictor_free(p);
    ibvi_net_free(net);
}
END_TEST

/* ---- rejected calls change nothing ---------------------------------------- */

typedef struct snapshot {
    float out[9 * 4], v[9 * 4];
    int32_t head, dim;
} snapshot;

static void take(ibvi_predictor *p, const float *x, snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->head = ibvi_predictor_head(p);
    s->dim = ibvi_predictor_output_dim(p);
    if (s->head == IBVI_HEAD_SOFTMAX || s->head == IBVI_HEAD_SIGMOID)
        CK_OK(ibvi_predictor_run(p, x, 9, s->out, s->v, NULL, NULL));
    else
        CK_OK(ibvi_predictor_run_regression(p, x, 9, s->out, NULL, s->v,
                                            NULL));
}

static void unchanged(ibvi_predictor *p, const float *x, const snapshot *was)
{
    snapshot now;
    take(p, x, &now);
    ck_assert_int_eq(now.head, was->head);
    ck_assert_int_eq(now.dim, was->dim);
    ck_assert_msg(memcmp(&now, was, sizeof now) == 0,
                  "a rejected call changed the predictor's outputs");
}

static void reject(ibvi_predictor *p, const ibvi_head_options *o, int status,
                   const float *x, const snapshot *was)
{
    CK_STATUS(ibvi_predictor_set_head(p, o), status);
    ck_assert_msg(strncmp(ibvi_last_error(), "ibvi_predictor_set_head:", 24) == 0,
                  "message: %s", ibvi_last_error());
    unchanged(p, x, was);
}

START_TEST(test_rejected_calls_change_nothing)
{
    ibvi_net *two = mlp(5, 7, 2, 2, 1, 31), *three = mlp(5, 7, 3, 2, 1, 32);
    ibvi_net *one = mlp(5, 7, 1, 2, 1, 33);
    float *x = inputs(two, 9, 5);
    ibvi_predictor *nets[3];
    CK_OK(ibvi_predictor_create(&nets[0], two, 4, 1));
    CK_OK(ibvi_predictor_create(&nets[1], three, 4, 1));
    CK_OK(ibvi_predictor_create(&nets[2], one, 4, 1));
    /* each predictor in each head it accepts, then every bad call */
    const int32_t heads[4] = {IBVI_HEAD_SOFTMAX, IBVI_HEAD_SIGMOID,
                              IBVI_HEAD_REGRESSION, IBVI_HEAD_HETEROSCEDASTIC};
    for (int which = 0; which < 3; which++) {
        ibvi_predictor *p = nets[which];
        const int32_t outs = which == 0 ? 2 : which == 1 ? 3 : 1;
        for (int h = 0; h < 4; h++) {
            if ((heads[h] == IBVI_HEAD_SIGMOID && outs != 1) ||
                (heads[h] == IBVI_HEAD_HETEROSCEDASTIC && outs % 2))
                continue;
            set_head(p, heads[h], 0.25f);
            snapshot was;
            take(p, x, &was);
            CK_STATUS(ibvi_predictor_set_head(p, NULL), IBVI_ERR_INVALID_ARG);
            unchanged(p, x, &was);
            ibvi_head_options o;
            CK_OK(ibvi_head_options_init(&o, IBVI_HEAD_REGRESSION));
            o.noise_std = 2.0f;
            o.version = 2;
            reject(p, &o, IBVI_ERR_INVALID_ARG, x, &was);
            o.version = 0;
            reject(p, &o, IBVI_ERR_INVALID_ARG, x, &was);
            o.version = IBVI_HEAD_OPTIONS_VERSION;
            o.kind = 4;
            reject(p, &o, IBVI_ERR_INVALID_ARG, x, &was);
            o.kind = -1;
            reject(p, &o, IBVI_ERR_INVALID_ARG, x, &was);
            o.kind = IBVI_HEAD_REGRESSION;
            const float bad_std[4] = {-0.5f, NAN, INFINITY, -INFINITY};
            for (int i = 0; i < 4; i++) {
                o.noise_std = bad_std[i];
                reject(p, &o, IBVI_ERR_INVALID_ARG, x, &was);
            }
            o.noise_std = 2.0f;
            if (outs != 1) {
                o.kind = IBVI_HEAD_SIGMOID;
                reject(p, &o, IBVI_ERR_SHAPE, x, &was);
            }
            if (outs % 2) {
                o.kind = IBVI_HEAD_HETEROSCEDASTIC;
                reject(p, &o, IBVI_ERR_SHAPE, x, &was);
            }
            /* the run that does not fit the head writes nothing */
            float sentinel[9 * 4];
            for (int i = 0; i < 9 * 4; i++)
                sentinel[i] = 12345.0f;
            float out[9 * 4];
            memcpy(out, sentinel, sizeof out);
            if (heads[h] == IBVI_HEAD_SOFTMAX || heads[h] == IBVI_HEAD_SIGMOID) {
                CK_STATUS(ibvi_predictor_run_regression(p, x, 9, out, out, out,
                                                        out), IBVI_ERR_STATE);
                /* a temperature, then a regression head is refused */
                CK_OK(ibvi_predictor_set_temperature(p, 2.0f));
                take(p, x, &was);
                o.kind = IBVI_HEAD_REGRESSION;
                reject(p, &o, IBVI_ERR_STATE, x, &was);
                if (outs % 2 == 0) {
                    o.kind = IBVI_HEAD_HETEROSCEDASTIC;
                    reject(p, &o, IBVI_ERR_STATE, x, &was);
                }
                CK_OK(ibvi_predictor_set_temperature(p, 1.0f));
            } else {
                CK_STATUS(ibvi_predictor_run(p, x, 9, out, out, out, out),
                          IBVI_ERR_STATE);
                CK_STATUS(ibvi_predictor_set_temperature(p, 2.0f),
                          IBVI_ERR_STATE);
                CK_OK(ibvi_predictor_set_temperature(p, 1.0f));
                unchanged(p, x, &was);
            }
            ck_assert(memcmp(out, sentinel, sizeof out) == 0);
            /* bad runs of the right kind */
            if (heads[h] == IBVI_HEAD_REGRESSION ||
                heads[h] == IBVI_HEAD_HETEROSCEDASTIC) {
                float nan_x[9 * 5];
                memcpy(nan_x, x, sizeof nan_x);
                nan_x[11] = NAN;
                CK_STATUS(ibvi_predictor_run_regression(p, nan_x, 9, out, NULL,
                                                        NULL, NULL),
                          IBVI_ERR_NONFINITE);
                CK_STATUS(ibvi_predictor_run_regression(p, x, 0, out, NULL,
                                                        NULL, NULL),
                          IBVI_ERR_INVALID_ARG);
                unchanged(p, x, &was);
            }
        }
    }
    for (int i = 0; i < 3; i++)
        ibvi_predictor_free(nets[i]);
    free(x);
    ibvi_net_free(one);
    ibvi_net_free(two);
    ibvi_net_free(three);
}
END_TEST

START_TEST(test_head_options_init)
{
    ibvi_head_options o;
    memset(&o, 0x5a, sizeof o);
    CK_OK(ibvi_head_options_init(&o, IBVI_HEAD_HETEROSCEDASTIC));
    ck_assert_uint_eq(o.version, IBVI_HEAD_OPTIONS_VERSION);
    ck_assert_int_eq(o.kind, IBVI_HEAD_HETEROSCEDASTIC);
    ck_assert(o.noise_std == 0.0f);
    const ibvi_head_options before = o;
    CK_STATUS(ibvi_head_options_init(&o, 7), IBVI_ERR_INVALID_ARG);
    ck_assert(memcmp(&o, &before, sizeof o) == 0);
    CK_STATUS(ibvi_head_options_init(NULL, 0), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_predictor_head(NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_predictor_output_dim(NULL), IBVI_ERR_INVALID_ARG);
}
END_TEST

/* ---- the Gaussian NLL ------------------------------------------------------ */

/* outputs: 2 rows of [m1 m2 s1 s2]; targets 1 row (rows = 2 samples). */
START_TEST(test_gaussian_nll_values)
{
    const float f[8] = {0.5f, -1.0f, 0.0f, 1.0f,   /* sample 1 */
                        2.0f, 0.0f, -2.0f, 0.5f};  /* sample 2 */
    const float t[2] = {1.0f, 1.0f};
    float loss, g[8], loss2, g2[8];
    CK_OK(ibvi_loss_gaussian_nll(f, 2, 4, t, 1, &loss, g));
    const double l2pi = log(2.0 * 3.14159265358979323846);
    /* by hand: per term 0.5 (log 2 pi + s + (t - m)^2 e^-s) */
    const double terms[4] = {
        0.5 * (l2pi + 0.0 + 0.25),                 /* m .5, s 0  */
        0.5 * (l2pi + 1.0 + 4.0 * exp(-1.0)),      /* m -1, s 1  */
        0.5 * (l2pi - 2.0 + 1.0 * exp(2.0)),       /* m 2, s -2  */
        0.5 * (l2pi + 0.5 + 1.0 * exp(-0.5)),      /* m 0, s .5  */
    };
    const double want = (terms[0] + terms[1] + terms[2] + terms[3]) / 2.0;
    ck_assert_msg(fabs(loss - want) <= 1e-6 * want, "loss %.9g, want %.9g",
                  (double)loss, want);
    /* by hand: dm = -(t - m) e^-s / rows, ds = 0.5 (1 - (t-m)^2 e^-s) / rows */
    const double want_g[8] = {-0.5 / 2, -2.0 * exp(-1.0) / 2,
                              0.5 * (1 - 0.25) / 2,
                              0.5 * (1 - 4.0 * exp(-1.0)) / 2,
                              1.0 * exp(2.0) / 2, -1.0 * exp(-0.5) / 2,
                              0.5 * (1 - exp(2.0)) / 2,
                              0.5 * (1 - exp(-0.5)) / 2};
    close_to("gaussian nll grad", g, want_g, 8, 1e-6);
    /* the same through ibvi_loss, and without grad */
    CK_OK(ibvi_loss(IBVI_LOSS_GAUSSIAN_NLL, f, 2, 4, NULL, t, 1, &loss2, g2));
    ck_assert(loss2 == loss && memcmp(g, g2, sizeof g) == 0);
    CK_OK(ibvi_loss_gaussian_nll(f, 2, 4, t, 1, &loss2, NULL));
    ck_assert(loss2 == loss);
}
END_TEST

START_TEST(test_gaussian_nll_gradient)
{
    tu_rng rng;
    tu_rng_seed(&rng, 77);
    enum { ROWS = 6, N = 3, D = 2, C = 2 * D };
    float f[ROWS * C], t[N * D], g[ROWS * C], loss;
    tu_fill_normal_f(&rng, f, ROWS * C, 1.0);
    tu_fill_normal_f(&rng, t, N * D, 1.0);
    CK_OK(ibvi_loss_gaussian_nll(f, ROWS, C, t, N, &loss, g));
    for (int i = 0; i < ROWS * C; i++) {
        const float keep = f[i], h = 1e-2f;
        float up, down;
        f[i] = keep + h;
        CK_OK(ibvi_loss_gaussian_nll(f, ROWS, C, t, N, &up, NULL));
        f[i] = keep - h;
        CK_OK(ibvi_loss_gaussian_nll(f, ROWS, C, t, N, &down, NULL));
        f[i] = keep;
        const double fd = ((double)up - down) / (2.0 * h);
        ck_assert_msg(fabs(fd - g[i]) <= 2e-3 * (1.0 + fabs(fd)),
                      "grad[%d] = %g, finite difference %g", i, (double)g[i],
                      fd);
    }
}
END_TEST

START_TEST(test_gaussian_nll_clamp)
{
    const float t[1] = {1.0f};
    float edge[2] = {0.0f, IBVI_LOG_VAR_MAX}, far[2] = {0.0f, 25.0f};
    float le, lf, ge[2], gf[2];
    CK_OK(ibvi_loss_gaussian_nll(edge, 1, 2, t, 1, &le, ge));
    CK_OK(ibvi_loss_gaussian_nll(far, 1, 2, t, 1, &lf, gf));
    ck_assert(le == lf); /* flat beyond the range */
    ck_assert(gf[1] == 0.0f);
    ck_assert(ge[1] != 0.0f); /* the range's end is inside */
    ck_assert(fabs(ge[1] - 0.5 * (1.0 - exp(-20.0))) <= 1e-7);
    ck_assert(gf[0] == ge[0]);
    /* far below: the mean's gradient is e^20 times the residual, finite */
    float low[2] = {0.0f, -1e30f}, ll, gl[2];
    CK_OK(ibvi_loss_gaussian_nll(low, 1, 2, t, 1, &ll, gl));
    ck_assert(gl[1] == 0.0f);
    ck_assert(isfinite(gl[0]));
    ck_assert(fabs(gl[0] + exp(20.0)) <= 1e-6 * exp(20.0));
    ck_assert(fabs(ll - 0.5 * (log(2 * 3.14159265358979323846) - 20.0 + exp(20.0))) <=
              1e-6 * exp(20.0));
    /* a target far from the mean at the lowest variance: still finite */
    float big[2] = {-1e4f, -20.0f};
    CK_OK(ibvi_loss_gaussian_nll(big, 1, 2, t, 1, &ll, gl));
    ck_assert(isfinite(ll) && isfinite(gl[0]) && isfinite(gl[1]));
}
END_TEST

/* y = x + noise with std 0.1 for x < 0 and 0.4 for x > 0: the mean
 * predicted variance in each region is within 20% of the true one (within
 * 10% for the seeds 1..5 of the data). The MLP is deterministic: with a
 * variational last layer the head's (1/K) sum_k exp(s_k) also carries the
 * spread of the s_k (for s_k ~ N(mu, v), trained on the expected NLL, it
 * is about e^v times the noise variance), which is the model's
 * predictive, not the data's noise. */
START_TEST(test_gaussian_nll_training)
{
    const int64_t n = 4000, batch = 100;
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    float *x = alloc_f(n), *y = alloc_f(n);
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(2.0 * tu_rng_uniform(&rng) - 1.0);
        const double std = x[i] < 0 ? 0.1 : 0.4;
        y[i] = (float)(x[i] + std * tu_rng_normal(&rng));
    }
    ibvi_net *net = tu_net_new(1, NULL);
    CK_OK(ibvi_net_add_dense(net, 16, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 16, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 9));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.003f));
    float loss = 0.0f;
    for (int epoch = 0; epoch < 300; epoch++)
        for (int64_t b = 0; b < n; b += batch)
            CK_OK(ibvi_train_step(net, opt, x + b, batch, 1,
                                  IBVI_LOSS_GAUSSIAN_NLL, NULL, y + b, &loss));
    ibvi_predictor *p = NULL;
    CK_OK(ibvi_predictor_create(&p, net, 8, 3));
    set_head(p, IBVI_HEAD_HETEROSCEDASTIC, 0.0f);
    enum { GRID = 40 };
    float gx[GRID], mean[GRID], va[GRID];
    const double truth[2] = {0.01, 0.16};
    for (int region = 0; region < 2; region++) {
        for (int i = 0; i < GRID; i++)
            gx[i] = (float)(region == 0 ? -0.9 + 0.6 * i / (GRID - 1)
                                        : 0.3 + 0.6 * i / (GRID - 1));
        CK_OK(ibvi_predictor_run_regression(p, gx, GRID, mean, NULL, va, NULL));
        double v = 0.0, err = 0.0;
        for (int i = 0; i < GRID; i++) {
            v += va[i] / GRID;
            err = fmax(err, fabs(mean[i] - gx[i]));
        }
        double emp = 0.0;
        int64_t count = 0;
        for (int64_t i = 0; i < n; i++)
            if (x[i] >= gx[0] && x[i] <= gx[GRID - 1]) {
                emp += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                count++;
            }
        printf("region %d: mean predicted variance %.4g (true %.4g, the "
               "data's %.4g), mean off by at most %.3g\n", region, v,
               truth[region], emp / (double)count, err);
        ck_assert_msg(fabs(v - truth[region]) <= 0.2 * truth[region],
                      "region %d: mean predicted variance %g, true %g "
                      "(last loss %g)", region, v, truth[region], (double)loss);
        ck_assert_msg(err < 0.15, "region %d: the mean is off by %g", region,
                      err);
    }
    ibvi_predictor_free(p);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(x);
    free(y);
}
END_TEST

/* ibvi_train_step takes the Gaussian NLL: its loss is the loss of the
 * forward it ran (same noise, two samples per target), and bad targets or
 * an odd output count are refused before anything changes. */
START_TEST(test_gaussian_nll_train_step)
{
    ibvi_net *net = mlp(3, 6, 4, 2, 1, 51), *odd = mlp(3, 6, 3, 2, 1, 52);
    ibvi_optimizer *opt = NULL, *opt_odd = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.01f));
    CK_OK(ibvi_optimizer_create(&opt_odd, odd, IBVI_OPT_SGD, 0.01f));
    const int64_t n = 5;
    float *x = inputs(net, n, 7), t[5 * 2];
    tu_rng rng;
    tu_rng_seed(&rng, 8);
    tu_fill_normal_f(&rng, t, n * 2, 1.0);
    uint64_t pos0, pos1;
    CK_OK(ibvi_net_rng_position(net, &pos0));
    float loss = 0.0f;
    t[3] = NAN;
    CK_STATUS(ibvi_train_step(net, opt, x, n, 2, IBVI_LOSS_GAUSSIAN_NLL, NULL,
                              t, &loss), IBVI_ERR_NONFINITE);
    t[3] = 0.5f;
    CK_STATUS(ibvi_train_step(net, opt, x, n, 2, IBVI_LOSS_GAUSSIAN_NLL, NULL,
                              NULL, &loss), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_train_step(odd, opt_odd, x, n, 2, IBVI_LOSS_GAUSSIAN_NLL,
                              NULL, t, &loss), IBVI_ERR_SHAPE);
    ck_assert(strncmp(ibvi_last_error(), "ibvi_train_step:", 16) == 0);
    CK_OK(ibvi_net_rng_position(net, &pos1));
    ck_assert(pos0 == pos1);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt_odd), 0);
    /* the step's loss is the loss of its forward pass: the same forward
     * (the step's noise) on a fresh network with the same seed, whose
     * parameters are those before the step */
    float *theta0 = tu_get_mean(tu_layer(net, 2), NULL);
    CK_OK(ibvi_train_step(net, opt, x, n, 2, IBVI_LOSS_GAUSSIAN_NLL, NULL, t,
                          &loss));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 1);
    int64_t P;
    float *theta1 = tu_get_mean(tu_layer(net, 2), &P);
    ck_assert(memcmp(theta0, theta1, sizeof(float) * (size_t)P) != 0);
    const int32_t ns = ibvi_net_noise_size(net);
    float *z = alloc_f(2 * ns), out[2 * 5 * 4], again;
    CK_OK(ibvi_net_last_noise(net, z, 2 * ns));
    ibvi_net *fresh = mlp(3, 6, 4, 2, 1, 51);
    CK_OK(ibvi_net_forward_noise(fresh, x, n, 2, z, 2 * ns, out));
    CK_OK(ibvi_loss_gaussian_nll(out, 2 * n, 4, t, n, &again, NULL));
    ck_assert_msg(fabsf(again - loss) <= 1e-6f * fabsf(loss),
                  "train_step loss %.9g, forward + loss %.9g", (double)loss,
                  (double)again);
    free(theta0);
    free(theta1);
    free(z);
    free(x);
    ibvi_net_free(fresh);
    ibvi_optimizer_free(opt);
    ibvi_optimizer_free(opt_odd);
    ibvi_net_free(net);
    ibvi_net_free(odd);
}
END_TEST

/* ---- ibvi_fit_noise_std ---------------------------------------------------- */

static double noise_nll(const float *m, const float *v, const float *t,
                        int64_t count, double sigma)
{
    double total = 0.0;
    for (int64_t i = 0; i < count; i++) {
        const double s = (v ? v[i] : 0.0) + sigma * sigma;
        const double d = (double)t[i] - m[i];
        total += log(s) + d * d / s;
    }
    return total;
}

/* d NLL / d sigma */
static double noise_slope(const float *m, const float *v, const float *t,
                          int64_t count, double sigma)
{
    double total = 0.0;
    for (int64_t i = 0; i < count; i++) {
        const double s = (v ? v[i] : 0.0) + sigma * sigma;
        const double d = (double)t[i] - m[i];
        total += 2.0 * sigma * (1.0 / s - d * d / (s * s));
    }
    return total;
}

START_TEST(test_fit_noise_std_closed_form)
{
    enum { N = 50, D = 3 };
    tu_rng rng;
    tu_rng_seed(&rng, 8);
    float m[N * D], t[N * D], zero[N * D];
    tu_fill_normal_f(&rng, m, N * D, 1.0);
    tu_fill_normal_f(&rng, t, N * D, 2.0);
    memset(zero, 0, sizeof zero);
    double sum = 0.0;
    for (int i = 0; i < N * D; i++)
        sum += ((double)t[i] - m[i]) * ((double)t[i] - m[i]);
    const float want = (float)sqrt(sum / (N * D));
    float sigma = -1.0f;
    CK_OK(ibvi_fit_noise_std(m, NULL, t, N, D, &sigma));
    ck_assert_msg(sigma == want, "sigma %.9g, expected %.9g", (double)sigma,
                  (double)want);
    sigma = -1.0f;
    CK_OK(ibvi_fit_noise_std(m, zero, t, N, D, &sigma));
    ck_assert(sigma == want);
    /* perfect predictions: 0 */
    CK_OK(ibvi_fit_noise_std(m, NULL, m, N, D, &sigma));
    ck_assert(sigma == 0.0f);
}
END_TEST

START_TEST(test_fit_noise_std_maximises_likelihood)
{
    enum { N = 200 };
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    float m[N], v[N], t[N];
    for (int i = 0; i < N; i++) {
        m[i] = (float)tu_rng_normal(&rng);
        v[i] = (float)(0.05 + 0.3 * tu_rng_uniform(&rng));
        /* residual std 0.7 on top of the epistemic part */
        t[i] = (float)(m[i] + sqrt(v[i] + 0.49) * tu_rng_normal(&rng));
    }
    float sigma = -1.0f;
    CK_OK(ibvi_fit_noise_std(m, v, t, N, 1, &sigma));
    ck_assert_msg(sigma > 0.5f && sigma < 0.9f, "sigma %g", (double)sigma);
    ck_assert(noise_slope(m, v, t, N, sigma * (1.0 - 1e-4)) < 0.0);
    ck_assert(noise_slope(m, v, t, N, sigma * (1.0 + 1e-4)) > 0.0);
    const double best = noise_nll(m, v, t, N, sigma);
    for (int g = 0; g <= 400; g++) {
        const double other = 0.01 * g;
        ck_assert_msg(noise_nll(m, v, t, N, other) >= best - 1e-9 * fabs(best),
                      "sigma %g beats the fit %g", other, (double)sigma);
    }
    /* the epistemic part covers every residual: sigma = 0 */
    for (int i = 0; i < N; i++)
        v[i] = (float)(((double)t[i] - m[i]) * ((double)t[i] - m[i]) + 0.01);
    CK_OK(ibvi_fit_noise_std(m, v, t, N, 1, &sigma));
    ck_assert(sigma == 0.0f);
    ck_assert(noise_slope(m, v, t, N, 1e-3) > 0.0);
}
END_TEST

/* The head and the fit together: a regression head with the fitted sigma
 * predicts var_aleatoric = sigma^2. */
START_TEST(test_fit_then_predict)
{
    ibvi_net *net = mlp(3, 6, 2, 2, 1, 41);
    const int64_t n = 30;
    float *x = inputs(net, n, 6);
    ibvi_predictor *p = NULL;
    CK_OK(ibvi_predictor_create(&p, net, 6, 2));
    set_head(p, IBVI_HEAD_REGRESSION, 0.0f);
    float mean[60], ve[60], t[60], va[60];
    CK_OK(ibvi_predictor_run_regression(p, x, n, mean, ve, NULL, NULL));
    tu_rng rng;
    tu_rng_seed(&rng, 3);
    for (int i = 0; i < 60; i++)
        t[i] = mean[i] + (float)(0.8 * tu_rng_normal(&rng));
    float sigma;
    CK_OK(ibvi_fit_noise_std(mean, ve, t, n, 2, &sigma));
    set_head(p, IBVI_HEAD_REGRESSION, sigma);
    CK_OK(ibvi_predictor_run_regression(p, x, n, NULL, NULL, va, NULL));
    for (int i = 0; i < 60; i++)
        ck_assert(va[i] == (float)((double)sigma * sigma));
    free(x);
    ibvi_predictor_free(p);
    ibvi_net_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("heads");
    TCase *tc = tu_tcase("heads");
    tcase_add_test(tc, test_sigmoid_head);
    tcase_add_test(tc, test_regression_head);
    tcase_add_test(tc, test_heteroscedastic_head);
    tcase_add_test(tc, test_heteroscedastic_clamp);
    tcase_add_test(tc, test_chunks_equal_one_batch);
    tcase_add_test(tc, test_softmax_head_unchanged);
    tcase_add_test(tc, test_rejected_calls_change_nothing);
    tcase_add_test(tc, test_head_options_init);
    tcase_add_test(tc, test_gaussian_nll_values);
    tcase_add_test(tc, test_gaussian_nll_gradient);
    tcase_add_test(tc, test_gaussian_nll_clamp);
    tcase_add_test(tc, test_gaussian_nll_training);
    tcase_add_test(tc, test_gaussian_nll_train_step);
    tcase_add_test(tc, test_fit_noise_std_closed_form);
    tcase_add_test(tc, test_fit_noise_std_maximises_likelihood);
    tcase_add_test(tc, test_fit_then_predict);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * libibvi tests - mean-field VI: the diagonal covariance family
 * (theta = mu + softplus(rho) .* z), its gradients, the closed-form KL
 * against the parameterization's prior and its gradient as the optimizer
 * applies it, sampling statistics, ELBO training, save/load and the
 * predictor (docs/concepts.md, "Mean-field VI").
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
    float *p = calloc((size_t)n, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static double softplus(double x) { return x > 30 ? x : log1p(exp(x)); }

static void set_diagonal(ibvi_net *net, int32_t layer, float init_sigma)
{
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    o.init_sigma = init_sigma;
    CK_OK(ibvi_net_set_covariance(net, layer, &o));
}

/* Every layer with parameters of net diagonal. */
static void all_diagonal(ibvi_net *net)
{
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++)
        if (ibvi_layer_param_count(tu_layer(net, i)) > 0 &&
            ibvi_layer_get_kind(tu_layer(net, i)) != IBVI_LAYER_RESIDUAL)
            set_diagonal(net, i, 0.0f);
}

/* Sets every diagonal layer's rho to softplus^-1 of sigma in [0.05, 0.3)
 * times its prior std: large enough for finite differences. */
static void moderate_rho(ibvi_net *net, uint64_t seed)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_covariance(l) != IBVI_COVARIANCE_DIAGONAL)
            continue;
        const int64_t P = ibvi_layer_param_count(l);
        float *rho = alloc_f(P);
        for (int64_t p = 0; p < P; p++)
            rho[p] = (float)log(expm1(0.05 + 0.25 * tu_rng_uniform(&rng)));
        CK_OK(ibvi_layer_set_rho(l, rho, P));
        free(rho);
    }
}

/* ---- networks ------------------------------------------------------------- */

static ibvi_net *mlp(int32_t param, uint64_t seed)
{
    ibvi_net *net = tu_net_new(5, NULL);
    CK_OK(ibvi_net_add_dense(net, 6, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    all_diagonal(net);
    CK_OK(ibvi_net_init(net, param, seed));
    return net;
}

static ibvi_net *image_net(int kind, uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 2, 5, 5, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 1, 1, 0));
    if (kind == 1) /* group norm */
        CK_OK(ibvi_net_add_groupnorm(net, 1, 1e-5f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    if (kind == 2) { /* a conv, then a residual with a projection */
        CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 0));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
        CK_OK(ibvi_net_add_residual(net, 1, 1));
    }
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    all_diagonal(net);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

/* ---- finite differences ----------------------------------------------------- */

typedef struct problem {
    ibvi_net *net;
    const float *x, *z;
    const int32_t *labels;
    int64_t n;
    int32_t samples;
} problem;

static double loss_of(const problem *pb, float *grad_out)
{
    const int32_t classes = ibvi_net_output_dim(pb->net);
    const int64_t rows = pb->n * pb->samples;
    float *logits = alloc_f(rows * classes);
    const int64_t zl = (int64_t)pb->samples * ibvi_net_noise_size(pb->net);
    CK_OK(ibvi_net_forward_noise(pb->net, pb->x, pb->n, pb->samples, pb->z,
                                 zl, logits));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(logits, rows, classes, pb->labels, pb->n,
                                 &loss, grad_out));
    free(logits);
    return loss;
}

/* Central differences of the loss in entries of the mean (rho = 0) or rho
 * (rho = 1) of layer `index`, against the backward's gradient. */
static void check_fd(const problem *pb, int32_t index, int rho)
{
    ibvi_layer *l = tu_layer(pb->net, index);
    const int64_t P = ibvi_layer_param_count(l);
    const int32_t classes = ibvi_net_output_dim(pb->net);
    const int64_t rows = pb->n * pb->samples;
    float *g_out = alloc_f(rows * classes), *grad = alloc_f(P),
          *v = alloc_f(P);
    loss_of(pb, g_out);
    CK_OK(ibvi_net_backward(pb->net, g_out, rows, classes));
    CK_OK(rho ? ibvi_layer_get_grad_rho(l, grad, P)
              : ibvi_layer_get_grad_mean(l, grad, P));
    CK_OK(rho ? ibvi_layer_get_rho(l, v, P) : ibvi_layer_get_mean(l, v, P));
    double gmax = 0.0;
    for (int64_t p = 0; p < P; p++)
        gmax = fabs(grad[p]) > gmax ? fabs(grad[p]) : gmax;
    ck_assert_msg(gmax > 1e-6, "layer %d %s: gradient all zero", index,
                  rho ? "rho" : "mean");
    const int64_t step = P > 40 ? P / 40 : 1;
    for (int64_t p = 0; p < P; p += step) {
        const float keep = v[p], h = 1e-2f * (fabsf(keep) > 1.0f ? fabsf(keep)
                                                                 : 1.0f);
        double f[2];
        for (int s = 0; s < 2; s++) {
            v[p] = keep + (s ? -h : h);
            CK_OK(rho ? ibvi_layer_set_rho(l, v, P)
                      : ibvi_layer_set_mean(l, v, P));
            f[s] = loss_of(pb, NULL);
        }
        v[p] = keep;
        CK_OK(rho ? ibvi_layer_set_rho(l, v, P) : ibvi_layer_set_mean(l, v, P));
        const double fd = (f[0] - f[1]) / (2.0 * ((double)(keep + h) - keep));
        ck_assert_msg(fabs(fd - grad[p]) <= 2e-3 * gmax + 0.03 * fabs(fd),
                      "layer %d %s[%lld]: backward %g, finite difference %g",
                      index, rho ? "rho" : "mean", (long long)p,
                      (double)grad[p], fd);
    }
    free(g_out);
    free(grad);
    free(v);
}

static void check_net_grads(ibvi_net *net, int32_t samples, uint64_t seed)
{
    moderate_rho(net, seed);
    const int64_t n = 4;
    const int32_t in = ibvi_net_input_dim(net), ns = ibvi_net_noise_size(net);
    const int32_t classes = ibvi_net_output_dim(net);
    tu_rng rng;
    tu_rng_seed(&rng, seed + 1);
    float *x = alloc_f(n * in), *z = alloc_f((int64_t)samples * ns);
    int32_t labels[4];
    tu_fill_normal_f(&rng, x, n * in, 1.0);
    tu_fill_normal_f(&rng, z, (int64_t)samples * ns, 1.0);
    for (int i = 0; i < 4; i++)
        labels[i] = tu_rng_int(&rng, classes);
    const problem pb = {net, x, z, labels, n, samples};
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_param_count(l) == 0)
            continue;
        check_fd(&pb, i, 0);
        if (ibvi_layer_covariance(l) == IBVI_COVARIANCE_DIAGONAL)
            check_fd(&pb, i, 1);
    }
    free(x);
    free(z);
}

START_TEST(test_grad_dense)
{
    for (int32_t M = 1; M <= 3; M += 2) {
        ibvi_net *net = mlp(IBVI_PARAM_MUP, 3);
        ck_assert_int_eq(ibvi_net_noise_size(net), 6 * 6 + 4 * 7 + 3 * 5);
        check_net_grads(net, M, 10 + M);
        ibvi_net_free(net);
    }
}
END_TEST

START_TEST(test_grad_conv_groupnorm_residual)
{
    for (int kind = 0; kind < 3; kind++)
        for (int32_t M = 1; M <= 3; M += 2) {
            ibvi_net *net = image_net(kind, 4 + kind);
            check_net_grads(net, M, 20 + 3 * kind + M);
            ibvi_net_free(net);
        }
}
END_TEST

/* ---- the KL ------------------------------------------------------------------ */

/* The KL computed here, in double, from the getters: per layer, weights
 * with ibvi_layer_init_std's weight std and prior mean 0, the rest with
 * the bias std (1 for a group norm's gain and shift, whose prior means are
 * 1 and 0). Dense and conv2d: [W; b]; group norm: [gamma; beta]. */
static double reference_kl(ibvi_net *net)
{
    double total = 0.0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_covariance(l) != IBVI_COVARIANCE_DIAGONAL)
            continue;
        const int64_t P = ibvi_layer_param_count(l);
        float ws, bs, *mu = alloc_f(P), *rho = alloc_f(P);
        CK_OK(ibvi_layer_init_std(l, &ws, &bs));
        CK_OK(ibvi_layer_get_mean(l, mu, P));
        CK_OK(ibvi_layer_get_rho(l, rho, P));
        const int gn = ibvi_layer_get_kind(l) == IBVI_LAYER_GROUPNORM;
        int32_t out_c, h, w;
        CK_OK(ibvi_layer_output_shape(l, &out_c, &h, &w));
        const int64_t weights = gn ? 0 : P - out_c;
        for (int64_t p = 0; p < P; p++) {
            double sp = p < weights ? ws : bs, m0 = 0.0;
            if (gn) {
                sp = 1.0;
                m0 = p < out_c ? 1.0 : 0.0;
            }
            const double s = softplus(rho[p]), d = mu[p] - m0;
            total += 0.5 * ((s * s + d * d) / (sp * sp) - 1.0 -
                            log(s * s / (sp * sp)));
        }
        free(mu);
        free(rho);
    }
    return total;
}

START_TEST(test_kl_hand_computed)
{
    /* 2 -> 1 under SP: weights N(0, 1/2), bias N(0, 1). */
    ibvi_net *net = tu_net_new(2, NULL);
    CK_OK(ibvi_net_add_dense(net, 1, 0));
    set_diagonal(net, 0, 0.0f);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    ibvi_layer *l = tu_layer(net, 0);
    const float mu[3] = {0.5f, -1.0f, 2.0f};
    const float rho[3] = {0.0f, -1.0f, 1.0f};
    CK_OK(ibvi_layer_set_mean(l, mu, 3));
    CK_OK(ibvi_layer_set_rho(l, rho, 3));
    double expect = 0.0;
    const double var[3] = {0.5, 0.5, 1.0};
    for (int p = 0; p < 3; p++) {
        const double s2 = softplus(rho[p]) * softplus(rho[p]);
        expect += 0.5 * ((s2 + (double)mu[p] * mu[p]) / var[p] - 1.0 -
                         log(s2 / var[p]));
    }
    /* the first term: s = log 2, ((0.4805 + 0.25) / 0.5 - 1 - log(0.961)) / 2 */
    double kl = 0.0;
    CK_OK(ibvi_net_kl(net, &kl));
    ck_assert_msg(fabs(kl - expect) <= 1e-6 * expect, "kl %.9g, expected %.9g",
                  kl, expect);
    ck_assert(fabs(expect - 3.75248) < 1e-4); /* computed by hand */
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_kl_mup_prior)
{
    /* Every group's prior: muP input, hidden, output layers and a group
     * norm (its gain's prior mean is 1). */
    ibvi_net *net = mlp(IBVI_PARAM_MUP, 8);
    float ws, bs;
    CK_OK(ibvi_layer_init_std(tu_layer(net, 4), &ws, &bs));
    ck_assert(fabsf(ws - 1.0f / 4.0f) < 1e-7f); /* output: 1 / fan_in */
    double kl;
    moderate_rho(net, 2);
    CK_OK(ibvi_net_kl(net, &kl));
    const double ref = reference_kl(net);
    ck_assert_msg(fabs(kl - ref) <= 1e-6 * fabs(ref), "%.9g vs %.9g", kl,
                  ref);
    /* At init (mu from the prior, sigma = 1e-3 x std) each entry gives
     * about 0.5 (z^2 - 1) - log(1e-3) ~ 6.9. */
    ibvi_net *fresh = mlp(IBVI_PARAM_MUP, 8);
    CK_OK(ibvi_net_kl(fresh, &kl));
    const double per = kl / (double)ibvi_net_noise_size(fresh);
    ck_assert_msg(fabs(per + log(1e-3)) < 0.5, "KL per parameter %g", per);
    ck_assert(fabs(kl - reference_kl(fresh)) <= 1e-6 * kl);
    ibvi_net_free(fresh);
    ibvi_net_free(net);
    net = image_net(1, 6);
    moderate_rho(net, 3);
    CK_OK(ibvi_net_kl(net, &kl));
    ck_assert(fabs(kl - reference_kl(net)) <= 1e-6 * kl);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_kl_monte_carlo)
{
    /* E_q[log q(theta) - log p(theta)] by sampling, against the closed
     * form, with the prior of every group (ibvi_layer_init_std). */
    ibvi_net *net = mlp(IBVI_PARAM_MUP, 9);
    moderate_rho(net, 4);
    double kl;
    CK_OK(ibvi_net_kl(net, &kl));
    tu_rng rng;
    tu_rng_seed(&rng, 77);
    const int draws = 4000;
    double sum = 0.0, sum2 = 0.0;
    for (int t = 0; t < draws; t++) {
        double value = 0.0;
        for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
            ibvi_layer *l = tu_layer(net, i);
            const int64_t P = ibvi_layer_param_count(l);
            if (P == 0)
                continue;
            float ws, bs, mu[64], rho[64];
            CK_OK(ibvi_layer_init_std(l, &ws, &bs));
            CK_OK(ibvi_layer_get_mean(l, mu, P));
            CK_OK(ibvi_layer_get_rho(l, rho, P));
            int32_t out, h, w;
            CK_OK(ibvi_layer_output_shape(l, &out, &h, &w));
            for (int64_t p = 0; p < P; p++) {
                const double s = softplus(rho[p]), e = tu_rng_normal(&rng);
                const double theta = mu[p] + s * e;
                const double sp = p < P - out ? ws : bs;
                value += -0.5 * e * e - log(s) +
                         0.5 * theta * theta / (sp * sp) + log(sp);
            }
        }
        sum += value;
        sum2 += value * value;
    }
    const double mean = sum / draws;
    const double se = sqrt((sum2 / draws - mean * mean) / draws);
    ck_assert_msg(fabs(mean - kl) <= 4.0 * se, "MC %g +- %g, closed form %g",
                  mean, se, kl);
    ibvi_net_free(net);
}
END_TEST

/* dKL/dmu and dKL/drho as a KL-weighted SGD step applies them: the same
 * step with weight w and with 0 from the same state differ by
 * -lr x mult x w x dKL; against finite differences of ibvi_net_kl. */
START_TEST(test_kl_gradient_in_step)
{
    const float lr = 0.5f, weight = 0.01f;
    ibvi_net *nets[2];
    float *after[2][2];
    const int32_t L = 2; /* the hidden dense layer */
    for (int k = 0; k < 2; k++) {
        nets[k] = mlp(IBVI_PARAM_MUP, 12);
        moderate_rho(nets[k], 5);
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_optimizer_create(&opt, nets[k], IBVI_OPT_SGD, lr));
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.0f, 0));
        if (k == 0)
            CK_OK(ibvi_optimizer_set_kl_weight(opt, weight));
        float x[10] = {0.3f, -1.0f, 0.2f, 0.7f, 1.1f, -0.4f, 0.0f, 0.9f,
                       -0.6f, 0.5f};
        int32_t y[2] = {1, 2};
        float loss;
        CK_OK(ibvi_net_set_rng_position(nets[k], 0));
        CK_OK(ibvi_train_step(nets[k], opt, x, 2, 1, IBVI_LOSS_SOFTMAX_XENT,
                              y, NULL, &loss));
        ibvi_layer *l = tu_layer(nets[k], L);
        const int64_t P = ibvi_layer_param_count(l);
        after[k][0] = alloc_f(P);
        after[k][1] = alloc_f(P);
        CK_OK(ibvi_layer_get_mean(l, after[k][0], P));
        CK_OK(ibvi_layer_get_rho(l, after[k][1], P));
        ibvi_optimizer_free(opt);
    }
    /* The KL gradient at the state before the step. */
    ibvi_net *ref = mlp(IBVI_PARAM_MUP, 12);
    moderate_rho(ref, 5);
    ibvi_layer *l = tu_layer(ref, L);
    const int64_t P = ibvi_layer_param_count(l);
    float wm, bm;
    CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_SGD, &wm, &bm));
    for (int part = 0; part < 2; part++) {
        float *v = alloc_f(P);
        CK_OK(part ? ibvi_layer_get_rho(l, v, P) : ibvi_layer_get_mean(l, v, P));
        for (int64_t p = 0; p < P; p += 3) {
            const float keep = v[p], h = 1e-3f;
            double f[2];
            for (int s = 0; s < 2; s++) {
                v[p] = keep + (s ? -h : h);
                CK_OK(part ? ibvi_layer_set_rho(l, v, P)
                           : ibvi_layer_set_mean(l, v, P));
                CK_OK(ibvi_net_kl(ref, &f[s]));
            }
            v[p] = keep;
            CK_OK(part ? ibvi_layer_set_rho(l, v, P)
                       : ibvi_layer_set_mean(l, v, P));
            const double fd = (f[0] - f[1]) /
                              ((double)(keep + h) - (double)(keep - h));
            const double mult = p < P - 4 ? wm : bm;
            const double applied =
                ((double)after[0][part][p] - after[1][part][p]) /
                (-(double)lr * mult * weight);
            ck_assert_msg(fabs(applied - fd) <= 2e-3 * fabs(fd) + 0.05,
                          "%s[%lld]: applied dKL %g, finite difference %g",
                          part ? "rho" : "mean", (long long)p, applied, fd);
        }
        free(v);
    }
    for (int k = 0; k < 2; k++) {
        free(after[k][0]);
        free(after[k][1]);
        ibvi_net_free(nets[k]);
    }
    ibvi_net_free(ref);
}
END_TEST

/* ---- sampling ------------------------------------------------------------------ */

START_TEST(test_sampling_std)
{
    /* 1 -> 3 dense: with x = 0 the outputs are the biases, with x = 1 the
     * weights plus the biases; their empirical std over M samples is
     * softplus(rho) (or the root of the two variances). */
    ibvi_net *net = tu_net_new(1, NULL);
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    set_diagonal(net, 0, 0.0f);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
    ibvi_layer *l = tu_layer(net, 0);
    const float rho[6] = {-2.0f, 0.0f, 1.0f, -1.0f, 0.5f, -3.0f};
    CK_OK(ibvi_layer_set_rho(l, rho, 6));
    const int32_t M = 8000;
    float *out = alloc_f((int64_t)M * 3);
    for (int xi = 0; xi < 2; xi++) {
        const float x = (float)xi;
        CK_OK(ibvi_net_forward(net, &x, 1, M, out));
        for (int j = 0; j < 3; j++) {
            double s = 0.0, s2 = 0.0;
            for (int32_t m = 0; m < M; m++) {
                s += out[m * 3 + j];
                s2 += (double)out[m * 3 + j] * out[m * 3 + j];
            }
            const double mean = s / M, sd = sqrt(s2 / M - mean * mean);
            const double sb = softplus(rho[3 + j]), sw = softplus(rho[j]);
            const double expect = xi ? sqrt(sw * sw + sb * sb) : sb;
            ck_assert_msg(fabs(sd / expect - 1.0) < 0.05,
                          "x = %d, output %d: std %g, expected %g", xi, j, sd,
                          expect);
        }
    }
    free(out);
    ibvi_net_free(net);
}
END_TEST

/* ---- training -------------------------------------------------------------------- */

/* Four Gaussian blobs in 5 dimensions. */
static void blobs(tu_rng *rng, float *x, int32_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        y[i] = tu_rng_int(rng, 3);
        for (int d = 0; d < 5; d++)
            x[i * 5 + d] = (float)(tu_rng_normal(rng) * 0.7 +
                                   (d == y[i] ? 2.0 : 0.0));
    }
}

/* -ELBO / N: the expected loss over the data (S samples) + w KL. */
static double objective(ibvi_net *net, const float *x, const int32_t *y,
                        int64_t n, float weight)
{
    const int32_t S = 16;
    float *logits = alloc_f(n * S * 3);
    CK_OK(ibvi_net_forward(net, x, n, S, logits));
    float loss;
    CK_OK(ibvi_loss_softmax_xent(logits, n * S, 3, y, n, &loss, NULL));
    double kl;
    CK_OK(ibvi_net_kl(net, &kl));
    free(logits);
    return loss + weight * kl;
}

START_TEST(test_training_lowers_elbo)
{
    const int64_t N = 256;
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    float *x = alloc_f(N * 5);
    int32_t *y = calloc((size_t)N, sizeof *y);
    blobs(&rng, x, y, N);
    ibvi_net *net = mlp(IBVI_PARAM_MUP, 21);
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
    const float weight = 1.0f / (float)N;
    CK_OK(ibvi_optimizer_set_kl_weight(opt, weight));
    const double before = objective(net, x, y, N, weight);
    float rho0[36];
    CK_OK(ibvi_layer_get_rho(tu_layer(net, 0), rho0, 36));
    for (int epoch = 0; epoch < 30; epoch++)
        for (int64_t b = 0; b < N; b += 32) {
            float loss;
            CK_OK(ibvi_train_step(net, opt, x + b * 5, 32, 1,
                                  IBVI_LOSS_SOFTMAX_XENT, y + b, NULL, &loss));
        }
    const double after = objective(net, x, y, N, weight);
    ck_assert_msg(after < 0.7 * before, "-ELBO/N %g -> %g", before, after);
    /* The KL pulled the tiny initial sigmas up. */
    float rho1[36];
    CK_OK(ibvi_layer_get_rho(tu_layer(net, 0), rho1, 36));
    double up = 0.0;
    for (int p = 0; p < 36; p++)
        up += rho1[p] - rho0[p];
    ck_assert_msg(up / 36 > 0.5, "mean rho change %g", up / 36);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(x);
    free(y);
}
END_TEST

/* A KL weight changes nothing for IBVI's (low-rank) and deterministic
 * layers: bitwise the same parameters after training. */
START_TEST(test_kl_weight_leaves_ibvi_alone)
{
    uint8_t *bytes[2];
    int64_t len[2];
    const int32_t kinds[2] = {IBVI_OPT_SGD, IBVI_OPT_ADAM};
    for (int o = 0; o < 2; o++) {
        for (int k = 0; k < 2; k++) {
            ibvi_net *net = tu_net_new(5, NULL);
            CK_OK(ibvi_net_add_dense(net, 6, 0));
            CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
            CK_OK(ibvi_net_add_dense(net, 3, 2));
            CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 4));
            ibvi_optimizer *opt = NULL;
            CK_OK(ibvi_optimizer_create(&opt, net, kinds[o], 0.05f));
            if (k)
                CK_OK(ibvi_optimizer_set_kl_weight(opt, 0.5f));
            tu_rng rng;
            tu_rng_seed(&rng, 9);
            float x[40];
            int32_t y[8];
            blobs(&rng, x, y, 8);
            for (int s = 0; s < 20; s++)
                CK_OK(ibvi_train_step(net, opt, x, 8, 1 + s % 2,
                                      IBVI_LOSS_SOFTMAX_XENT, y, NULL, NULL));
            /* The weight itself is saved (OPTM); compare the rest. */
            CK_OK(ibvi_optimizer_set_kl_weight(opt, 0.0f));
            CK_OK(ibvi_net_save_size(net, opt, &len[k]));
            bytes[k] = malloc((size_t)len[k]);
            CK_OK(ibvi_net_save_buffer(net, opt, bytes[k], len[k]));
            ibvi_optimizer_free(opt);
            ibvi_net_free(net);
        }
        ck_assert_int_eq(len[0], len[1]);
        ck_assert(memcmp(bytes[0], bytes[1], (size_t)len[0]) == 0);
        free(bytes[0]);
        free(bytes[1]);
    }
}
END_TEST

/* Mean-field training is bitwise the same for 1 and 2 threads (the
 * element-wise passes split by ibvi__parallel_for, docs/design.md). */
START_TEST(test_threads_bitwise)
{
    uint8_t *bytes[2];
    int64_t len[2];
    for (int k = 0; k < 2; k++) {
        ibvi_net *net = tu_net_new(40, NULL);
        CK_OK(ibvi_net_add_dense(net, 300, 0));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        CK_OK(ibvi_net_add_dense(net, 3, 0));
        all_diagonal(net);
        CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 4));
        CK_OK(ibvi_net_set_threads(net, 1 + k));
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
        CK_OK(ibvi_optimizer_set_kl_weight(opt, 1e-3f));
        tu_rng rng;
        tu_rng_seed(&rng, 9);
        float x[16 * 40];
        int32_t y[16];
        tu_fill_normal_f(&rng, x, 16 * 40, 1.0);
        for (int i = 0; i < 16; i++)
            y[i] = tu_rng_int(&rng, 3);
        for (int s = 0; s < 6; s++)
            CK_OK(ibvi_train_step(net, opt, x, 16, 1 + s % 3,
                                  IBVI_LOSS_SOFTMAX_XENT, y, NULL, NULL));
        CK_OK(ibvi_net_save_size(net, opt, &len[k]));
        bytes[k] = malloc((size_t)len[k]);
        CK_OK(ibvi_net_save_buffer(net, opt, bytes[k], len[k]));
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
    ck_assert_int_eq(len[0], len[1]);
    /* The HEAD's thread preference differs (file offset 40), and so does
     * the checksum: compare the rest. */
    ck_assert(memcmp(bytes[0], bytes[1], 40) == 0);
    ck_assert(memcmp(bytes[0] + 44, bytes[1] + 44, (size_t)len[0] - 48) == 0);
    free(bytes[0]);
    free(bytes[1]);
}
END_TEST

/* ---- save and load ------------------------------------------------------------------- */

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

START_TEST(test_save_load_round_trip)
{
    for (int kind = 0; kind < 2; kind++) {
        ibvi_net *net = kind ? image_net(1, 2) : mlp(IBVI_PARAM_MUP, 2);
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
        CK_OK(ibvi_optimizer_set_kl_weight(opt, 0.01f));
        const int32_t in = ibvi_net_input_dim(net);
        tu_rng rng;
        tu_rng_seed(&rng, 3);
        float *x = alloc_f(4 * in);
        tu_fill_normal_f(&rng, x, 4 * in, 1.0);
        int32_t y[4] = {0, 1, 2, 1};
        for (int s = 0; s < 5; s++)
            CK_OK(ibvi_train_step(net, opt, x, 4, 2, IBVI_LOSS_SOFTMAX_XENT,
                                  y, NULL, NULL));
        int64_t len;
        CK_OK(ibvi_net_save_size(net, opt, &len));
        uint8_t *b = malloc((size_t)len), *again = malloc((size_t)len);
        CK_OK(ibvi_net_save_buffer(net, opt, b, len));
        if (kind == 0) {
            /* The first record (dense) carries the covariance field, and
             * requires it: a library that knows only the 8 bytes of a
             * dense record's fields refuses the file. */
            ck_assert_uint_eq(rd64(b + 96 + 4), 36);
            ck_assert_uint_eq(rd64(b + 96 + 12), 36);
        }
        ibvi_net *back = NULL;
        ibvi_optimizer *opt_back = NULL;
        CK_OK(ibvi_net_load_buffer(&back, &opt_back, b, len, NULL));
        for (int32_t i = 0; i < ibvi_net_layer_count(net); i++)
            ck_assert_int_eq(ibvi_layer_covariance(tu_layer(back, i)),
                             ibvi_layer_covariance(tu_layer(net, i)));
        CK_OK(ibvi_net_save_buffer(back, opt_back, again, len));
        ck_assert(memcmp(b, again, (size_t)len) == 0);
        /* The same next step, bit for bit. */
        CK_OK(ibvi_train_step(net, opt, x, 4, 2, IBVI_LOSS_SOFTMAX_XENT, y,
                              NULL, NULL));
        CK_OK(ibvi_train_step(back, opt_back, x, 4, 2,
                              IBVI_LOSS_SOFTMAX_XENT, y, NULL, NULL));
        CK_OK(ibvi_net_save_buffer(net, opt, b, len));
        CK_OK(ibvi_net_save_buffer(back, opt_back, again, len));
        ck_assert(memcmp(b, again, (size_t)len) == 0);
        double k1, k2;
        CK_OK(ibvi_net_kl(net, &k1));
        CK_OK(ibvi_net_kl(back, &k2));
        ck_assert(k1 == k2);
        free(b);
        free(again);
        free(x);
        ibvi_optimizer_free(opt);
        ibvi_optimizer_free(opt_back);
        ibvi_net_free(net);
        ibvi_net_free(back);
    }
}
END_TEST

/* ---- the predictor ---------------------------------------------------------------------- */

/* The predictor's softmax average against K forwards with its noise
 * (tu_predict_vs_naive), on 7 inputs. */
static void check_predictor(ibvi_net *const *nets, int32_t count, int32_t K,
                            uint64_t seed)
{
    tu_naive_predict r;
    tu_predict_vs_naive(nets, count, K, seed, 7, &r);
    const int64_t n = r.n;
    const int32_t classes = r.classes;
    ck_assert_msg(r.worst <= 1e-5, "predictor vs forward_noise: %g", r.worst);
    /* The K samples differ: not the mean network's probabilities. */
    if (K > 1) {
        ibvi_predictor *mean = NULL;
        float *pm = alloc_f(n * classes);
        CK_OK(ibvi_predictor_create(&mean, nets[0], 1, seed));
        CK_OK(ibvi_predictor_set_mean_network(mean, 1));
        CK_OK(ibvi_predictor_run(mean, r.x, n, pm, NULL, NULL, NULL));
        double diff = 0.0;
        for (int64_t i = 0; i < n * classes; i++)
            diff += fabs(pm[i] - r.probs[i]);
        if (count == 1)
            ck_assert_msg(diff > 1e-4, "samples equal the mean: %g", diff);
        free(pm);
        ibvi_predictor_free(mean);
    }
    tu_naive_predict_free(&r);
}

START_TEST(test_predictor_matches_naive)
{
    ibvi_net *a = mlp(IBVI_PARAM_MUP, 31), *b = mlp(IBVI_PARAM_MUP, 32);
    moderate_rho(a, 1);
    moderate_rho(b, 2);
    check_predictor(&a, 1, 1, 40);
    check_predictor(&a, 1, 6, 41);
    ibvi_net *pair[2] = {a, b};
    check_predictor(pair, 2, 3, 42);
    for (int kind = 0; kind < 3; kind++) {
        ibvi_net *c = image_net(kind, 33 + kind);
        moderate_rho(c, 3);
        check_predictor(&c, 1, 5, 43);
        ibvi_net_free(c);
    }
    /* A mix: a diagonal first layer and a low-rank last one. */
    ibvi_net *mix = tu_net_new(5, NULL);
    CK_OK(ibvi_net_add_dense(mix, 8, 0));
    CK_OK(ibvi_net_add_activation(mix, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(mix, 3, 2));
    set_diagonal(mix, 0, 0.5f);
    CK_OK(ibvi_net_init(mix, IBVI_PARAM_MUP, 7));
    check_predictor(&mix, 1, 4, 44);
    ibvi_net_free(mix);
    ibvi_net_free(a);
    ibvi_net_free(b);
}
END_TEST

/* The flat buffers of distributed.h have no place for rho yet: every one
 * of their functions refuses a mean-field network and changes nothing. */
START_TEST(test_distributed_refuses_mean_field)
{
    ibvi_net *net = mlp(IBVI_PARAM_MUP, 5);
    const int64_t len = ibvi_net_param_count(net);
    ck_assert_int_gt(len, 0);
    float *buf = calloc((size_t)len, sizeof *buf);
    ck_assert_ptr_nonnull(buf);
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    ck_assert_int_eq(ibvi_net_get_params(net, buf, len), IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "mean-field"));
    ck_assert_int_eq(ibvi_net_set_params(net, buf, len), IBVI_ERR_UNSUPPORTED);
    ck_assert_int_eq(ibvi_net_get_grads(net, buf, len), IBVI_ERR_UNSUPPORTED);
    ck_assert_int_eq(ibvi_optimizer_step_grads(opt, buf, len),
                     IBVI_ERR_UNSUPPORTED);
    ck_assert_int_eq(ibvi_net_grads_factored_size(net, 1), IBVI_ERR_UNSUPPORTED);
    ck_assert_int_eq(ibvi_net_get_grads_factored(net, buf, len),
                     IBVI_ERR_UNSUPPORTED);
    ck_assert_int_eq(ibvi_optimizer_step_factored(opt, buf, 1, len),
                     IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(),
                                 "ibvi_optimizer_step_factored"));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    free(buf);
}
END_TEST

static Suite *mfvi_suite(void)
{
    Suite *s = suite_create("mfvi");
    TCase *tc = tu_tcase("gradients");
    tcase_add_test(tc, test_grad_dense);
    tcase_add_test(tc, test_grad_conv_groupnorm_residual);
    suite_add_tcase(s, tc);
    tc = tu_tcase("kl");
    tcase_add_test(tc, test_kl_hand_computed);
    tcase_add_test(tc, test_kl_mup_prior);
    tcase_add_test(tc, test_kl_monte_carlo);
    tcase_add_test(tc, test_kl_gradient_in_step);
    suite_add_tcase(s, tc);
    tc = tu_tcase("sampling_training");
    tcase_add_test(tc, test_sampling_std);
    tcase_add_test(tc, test_training_lowers_elbo);
    tcase_add_test(tc, test_kl_weight_leaves_ibvi_alone);
    tcase_add_test(tc, test_threads_bitwise);
    suite_add_tcase(s, tc);
    tc = tu_tcase("io_predictor");
    tcase_add_test(tc, test_save_load_round_trip);
    tcase_add_test(tc, test_predictor_matches_naive);
    tcase_add_test(tc, test_distributed_refuses_mean_field);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(mfvi_suite()); }

/*
 * linear_regression - the smallest IBVI program: an overparameterised
 * linear model trained by the host's own loop.
 *
 * 20 noisy points of y = sin(3x) are fitted with 40 random Fourier features
 * (plus a bias): more parameters than data. The weights are a rank-8
 * Gaussian started at the prior and trained by plain SGD on the expected
 * squared loss, with no KL term. Afterwards the predictive spread is about
 * 0.004 at the training inputs and 50 times larger away from them (still
 * below the prior's, since 20 points pin down 20 of the 41 directions);
 * the program prints both and the mean fit.
 *
 * Prediction goes through a predictor with the regression head
 * (predictor.h): it draws its SAMPLES weight samples once from its own
 * seed, so predicting never touches the training noise stream, and it
 * reads the network's current weights at each run, so the one predictor
 * serves before and after training. It reports per input the predictive
 * mean, the epistemic variance (the spread of the sampled models) and the
 * aleatoric one (the noise std, fitted here on the training points with
 * ibvi_fit_noise_std; a real program fits it on held-out data).
 *
 * Build: meson compile -C build; run: ./build/examples/linear_regression
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <ibvi/ibvi.h>

#define POINTS 20
#define FEATURES 40
#define SAMPLES 2000

static void check(int status, const char *what)
{
    if (status < 0) {
        fprintf(stderr, "%s failed: %s (%s)\n", what, ibvi_status_string(status),
                ibvi_last_error());
        exit(1);
    }
}

/* Fixed random Fourier features of a scalar input. */
static void features(float x, float *phi)
{
    for (int j = 0; j < FEATURES; j++) {
        float freq = 0.5f + 0.25f * (float)j;
        float phase = 0.7f * (float)j;
        phi[j] = cosf(freq * x + phase) / sqrtf((float)FEATURES / 2.0f);
    }
}

/* The predictive mean at x and the epistemic and aleatoric variances. */
static void predict(ibvi_predictor *pred, float x, float *mean, float *var_e,
                    float *var_a)
{
    float phi[FEATURES];
    features(x, phi);
    check(ibvi_predictor_run_regression(pred, phi, 1, mean, var_e, var_a,
                                        NULL),
          "predict");
}

int main(void)
{
    float x[POINTS * FEATURES], y[POINTS], inputs[POINTS];
    for (int i = 0; i < POINTS; i++) {
        inputs[i] = -1.0f + 2.0f * (float)i / (POINTS - 1);  /* data in [-1, 1] */
        y[i] = sinf(3.0f * inputs[i]) + 0.05f * sinf(17.0f * (float)i);
        features(inputs[i], x + i * FEATURES);
    }

    ibvi_net *net;
    check(ibvi_net_create(&net, FEATURES, NULL), "create");
    check(ibvi_net_add_dense(net, 1, 8), "add_dense");   /* rank-8 Gaussian */
    check(ibvi_net_init(net, IBVI_PARAM_SP, 7), "init");

    ibvi_optimizer *opt;
    check(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.02f), "optimizer");
    check(ibvi_optimizer_set_momentum(opt, 0.9f, 0), "momentum");

    /* SAMPLES weight samples drawn once, with their own seed; the
     * regression head's noise std is 0 until it is fitted below. */
    ibvi_predictor *pred;
    check(ibvi_predictor_create(&pred, net, SAMPLES, 11), "predictor");
    ibvi_head_options head;
    check(ibvi_head_options_init(&head, IBVI_HEAD_REGRESSION), "head options");
    check(ibvi_predictor_set_head(pred, &head), "set_head");

    printf("x      prior std (before training)\n");
    for (float t = -3.0f; t <= 3.01f; t += 1.5f) {
        float m, ve, va;
        predict(pred, t, &m, &ve, &va);
        printf("%+5.1f  %.3f\n", t, sqrt(ve));
    }

    /* The host-written loop: one weight sample per step, minibatches of 5. */
    float loss = 0;
    for (int epoch = 0; epoch < 3000; epoch++)
        for (int b = 0; b < POINTS; b += 5)
            check(ibvi_train_step(net, opt, x + b * FEATURES, 5, 1,
                                  IBVI_LOSS_SQUARED, NULL, y + b, &loss),
                  "train_step");
    printf("\nfinal minibatch expected loss %.2e\n", loss);

    /* The likelihood's noise std: the sigma that makes the training
     * targets most likely under N(mean, var_epistemic + sigma^2). */
    float mean[POINTS], var_e[POINTS];
    check(ibvi_predictor_run_regression(pred, x, POINTS, mean, var_e, NULL,
                                        NULL),
          "predict");
    check(ibvi_fit_noise_std(mean, var_e, y, POINTS, 1, &head.noise_std),
          "fit_noise_std");
    check(ibvi_predictor_set_head(pred, &head), "set_head");
    printf("fitted noise std %.4f\n\n", head.noise_std);

    printf("x      target   mean    epistemic std  predictive std   "
           "(data lies in [-1, 1])\n");
    for (float t = -3.0f; t <= 3.01f; t += 0.5f) {
        float m, ve, va;
        predict(pred, t, &m, &ve, &va);
        printf("%+5.1f  %+6.3f  %+6.3f  %.3f          %.3f%s\n", t,
               sinf(3.0f * t), m, sqrt(ve), sqrt(ve + va),
               fabsf(t) <= 1.0f ? "  <- data" : "");
    }
    ibvi_predictor_free(pred);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return 0;
}

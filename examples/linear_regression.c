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

/* Mean and standard deviation of the model's output at x over SAMPLES
 * weight samples. */
static void predict(ibvi_net *net, float x, float *mean, float *std)
{
    float phi[FEATURES], out[SAMPLES];
    features(x, phi);
    check(ibvi_net_forward(net, phi, 1, SAMPLES, out), "forward");
    double sum = 0, sum2 = 0;
    for (int s = 0; s < SAMPLES; s++) {
        sum += out[s];
        sum2 += (double)out[s] * out[s];
    }
    *mean = (float)(sum / SAMPLES);
    *std = (float)sqrt(fmax(sum2 / SAMPLES - (sum / SAMPLES) * (sum / SAMPLES), 0));
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

    printf("x      prior std (before training)\n");
    for (float t = -3.0f; t <= 3.01f; t += 1.5f) {
        float m, s;
        predict(net, t, &m, &s);
        printf("%+5.1f  %.3f\n", t, s);
    }

    /* The host-written loop: one weight sample per step, minibatches of 5. */
    float loss = 0;
    for (int epoch = 0; epoch < 3000; epoch++)
        for (int b = 0; b < POINTS; b += 5)
            check(ibvi_train_step(net, opt, x + b * FEATURES, 5, 1,
                                  IBVI_LOSS_SQUARED, NULL, y + b, &loss),
                  "train_step");
    printf("\nfinal minibatch expected loss %.2e\n\n", loss);

    printf("x      target   mean     std   (data lies in [-1, 1])\n");
    for (float t = -3.0f; t <= 3.01f; t += 0.5f) {
        float m, s;
        predict(net, t, &m, &s);
        printf("%+5.1f  %+6.3f  %+6.3f  %.3f%s\n", t, sinf(3.0f * t), m, s,
               fabsf(t) <= 1.0f ? "  <- data" : "");
    }
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return 0;
}

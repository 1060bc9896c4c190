/*
 * libibvi tests - the generic walk's provisions for the kinds still to come
 * (layer_ops.h): a layer that reads an EARLIER layer's output (a residual's
 * skip, with its gradient accumulated in the source's grad_skip) and a kind
 * whose scratch is kept from forward to backward (a normalisation's saved
 * statistics). No such kind exists yet, so this suite compiles the library
 * in and gives one layer of a real network a test kind:
 *
 *   y = x * x + (output of layer 0)
 *
 * whose backward reads x from its kept scratch (not from its input). The
 * network's gradients must match central differences of the loss, with
 * weight samples (fixed noise) and without; without the skip's gradient
 * reaching layer 0 they would not.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "network.h"
#include "testutil.h"

enum { SOURCE = 0 };

static int64_t square_scratch(const ibvi_layer *layer, int64_t rows)
{
    return rows * layer->inputs;
}

static void square_forward(const ibvi_layer *layer, const float *theta,
                           const float *in, float *out, int64_t rows,
                           float *scratch)
{
    (void)theta;
    const float *skip = layer->net->layers[SOURCE]->output;
    const int64_t count = rows * layer->outputs;
    memcpy(scratch, in, (size_t)count * sizeof(float));
    for (int64_t i = 0; i < count; i++)
        out[i] = in[i] * in[i] + skip[i];
}

static void square_backward(const ibvi_layer *layer, const float *theta,
                            const float *in, const float *dy, float *dx,
                            float *dtheta, int64_t rows, float *scratch,
                            double *bound)
{
    (void)theta, (void)in, (void)dtheta, (void)bound;
    float *skip_grad = layer->net->layers[SOURCE]->grad_skip;
    const int64_t count = rows * layer->outputs;
    for (int64_t i = 0; i < count; i++) {
        dx[i] = 2.0f * scratch[i] * dy[i];
        skip_grad[i] += dy[i];
    }
}

static const ibvi__layer_ops square_skip_ops = {
    .name = "test square + skip",
    .flags = 0,
    .configure = NULL, /* the layer was configured as an activation */
    .scratch_floats = square_scratch,
    .scratch_kept = 1,
    .forward = square_forward,
    .backward = square_backward,
};

enum { D = 4, H = 5, C = 3, N = 6 };

/* 4 -> dense 5 (rank 1) -> tanh -> square + skip(layer 0) -> dense 3 (rank 2) */
static ibvi_net *build(void)
{
    ibvi_net *net = tu_net_new(D, NULL);
    CK_OK(ibvi_net_add_dense(net, H, 1));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, C, 2));
    net->layers[2]->ops = &square_skip_ops;
    net->layers[SOURCE]->skip_readers = 1;
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 9));
    return net;
}

/* L = sum of w * output over all rows, in double; the forward uses z. */
static double loss(ibvi_net *net, const float *x, int32_t samples,
                   const float *z, const float *w)
{
    const int64_t rows = (int64_t)samples * N;
    float out[2 * N * C];
    if (z)
        CK_OK(ibvi_net_forward_noise(net, x, N, samples, z,
                                     (int64_t)samples * ibvi_net_noise_size(net),
                                     out));
    else
        CK_OK(ibvi_net_forward_mean(net, x, N, out));
    double sum = 0.0;
    for (int64_t i = 0; i < rows * C; i++)
        sum += (double)w[i] * out[i];
    return sum;
}

typedef int (*get_fn)(const ibvi_layer *, float *, int64_t);
typedef int (*set_fn)(ibvi_layer *, const float *, int64_t);

/* Every entry of one parameter array of layer l against central
 * differences; returns the largest relative error. */
static double check_array(ibvi_net *net, ibvi_layer *l, get_fn get,
                          set_fn set, get_fn get_grad, int64_t len,
                          const float *x, int32_t samples, const float *z,
                          const float *w)
{
    float *theta = malloc((size_t)len * sizeof *theta);
    float *grad = malloc((size_t)len * sizeof *grad);
    CK_OK(get(l, theta, len));
    /* The analytic gradient of the unperturbed network. */
    loss(net, x, samples, z, w);
    CK_OK(ibvi_net_backward(net, w, (int64_t)samples * N, C));
    CK_OK(get_grad(l, grad, len));
    double worst = 0.0;
    const float eps = 1e-2f;
    for (int64_t i = 0; i < len; i++) {
        const float keep = theta[i];
        theta[i] = keep + eps;
        CK_OK(set(l, theta, len));
        const double up = loss(net, x, samples, z, w);
        theta[i] = keep - eps;
        CK_OK(set(l, theta, len));
        const double down = loss(net, x, samples, z, w);
        theta[i] = keep;
        CK_OK(set(l, theta, len));
        const double numeric = (up - down) / (2.0 * eps);
        const double err = fabs(numeric - grad[i]) /
                           (fabs(numeric) + fabs(grad[i]) + 1e-2);
        worst = err > worst ? err : worst;
    }
    free(theta);
    free(grad);
    return worst;
}

START_TEST(test_skip_and_kept_scratch_gradients)
{
    ibvi_net *net = build();
    tu_rng rng;
    tu_rng_seed(&rng, 3);
    float x[N * D], w[2 * N * C], z[2 * 3];
    tu_fill_normal_f(&rng, x, N * D, 0.5);
    tu_fill_normal_f(&rng, w, 2 * N * C, 1.0);
    tu_fill_normal_f(&rng, z, 2 * 3, 1.0);
    for (int32_t samples = 1; samples <= 2; samples++) {
        for (int use_z = 0; use_z <= 1; use_z++) {
            if (!use_z && samples > 1)
                continue; /* the mean network has one sample */
            const float *noise = use_z ? z : NULL;
            const int32_t layers[2] = {0, 3};
            for (int k = 0; k < 2; k++) {
                ibvi_layer *l = tu_layer(net, layers[k]);
                const int64_t P = ibvi_layer_param_count(l);
                int32_t R;
                CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
                double err = check_array(net, l, ibvi_layer_get_mean,
                                         ibvi_layer_set_mean,
                                         ibvi_layer_get_grad_mean, P, x,
                                         samples, noise, w);
                ck_assert_msg(err < 2e-2,
                              "layer %d mean gradient: relative error %g "
                              "(samples %d, noise %d)", layers[k], err,
                              samples, use_z);
                if (use_z) {
                    err = check_array(net, l, ibvi_layer_get_factor,
                                      ibvi_layer_set_factor,
                                      ibvi_layer_get_grad_factor, P * R, x,
                                      samples, noise, w);
                    ck_assert_msg(err < 2e-2,
                                  "layer %d factor gradient: relative "
                                  "error %g (samples %d)", layers[k], err,
                                  samples);
                }
            }
        }
    }
    /* The buffers the walk needs for such kinds exist: the source's skip
     * gradient and the kind's own scratch. */
    ck_assert_ptr_nonnull(net->layers[SOURCE]->grad_skip);
    ck_assert_ptr_nonnull(net->layers[2]->scratch);
    ck_assert_ptr_null(net->layers[1]->grad_skip);
    ibvi_net_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("walk");
    TCase *tc = tcase_create("walk");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_skip_and_kept_scratch_gradients);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

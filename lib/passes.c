/*
 * libibvi - forward and backward passes through a network: one walk over
 * the layers, each run through its kind's ops (layer_ops.h) by gaussian.c,
 * which gives it one theta for all rows or one per weight sample.
 *
 * With M weight samples the network processes M * n rows: the input is
 * repeated once per sample (block m = rows m*n .. m*n+n-1), each variational
 * layer applies sample m's weights to block m, and deterministic layers see
 * all blocks as one batch (one GEMM).
 *
 * Every layer keeps its output for the backward, so a layer may read any
 * earlier layer's output (a residual's skip). The backward hands the
 * gradient from layer to layer in two ping-pong buffers; a layer whose
 * output is also read further on (skip_readers > 0) gets the later
 * readers' contributions in its grad_skip, added in when the walk reaches
 * it.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <string.h>

#include "network.h"
#include "parallel.h"


/* total[i] += add[i] over a span: the skip gradients, split across the
 * network's threads (element-wise, so the same for any split). */
typedef struct add_job {
    float *total;
    const float *add;
} add_job;

static void add_span(void *arg, int64_t begin, int64_t end)
{
    const add_job *j = arg;
    float *restrict total = j->total;
    const float *restrict add = j->add;
    for (int64_t k = begin; k < end; k++)
        total[k] += add[k];
}

static const float *layer_input(const ibvi_net *net, int32_t index)
{
    return index == 0 ? net->input : net->layers[index - 1]->output;
}

/* 1 when the weights the last optimizer step drew ahead (network.h) are
 * those of this forward: same samples, same noise, parameters unchanged. */
static int presampled_match(const ibvi_net *net, int32_t samples,
                            const float *noise)
{
    return net->presampled == samples &&
           net->presampled_version == net->param_version &&
           memcmp(noise, net->presample_noise,
                  (size_t)samples * net->noise_size * sizeof(float)) == 0;
}

void ibvi__net_run_forward(ibvi_net *net, int64_t n, int32_t samples,
                           const float *noise, float *out)
{
    const int64_t rows = n * samples;
    if (noise) {
        /* A window of deferred factor steps (deferred.h) gives this
         * forward's low-rank weights when it drew its noise ahead, and is
         * settled otherwise. */
        net->use_window = ibvi__net_window_forward(net, samples, noise);
        /* This forward uses the drawn-ahead weights, or overwrites them. */
        net->use_presampled = presampled_match(net, samples, noise);
        net->presampled = 0;
    }
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        ibvi__layer_forward(l, layer_input(net, i), n, samples,
                            noise ? noise + l->noise_offset : NULL,
                            net->noise_size);
    }
    net->use_presampled = 0;
    net->use_window = 0;
    const ibvi_layer *last = net->layers[net->layer_count - 1];
    if (out && out != last->output)
        memcpy(out, last->output, (size_t)(rows * last->outputs) * sizeof(float));
    net->forward_valid = 1;
    net->forward_mean = noise == NULL;
    net->noise_samples = samples;
    net->noise_is_zero = noise == NULL;
    net->forward_n = n;
    net->forward_samples = samples;
}

/* Shared checks of the forward entry points; grows the workspace and copies
 * x into it (once per sample). */
static int prepare_forward(ibvi_net *net, const char *fn, const float *x,
                           int64_t n, int32_t samples)
{
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, x);
    if (n <= 0 || n > INT64_MAX / IBVI_MAX_SAMPLES / net->max_width)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld, expected a batch of 1 or more rows",
                          fn, (long long)n);
    if (samples < 1 || samples > IBVI_MAX_SAMPLES)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: samples = %d, expected 1..%d", fn, (int)samples,
                          IBVI_MAX_SAMPLES);
    const int64_t count = n * net->input_dim;
    if (!(ibvi__parallel_max_abs(ibvi__threads_in_effect(net->threads), x,
                                 count) <= FLT_MAX))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: x holds NaN or infinity", fn);
    status = ibvi__net_reserve(net, n * samples, samples, fn);
    if (status < 0)
        return status;
    for (int32_t m = 0; m < samples; m++)
        memcpy(net->input + m * count, x, (size_t)count * sizeof(float));
    return IBVI_OK;
}

int ibvi__net_forward_sampled(ibvi_net *net, const char *fn, const float *x,
                              int64_t n, int32_t samples, float *out)
{
    int status = prepare_forward(net, fn, x, n, samples);
    if (status < 0)
        return status;
    ibvi__rng_normal(&net->noise_rng, net->noise,
                     (int64_t)samples * net->noise_size, 1.0f);
    ibvi__net_run_forward(net, n, samples, net->noise, out);
    net->noise_from_rng = 1;
    return IBVI_OK;
}

int ibvi_net_forward(ibvi_net *net, const float *x, int64_t n,
                     int32_t samples, float *out)
{
    static const char fn[] = "ibvi_net_forward";
    if (net)
        IBVI_CHECK_NOT_NULL(fn, out);
    return ibvi__net_forward_sampled(net, fn, x, n, samples, out);
}

int ibvi_net_forward_mean(ibvi_net *net, const float *x, int64_t n, float *out)
{
    static const char fn[] = "ibvi_net_forward_mean";
    if (net)
        IBVI_CHECK_NOT_NULL(fn, out);
    int status = prepare_forward(net, fn, x, n, 1);
    if (status < 0)
        return status;
    ibvi__net_run_forward(net, n, 1, NULL, out);
    net->noise_from_rng = 0;
    return IBVI_OK;
}

int ibvi_net_forward_noise(ibvi_net *net, const float *x, int64_t n,
                           int32_t samples, const float *z, int64_t z_len,
                           float *out)
{
    static const char fn[] = "ibvi_net_forward_noise";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, out);
    const int64_t expected = (int64_t)samples * net->noise_size;
    if (expected > 0)
        IBVI_CHECK_NOT_NULL(fn, z);
    if (samples >= 1 && z_len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: z_len = %lld, expected samples * noise_size = "
                          "%lld", fn, (long long)z_len, (long long)expected);
    if (samples >= 1 && !ibvi__all_finite(z, expected))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: z holds NaN or infinity",
                          fn);
    status = prepare_forward(net, fn, x, n, samples);
    if (status < 0)
        return status;
    if (expected > 0)
        memcpy(net->noise, z, (size_t)expected * sizeof(float));
    ibvi__net_run_forward(net, n, samples, net->noise, out);
    net->noise_from_rng = 0;
    return IBVI_OK;
}

int ibvi_net_last_noise(const ibvi_net *net, float *z, int64_t z_len)
{
    static const char fn[] = "ibvi_net_last_noise";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (z_len != 0)
        IBVI_CHECK_NOT_NULL(fn, z);
    if (net->noise_samples == 0)
        return ibvi__fail(IBVI_ERR_STATE, "%s: no forward pass to report", fn);
    const int64_t expected = (int64_t)net->noise_samples * net->noise_size;
    if (z_len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: z_len = %lld, expected %lld (samples %d x "
                          "noise_size %d)", fn, (long long)z_len,
                          (long long)expected, (int)net->noise_samples,
                          (int)net->noise_size);
    if (net->noise_is_zero)
        memset(z, 0, (size_t)expected * sizeof(float));
    else
        memcpy(z, net->noise, (size_t)expected * sizeof(float));
    return IBVI_OK;
}

int ibvi_net_backward(ibvi_net *net, const float *grad_out, int64_t rows,
                      int32_t cols)
{
    static const char fn[] = "ibvi_net_backward";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, grad_out);
    if (!net->forward_valid)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no forward pass to differentiate (call a "
                          "forward function first)", fn);
    const int64_t expected_rows = net->forward_n * net->forward_samples;
    const int32_t width = net->layers[net->layer_count - 1]->outputs;
    if (rows != expected_rows || cols != width)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: grad_out is %lld x %d, expected %lld x %d "
                          "(rows of the last forward x output_dim)", fn,
                          (long long)rows, (int)cols, (long long)expected_rows,
                          (int)width);
    if (!ibvi__all_finite(grad_out, rows * cols))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: grad_out holds NaN or infinity", fn);

    const int64_t n = net->forward_n;
    const int32_t samples = net->forward_samples;
    /* The factor gradients G^T Z stay factored: keep this forward's Z with
     * the gradients, since the next forward draws new noise. */
    const float *noise = NULL;
    net->grad_samples = 0;
    if (!net->forward_mean) {
        memcpy(net->grad_noise, net->noise,
               (size_t)samples * net->noise_size * sizeof(float));
        noise = net->grad_noise;
        net->grad_samples = samples;
    }
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        if (l->grad_skip)
            memset(l->grad_skip, 0,
                   (size_t)(rows * l->outputs) * sizeof(float));
    }
    float *buffers[2] = {net->grad_a, net->grad_b};
    const float *grad = grad_out;
    for (int32_t i = net->layer_count - 1; i >= 0; i--) {
        ibvi_layer *l = net->layers[i];
        float *grad_input = i > 0 ? buffers[i & 1] : NULL;
        if (l->grad_skip) {
            /* The later readers of this output have added their part: a
             * skip source is never the last layer, so grad is a buffer. */
            add_job j = {(float *)grad, l->grad_skip};
            ibvi__parallel_for(ibvi__threads_in_effect(net->threads),
                               rows * l->outputs, IBVI__PARALLEL_GRAIN_FLOATS,
                               add_span, &j);
        }
        ibvi__layer_backward(l, layer_input(net, i), grad, grad_input, n,
                             samples, noise ? noise + l->noise_offset : NULL,
                             net->noise_size);
        grad = grad_input;
    }
    net->has_gradients = 1;
    return IBVI_OK;
}

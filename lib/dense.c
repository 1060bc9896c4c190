/*
 * libibvi - the dense layer, deterministic or variational low-rank Gaussian
 * (SPEC.md section 2).
 *
 * A variational layer draws theta_m = mu + S z_m once per weight sample m
 * and applies it to that sample's block of n rows: y = x W_m^T + b_m. The
 * gradient at the sampled weights, g_m = dL/dtheta_m, gives
 *     dL/dmu = sum_m g_m,    dL/dS = sum_m g_m z_m^T = G^T Z,
 * with G (samples x P) and Z (samples x R). A deterministic layer (R = 0)
 * runs all samples' rows in one GEMM.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "kernels.h"
#include "network.h"

/* Y (rows x out) = X W^T + b for one weight vector theta = [W; b]. */
void ibvi__affine_forward(const ibvi_layer *layer, const float *theta,
                           const float *input, float *output, int64_t rows)
{
    const int32_t in = layer->inputs, out = layer->outputs;
    const float *bias = theta + (int64_t)out * in;
    for (int64_t r = 0; r < rows; r++)
        memcpy(output + r * out, bias, (size_t)out * sizeof(float));
    ibvi__gemm(layer->net->threads, 0, 1, rows, out, in, 1.0f, input, in,
               theta, in, 1.0f, output, out);
}

void ibvi__dense_sample_weights(const ibvi_layer *layer, const float *z,
                                float *theta)
{
    memcpy(theta, layer->mean, (size_t)layer->params * sizeof(float));
    ibvi__gemv(layer->net->threads, layer->params, layer->rank, 1.0f,
               layer->factor, layer->rank, z, 1.0f, theta);
}

/* g = [dW; db] for one weight vector: dW = dY^T X, db = column sums of dY.
 * When grad_input is not NULL also dX = dY W. */
static void affine_backward(const ibvi_layer *layer, const float *theta,
                            const float *input, const float *grad_output,
                            float *grad_input, float *grad_theta, int64_t rows)
{
    const int32_t in = layer->inputs, out = layer->outputs;
    float *grad_bias = grad_theta + (int64_t)out * in;
    ibvi__gemm(layer->net->threads, 1, 0, out, in, rows, 1.0f, grad_output,
               out, input, in, 0.0f, grad_theta, in);
    memset(grad_bias, 0, (size_t)out * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const float *dy = grad_output + r * out;
        for (int32_t j = 0; j < out; j++)
            grad_bias[j] += dy[j];
    }
    if (grad_input)
        ibvi__gemm(layer->net->threads, 0, 0, rows, in, out, 1.0f,
                   grad_output, out, theta, in, 0.0f, grad_input, in);
}

/* The weights sample m used: the mean for the mean network or R = 0. */
static const float *sample_weights(const ibvi_layer *layer, const float *noise,
                                   int32_t m)
{
    if (layer->rank == 0 || noise == NULL)
        return layer->mean;
    return layer->sampled + (int64_t)m * layer->params;
}

void ibvi__dense_forward(ibvi_layer *layer, const float *input, int64_t n,
                         int32_t samples, const float *noise,
                         int64_t noise_stride)
{
    const int64_t in = layer->inputs, out = layer->outputs;
    if (layer->rank == 0 || noise == NULL) {
        ibvi__affine_forward(layer, layer->mean, input, layer->output, n * samples);
        return;
    }
    for (int32_t m = 0; m < samples; m++) {
        float *theta = layer->sampled + (int64_t)m * layer->params;
        ibvi__dense_sample_weights(layer, noise + m * noise_stride, theta);
        ibvi__affine_forward(layer, theta, input + m * n * in,
                       layer->output + m * n * out, n);
    }
}

void ibvi__dense_backward(ibvi_layer *layer, const float *input,
                          const float *grad_output, float *grad_input,
                          int64_t n, int32_t samples, const float *noise,
                          int64_t noise_stride)
{
    const int64_t in = layer->inputs, out = layer->outputs;
    const int64_t P = layer->params;
    const int32_t R = layer->rank;

    if (R == 0 || noise == NULL) {
        /* One weight vector for every row: a single pass over all samples. */
        affine_backward(layer, layer->mean, input, grad_output, grad_input,
                        layer->grad_mean, n * samples);
        if (R > 0)
            memset(layer->grad_factor, 0, (size_t)(P * R) * sizeof(float));
        return;
    }

    /* Per-sample gradients g_m; with one sample, straight into grad_mean. */
    float *per_sample = samples == 1 ? layer->grad_mean : layer->sample_grad;
    for (int32_t m = 0; m < samples; m++)
        affine_backward(layer, sample_weights(layer, noise, m),
                        input + m * n * in, grad_output + m * n * out,
                        grad_input ? grad_input + m * n * in : NULL,
                        per_sample + m * P, n);
    if (samples > 1) {
        memcpy(layer->grad_mean, per_sample, (size_t)P * sizeof(float));
        for (int32_t m = 1; m < samples; m++) {
            const float *g = per_sample + m * P;
            for (int64_t p = 0; p < P; p++)
                layer->grad_mean[p] += g[p];
        }
    }

    /* dS (P x R) = G^T Z: G is samples x P; Z is samples x R with row
     * stride noise_stride (this layer's slice of each sample's noise). */
    if (samples == 1)
        ibvi__outer(layer->net->threads, P, R, per_sample, noise,
                    layer->grad_factor, R);
    else
        ibvi__gemm(layer->net->threads, 1, 0, P, R, samples, 1.0f, per_sample,
                   P, noise, noise_stride, 0.0f, layer->grad_factor, R);
}

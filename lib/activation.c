/*
 * libibvi - the activation layer: element-wise ReLU, tanh or SiLU and their
 * derivatives; the output has the input's shape.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "network.h"
#include "parallel.h"

int ibvi__activation_valid(int32_t activation)
{
    return activation == IBVI_ACT_RELU || activation == IBVI_ACT_TANH ||
           activation == IBVI_ACT_SILU;
}

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ReLU's derivative as a select of two loaded values: with the load of
 * grad_output inside the condition the loop does not vectorise (and its
 * branch is a coin flip per element). */
static void relu_backward(const float *restrict input,
                          const float *restrict grad_output,
                          float *restrict grad_input, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        const float g = grad_output[i];
        grad_input[i] = input[i] > 0.0f ? g : 0.0f;
    }
}

/* Branch-free (the signs of hidden units are random, so a branch per
 * element mispredicts half the time). input == output is allowed, as for
 * the other activations: the predictor runs them in place. Without
 * restrict, GCC vectorises after a run-time overlap check, which
 * input == output passes. */
static void relu_forward(const float *input, float *output, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        output[i] = input[i] > 0.0f ? input[i] : 0.0f;
}

void ibvi__activation_forward(int32_t activation, const float *input,
                              float *output, int64_t count)
{
    switch (activation) {
    case IBVI_ACT_RELU:
        relu_forward(input, output, count);
        break;
    case IBVI_ACT_TANH:
        for (int64_t i = 0; i < count; i++)
            output[i] = tanhf(input[i]);
        break;
    case IBVI_ACT_SILU:
        for (int64_t i = 0; i < count; i++)
            output[i] = input[i] * sigmoid(input[i]);
        break;
    default:
        break;
    }
}

void ibvi__activation_backward(int32_t activation, const float *input,
                               const float *grad_output, float *grad_input,
                               int64_t count)
{
    switch (activation) {
    case IBVI_ACT_RELU:
        relu_backward(input, grad_output, grad_input, count);
        break;
    case IBVI_ACT_TANH:
        for (int64_t i = 0; i < count; i++) {
            float t = tanhf(input[i]);
            grad_input[i] = grad_output[i] * (1.0f - t * t);
        }
        break;
    case IBVI_ACT_SILU:
        /* d/dx x s(x) = s(x) (1 + x (1 - s(x))) */
        for (int64_t i = 0; i < count; i++) {
            float s = sigmoid(input[i]);
            grad_input[i] = grad_output[i] * s * (1.0f + input[i] * (1.0f - s));
        }
        break;
    default:
        break;
    }
}

/* ---- split across threads ---------------------------------------------------
 * Element-wise: each value is computed as one thread would, whatever the
 * split. tanh and SiLU cost a libm call per value, so their share of a
 * thread is smaller. */

typedef struct activation_job {
    int32_t activation;
    const float *input, *grad_output;
    float *output;
} activation_job;

static void forward_span(void *arg, int64_t i0, int64_t i1)
{
    const activation_job *j = arg;
    ibvi__activation_forward(j->activation, j->input + i0, j->output + i0,
                             i1 - i0);
}

static void backward_span(void *arg, int64_t i0, int64_t i1)
{
    const activation_job *j = arg;
    ibvi__activation_backward(j->activation, j->input + i0,
                              j->grad_output + i0, j->output + i0, i1 - i0);
}

static int64_t activation_grain(int32_t activation)
{
    return activation == IBVI_ACT_RELU ? IBVI__PARALLEL_GRAIN_FLOATS
                                       : IBVI__PARALLEL_GRAIN_FLOATS / 8;
}

static void forward_threads(int32_t threads, int32_t activation,
                            const float *input, float *output, int64_t count)
{
    activation_job j = {activation, input, NULL, output};
    ibvi__parallel_for(threads, count, activation_grain(activation),
                       forward_span, &j);
}

static void backward_threads(int32_t threads, int32_t activation,
                             const float *input, const float *grad_output,
                             float *grad_input, int64_t count)
{
    activation_job j = {activation, input, grad_output, grad_input};
    ibvi__parallel_for(threads, count, activation_grain(activation),
                       backward_span, &j);
}

/* ---- the kind ------------------------------------------------------------- */

/* The builder (ibvi_net_add_activation) put the function in
 * layer->activation. */
static int configure(ibvi_layer *layer, const char *fn)
{
    if (!ibvi__activation_valid(layer->activation))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: activation = %d, expected IBVI_ACT_RELU (1), "
                          "IBVI_ACT_TANH (2) or IBVI_ACT_SILU (3)", fn,
                          (int)layer->activation);
    layer->out_shape = layer->in_shape;
    layer->params = 0;
    layer->group_count = 0;
    return IBVI_OK;
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    (void)theta, (void)scratch;
    forward_threads(ibvi__threads_in_effect(layer->net->threads),
                    layer->activation, in, out, rows * layer->outputs);
}

static void backward(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound)
{
    (void)theta, (void)dtheta, (void)scratch, (void)bound;
    backward_threads(ibvi__threads_in_effect(layer->net->threads),
                     layer->activation, in, dy, dx, rows * layer->outputs);
}

const ibvi__layer_ops ibvi__activation_ops = {
    .name = "activation",
    .flags = IBVI__OPS_IN_PLACE,
    .configure = configure,
    .forward = forward,
    .backward = backward,
};

int ibvi_net_add_activation(ibvi_net *net, int32_t activation)
{
    ibvi_layer proto = {.activation = activation};
    return ibvi__net_add_layer(net, "ibvi_net_add_activation",
                               IBVI__KIND_ACTIVATION, &proto, 0);
}

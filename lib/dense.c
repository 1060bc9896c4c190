/*
 * libibvi - the dense layer: y = x W^T + b for theta = [vec(W) row-major
 * (outputs x inputs); b], the input of shape (C, H, W) read flat (inputs =
 * C * H * W), the output of shape (outputs, 1, 1). Only the affine math is
 * here: whether theta is deterministic or a low-rank Gaussian, and its
 * sampling and factored gradient, is gaussian.c's.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "network.h"
#include "parallel.h"

/* ---- the element-wise passes, split across the network's threads -------- */

/* Rows r0 .. r1 - 1 of output (width out) = the bias. */
typedef struct bias_rows {
    float *output;
    const float *bias;
    int64_t width;
} bias_rows;

static void copy_bias_rows(void *arg, int64_t r0, int64_t r1)
{
    const bias_rows *b = arg;
    for (int64_t r = r0; r < r1; r++)
        memcpy(b->output + r * b->width, b->bias,
               (size_t)b->width * sizeof(float));
}

/* Columns j0 .. j1 - 1 of grad_bias = the column sums of dY, each summed
 * over the rows in order, so the split over columns changes nothing. */
typedef struct bias_sums {
    float *grad_bias;
    const float *dy;
    int64_t rows, width;
} bias_sums;

static void sum_bias_columns(void *arg, int64_t j0, int64_t j1)
{
    const bias_sums *b = arg;
    float *restrict gb = b->grad_bias;
    for (int64_t j = j0; j < j1; j++)
        gb[j] = 0.0f;
    for (int64_t r = 0; r < b->rows; r++) {
        const float *restrict dy = b->dy + r * b->width;
        for (int64_t j = j0; j < j1; j++)
            gb[j] += dy[j];
    }
}

/* ---- forward ------------------------------------------------------------- */

/* Y (rows x out) = X W^T + b for one weight vector theta = [W; b]. */
void ibvi__affine_forward(const ibvi_layer *layer, const float *theta,
                           const float *input, float *output, int64_t rows)
{
    const int32_t in = layer->inputs, out = layer->outputs;
    bias_rows b = {output, theta + (int64_t)out * in, out};
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), rows,
                       IBVI__PARALLEL_GRAIN_FLOATS / out + 1, copy_bias_rows,
                       &b);
    ibvi__gemm(layer->net->threads, 0, 1, rows, out, in, 1.0f, input, in,
               theta, in, 1.0f, output, out);
}

/* ---- backward ------------------------------------------------------------ */

/* g = [dW; db] for one weight vector: dW = dY^T X, db = column sums of dY.
 * When grad_input is not NULL also dX = dY W. bound[0] and bound[1] receive
 * bounds on |dW| and |db| entries (+inf or NaN when dY or X is not finite):
 * |dW_ij| <= sum_n |dY_ni| |X_nj| <= rows max|dY| max|X|. They let the
 * optimizer prove an update finite without reading the gradient. */
static void affine_backward(const ibvi_layer *layer, const float *theta,
                            const float *input, const float *grad_output,
                            float *grad_input, float *grad_theta, int64_t rows,
                            float *scratch, double *bound)
{
    (void)scratch;
    const int32_t in = layer->inputs, out = layer->outputs;
    const int32_t threads = ibvi__threads_in_effect(layer->net->threads);
    float *grad_bias = grad_theta + (int64_t)out * in;
    ibvi__gemm(layer->net->threads, 1, 0, out, in, rows, 1.0f, grad_output,
               out, input, in, 0.0f, grad_theta, in);
    /* A thread sums at least 64 columns (whole cache lines of each row). */
    bias_sums sums = {grad_bias, grad_output, rows, out};
    ibvi__parallel_for(threads, out,
                       64 + IBVI__PARALLEL_GRAIN_FLOATS / (rows + 1),
                       sum_bias_columns, &sums);
    const double dy_sum = (double)rows *
                          ibvi__parallel_max_abs(threads, grad_output,
                                                 rows * out) *
                          ibvi__rounding_slack((double)rows);
    bound[0] = dy_sum * ibvi__parallel_max_abs(threads, input, rows * in);
    bound[1] = dy_sum;
    if (grad_input)
        ibvi__gemm(layer->net->threads, 0, 0, rows, in, out, 1.0f,
                   grad_output, out, theta, in, 0.0f, grad_input, in);
}

/* ---- the predictor's fast paths ------------------------------------------ */

/* a (rows x width) = max(a + b, 0), b added to every row: the bias and the
 * ReLU in one pass over the output (see affine_relu). */
static void bias_relu(float *restrict a, const float *restrict b, int64_t rows,
                      int64_t width)
{
    for (int64_t row = 0; row < rows; row++) {
        float *restrict y = a + row * width;
        for (int64_t j = 0; j < width; j++) {
            const float v = y[j] + b[j];
            y[j] = v > 0.0f ? v : 0.0f;
        }
    }
}

/* Rows r0 .. r1 - 1 of bias_relu. */
static void bias_relu_rows(void *arg, int64_t r0, int64_t r1)
{
    const bias_rows *b = arg;
    bias_relu(b->output + r0 * b->width, b->bias, r1 - r0, b->width);
}

/* output = max(input W^T + b, 0): the GEMM overwrites (beta = 0) and one
 * pass adds the bias and clips, where bias rows copied in first
 * (ibvi__affine_forward) cost the GEMM a read of its output and the ReLU
 * another pass over it. That pass is split by rows across the network's
 * threads, after the GEMM. */
static void affine_relu(const ibvi_layer *layer, const float *theta,
                        const float *input, float *output, int64_t rows)
{
    const int64_t in = layer->inputs, out = layer->outputs;
    ibvi__gemm(layer->net->threads, 0, 1, rows, out, in, 1.0f, input, in,
               theta, in, 0.0f, output, out);
    bias_rows b = {output, theta + out * in, out};
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), rows,
                       IBVI__PARALLEL_GRAIN_FLOATS / out + 1, bias_relu_rows,
                       &b);
}

/* Class-major: output (out x rows, row stride ld >= rows) = (input W^T +
 * b)^T for theta = [W; b]. */
static void affine_by_class(const ibvi_layer *layer, const float *theta,
                            const float *input, float *output, int64_t rows,
                            int64_t ld)
{
    const int64_t in = layer->inputs, out = layer->outputs;
    const float *bias = theta + out * in;
    for (int64_t c = 0; c < out; c++)
        for (int64_t row = 0; row < rows; row++)
            output[c * ld + row] = bias[c];
    /* B = W^T: element (i, c) is W[c * in + i]. */
    ibvi__gemm_strided(layer->net->threads, rows, out, in, 1.0f, input, in, 1,
                       theta, 1, in, 1.0f, output, 1, ld);
}

/* ---- the kind ------------------------------------------------------------- */

/* The builder (ibvi_net_add_dense) put the unit count in layer->units. */
static int configure(ibvi_layer *layer, const char *fn)
{
    const int32_t units = layer->units;
    if (units <= 0 || units > IBVI__MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: outputs = %d, expected 1..%d", fn, (int)units,
                          IBVI__MAX_DIM);
    const int64_t in = ibvi__shape_size(layer->in_shape);
    const int64_t weights = (int64_t)units * in;
    layer->out_shape = (ibvi__shape){units, 1, 1};
    layer->params = weights + units;
    layer->group_count = 2;
    layer->groups[0] = (ibvi__param_group){.offset = 0, .count = weights,
                                           .fan_in = in, .fan_out = units,
                                           .role = IBVI__GROUP_WEIGHT};
    layer->groups[1] = (ibvi__param_group){.offset = weights, .count = units,
                                           .fan_in = 1, .fan_out = units,
                                           .role = IBVI__GROUP_BIAS};
    return IBVI_OK;
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    (void)scratch;
    ibvi__affine_forward(layer, theta, in, out, rows);
}

const ibvi__layer_ops ibvi__dense_ops = {
    .name = "dense",
    .flags = IBVI__OPS_WEIGHT_MATRIX | IBVI__OPS_VARIATIONAL |
             IBVI__OPS_LINEAR_IN_THETA,
    .configure = configure,
    .forward = forward,
    .backward = affine_backward,
    .forward_relu = affine_relu,
    .forward_by_class = affine_by_class,
};

int ibvi_net_add_dense(ibvi_net *net, int32_t outputs, int32_t rank)
{
    ibvi_layer proto = {.units = outputs};
    return ibvi__net_add_layer(net, "ibvi_net_add_dense", IBVI__KIND_DENSE,
                               &proto, rank);
}

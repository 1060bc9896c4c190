/*
 * libibvi - the residual connection: output = input + skip, the skip being
 * the output of an earlier layer (or the network input), either as it is
 * (identity) or through a deterministic 1x1 convolution with a stride (a
 * projection, conv2d.c's math with a 1x1 kernel and no padding) when the
 * channels or the spatial size change.
 *
 * The kind reads another layer's output, so it is deterministic
 * (layer_ops.h): one call on all rows, whose skip rows are the same rows of
 * the source. Its backward passes dy on as dL/dinput and adds the skip's
 * gradient (dy, or the projection's input gradient) into the source's
 * grad_skip, which passes.c adds to the source's incoming gradient when
 * the backward walk reaches it. The network input needs no gradient.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "network.h"

static ibvi__shape skip_shape(const ibvi_layer *layer)
{
    const ibvi_net *net = layer->net;
    const int32_t from = layer->residual.from;
    return from < 0 ? net->input_shape : net->layers[from]->out_shape;
}

static const float *skip_values(const ibvi_layer *layer)
{
    const ibvi_net *net = layer->net;
    const int32_t from = layer->residual.from;
    return from < 0 ? net->input : net->layers[from]->output;
}

/* The builders (ibvi_net_add_residual, _ex) put from, stride and bias in
 * layer->residual. */
static int configure(ibvi_layer *layer, const char *fn)
{
    const int32_t from = layer->residual.from, stride = layer->residual.stride;
    if (from < -1 || from >= layer->index)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: from = %d, expected -1 (the network input) .. "
                          "%d (a layer before this one, index %d)", fn,
                          (int)from, (int)layer->index - 1, (int)layer->index);
    if (stride < 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: projection_stride = %d, expected 0 (identity) "
                          "or >= 1 (a 1x1 convolution)", fn, (int)stride);
    const ibvi__shape in = layer->in_shape, skip = skip_shape(layer);
    char source[32];
    if (from < 0)
        snprintf(source, sizeof source, "the network input");
    else
        snprintf(source, sizeof source, "layer %d", (int)from);
    layer->out_shape = in;
    if (stride == 0) {
        if (skip.c != in.c || skip.h != in.h || skip.w != in.w)
            return ibvi__fail(IBVI_ERR_SHAPE,
                              "%s: the skip from %s has shape (%d, %d, %d) "
                              "and the input (%d, %d, %d): an identity skip "
                              "needs equal shapes (projection_stride >= 1 "
                              "projects it)", fn, source, (int)skip.c, (int)skip.h, (int)skip.w,
                              (int)in.c, (int)in.h, (int)in.w);
        layer->params = 0;
        layer->group_count = 0;
        return IBVI_OK;
    }
    ibvi__conv2d_geom g;
    const int st = ibvi__conv2d_geometry(&g, skip.c, skip.h, skip.w, in.c, 1,
                                         1, stride, stride, 0, 0, fn);
    if (st)
        return st;
    if (!layer->residual.bias)
        ibvi__conv2d_without_bias(&g);
    if (g.h_out != in.h || g.w_out != in.w)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: the skip from %s of shape (%d, %d, %d) "
                          "projected with stride %d is (%d, %lld, %lld), but "
                          "the input is (%d, %d, %d)", fn, source, (int)skip.c, (int)skip.h, (int)skip.w, (int)stride,
                          (int)in.c, (long long)g.h_out, (long long)g.w_out,
                          (int)in.c, (int)in.h, (int)in.w);
    layer->residual.projection = g;
    const int64_t weights = g.c_out * g.c_in;
    layer->params = g.params;
    layer->group_count = g.bias ? 2 : 1;
    layer->groups[0] = (ibvi__param_group){.offset = 0, .count = weights,
                                           .fan_in = g.c_in,
                                           .fan_out = g.c_out,
                                           .role = IBVI__GROUP_WEIGHT};
    layer->groups[1] = (ibvi__param_group){.offset = weights,
                                           .count = g.c_out, .fan_in = 1,
                                           .fan_out = g.c_out,
                                           .role = IBVI__GROUP_BIAS};
    return IBVI_OK;
}

/* The projection's scratch, then (training, a layer's skip) the skip's
 * gradient before it is added into the source's grad_skip. */
static int64_t scratch_floats(const ibvi_layer *layer, int64_t rows)
{
    if (layer->residual.stride == 0 || rows <= 0)
        return 0;
    const ibvi__conv2d_geom *g = &layer->residual.projection;
    return ibvi__conv2d_scratch_floats(g, rows) +
           (layer->residual.from >= 0 ? rows * g->in_size : 0);
}

void ibvi__residual_apply(const ibvi_layer *layer, const float *theta,
                          const float *input, const float *skip,
                          int64_t skip_rows, float *output, int64_t rows,
                          float *scratch)
{
    const int64_t width = layer->outputs, block = skip_rows * width;
    const int64_t blocks = rows / skip_rows;
    if (layer->residual.stride == 0) {
        for (int64_t b = 0; b < blocks; b++) {
            const float *restrict x = input + b * block;
            float *restrict y = output + b * block;
            for (int64_t k = 0; k < block; k++)
                y[k] = x[k] + skip[k];
        }
        return;
    }
    ibvi__conv2d_forward(layer->net->threads, &layer->residual.projection,
                         theta, skip, output, skip_rows, scratch);
    for (int64_t b = 1; b < blocks; b++)
        memcpy(output + b * block, output, (size_t)block * sizeof(float));
    for (int64_t k = 0; k < rows * width; k++)
        output[k] += input[k];
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    ibvi__residual_apply(layer, theta, in, skip_values(layer), rows, out,
                         rows, scratch);
}

static void backward(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound)
{
    (void)in;
    const int32_t from = layer->residual.from;
    const int64_t count = rows * layer->outputs;
    if (dx)
        memcpy(dx, dy, (size_t)count * sizeof(float));
    float *grad_skip = from >= 0 ? layer->net->layers[from]->grad_skip : NULL;
    if (layer->residual.stride == 0) {
        if (grad_skip)
            for (int64_t k = 0; k < count; k++)
                grad_skip[k] += dy[k];
        return;
    }
    const ibvi__conv2d_geom *g = &layer->residual.projection;
    float *dskip = grad_skip ? scratch + ibvi__conv2d_scratch_floats(g, rows)
                             : NULL;
    ibvi__conv2d_backward(layer->net->threads, g, theta, skip_values(layer),
                          dy, dskip, dtheta, rows, scratch);
    if (dskip)
        for (int64_t k = 0; k < rows * g->in_size; k++)
            grad_skip[k] += dskip[k];
    ibvi__group_max_abs(layer, dtheta, bound);
}

const ibvi__layer_ops ibvi__residual_ops = {
    .name = "residual",
    .flags = 0,
    .configure = configure,
    .scratch_floats = scratch_floats,
    .scratch_kept = 0,
    .forward = forward,
    .backward = backward,
};

static int add_residual(ibvi_net *net, const char *fn, int32_t from,
                        int32_t stride, int32_t bias)
{
    ibvi_layer proto = {.residual = {.from = from, .stride = stride,
                                     .bias = bias}};
    const int status =
        ibvi__net_add_layer(net, fn, IBVI__KIND_RESIDUAL, &proto, 0);
    if (status == IBVI_OK && from >= 0)
        net->layers[from]->skip_readers++;
    return status;
}

int ibvi_net_add_residual(ibvi_net *net, int32_t from,
                          int32_t projection_stride)
{
    return add_residual(net, "ibvi_net_add_residual", from, projection_stride,
                        1);
}

int ibvi_net_add_residual_ex(ibvi_net *net,
                             const ibvi_residual_options *options)
{
    static const char fn[] = "ibvi_net_add_residual_ex";
    IBVI_CHECK_NOT_NULL(fn, net);
    IBVI_CHECK_NOT_NULL(fn, options);
    if (options->version != IBVI_RESIDUAL_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->version = %u, expected %d "
                          "(IBVI_RESIDUAL_OPTIONS_VERSION; start from "
                          "IBVI_RESIDUAL_OPTIONS_INIT)",
                          fn, (unsigned)options->version,
                          IBVI_RESIDUAL_OPTIONS_VERSION);
    if (options->projection_no_bias != 0 && options->projection_no_bias != 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->projection_no_bias = %d, expected 0 "
                          "(a bias per output channel) or 1 (none)",
                          fn, (int)options->projection_no_bias);
    return add_residual(net, fn, options->from, options->projection_stride,
                        !options->projection_no_bias);
}

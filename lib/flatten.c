/*
 * libibvi - the flatten layer: (C, H, W) -> (C * H * W, 1, 1) per example,
 * the values unchanged. A batch is stored the same either way (one example
 * per row), so forward and backward are copies; the layer exists so that a
 * network states where its image part ends (dense layers read any shape
 * flat already).
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "network.h"

static int configure(ibvi_layer *layer, const char *fn)
{
    (void)fn;
    /* The input shape was validated when it was made: its size fits. */
    layer->out_shape =
        (ibvi__shape){(int32_t)ibvi__shape_size(layer->in_shape), 1, 1};
    layer->params = 0;
    layer->group_count = 0;
    return IBVI_OK;
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    (void)theta;
    (void)scratch;
    memcpy(out, in, (size_t)(rows * layer->inputs) * sizeof(float));
}

static void backward(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound)
{
    (void)theta;
    (void)in;
    (void)dtheta;
    (void)scratch;
    (void)bound;
    if (dx)
        memcpy(dx, dy, (size_t)(rows * layer->inputs) * sizeof(float));
}

const ibvi__layer_ops ibvi__flatten_ops = {
    .name = "flatten",
    .configure = configure,
    .forward = forward,
    .backward = backward,
};

int ibvi_net_add_flatten(ibvi_net *net)
{
    ibvi_layer proto;
    memset(&proto, 0, sizeof proto);
    return ibvi__net_add_layer(net, "ibvi_net_add_flatten",
                               IBVI__KIND_FLATTEN, &proto, 0);
}

/*
 * libibvi - max and average pooling, and global average pooling as average
 * pooling over the whole plane (lib/image.h, docs/image-layers.md).
 *
 * Windows are visited per example and channel in output order, each one
 * row-major; a window never leaves the input (no padding, floor output
 * size), so no bounds checks run inside the loops.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "image.h"
#include "internal.h"
#include "network.h"
#include "parallel.h"

int ibvi__pool2d_geometry(ibvi__pool2d_geom *g, int64_t c, int64_t h_in,
                          int64_t w_in, int64_t kh, int64_t kw,
                          int64_t stride_h, int64_t stride_w, const char *fn)
{
    const ibvi__image_dim dims[] = {{"channels", c},          {"input height", h_in},
                 {"input width", w_in},    {"kernel height", kh},
                 {"kernel width", kw},     {"stride height", stride_h},
                 {"stride width", stride_w}};
    const int bad =
        ibvi__image_check_dims(fn, dims, sizeof dims / sizeof dims[0]);
    if (bad)
        return bad;
    if (kh > h_in || kw > w_in)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: kernel %lldx%lld is larger than the input "
                          "%lldx%lld",
                          fn, (long long)kh, (long long)kw, (long long)h_in,
                          (long long)w_in);
    /* Factors <= 2^16: the product fits int64. */
    const int64_t in_size = c * h_in * w_in;
    if (in_size > IBVI__IMAGE_SIZE_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: input %lldx%lldx%lld has more than %d values",
                          fn, (long long)c, (long long)h_in, (long long)w_in,
                          IBVI__IMAGE_SIZE_MAX);
    g->c = c;
    g->h_in = h_in;
    g->w_in = w_in;
    g->kh = kh;
    g->kw = kw;
    g->stride_h = stride_h;
    g->stride_w = stride_w;
    g->h_out = (h_in - kh) / stride_h + 1;
    g->w_out = (w_in - kw) / stride_w + 1;
    g->in_size = in_size;
    g->out_size = c * g->h_out * g->w_out;
    return 0;
}

int ibvi__pool2d_global_geometry(ibvi__pool2d_geom *g, int64_t c, int64_t h,
                                 int64_t w, const char *fn)
{
    return ibvi__pool2d_geometry(g, c, h, w, h, w, 1, 1, fn);
}

/* Forward keeps the running maxima of a whole output row in the output:
 * the loop over the row's windows is long and branch-free (GCC vectorises
 * it), where a loop over one 2x2 window is mostly overhead. The
 * taps are visited tap by tap across the row rather than window by window,
 * which does not change the maximum; a NaN, once taken, stays (v > NaN is
 * false), so a window with a NaN outputs NaN. */
void ibvi__maxpool_forward(const ibvi__pool2d_geom *g, const float *input,
                           float *output, int64_t rows)
{
    const int64_t planes = rows * g->c, plane_in = g->h_in * g->w_in;
    const int64_t plane_out = g->h_out * g->w_out, wo = g->w_out;
    const int64_t sw = g->stride_w;
    for (int64_t k = 0; k < planes; k++)
        for (int64_t p = 0; p < g->h_out; p++) {
            const float *x = input + k * plane_in + p * g->stride_h * g->w_in;
            float *restrict y = output + k * plane_out + p * wo;
            for (int64_t q = 0; q < wo; q++)
                y[q] = x[q * sw];
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = i == 0 ? 1 : 0; j < g->kw; j++) {
                    const float *restrict tap = x + i * g->w_in + j;
                    for (int64_t q = 0; q < wo; q++) {
                        const float v = tap[q * sw], best = y[q];
                        y[q] = ((v > best) | (v != v)) ? v : best;
                    }
                }
        }
}

/* Windows per block of max pooling's backward: their running maxima and
 * argmaxima live on the stack. */
#define POOL_BLOCK 64

/* Backward finds each window's argmax as forward finds its maximum, a block
 * of windows of one output row at a time, visiting the taps in row-major
 * order: a tap is taken when it is larger than the best so far, or when it
 * is the first NaN. So ties go to the first maximum in row-major order, a
 * NaN to the first NaN, and nothing replaces a NaN once taken. Branch-free:
 * which tap wins is a coin flip. */
void ibvi__maxpool_backward(const ibvi__pool2d_geom *g, const float *input,
                            const float *grad_output, float *grad_input,
                            int64_t rows)
{
    const int64_t planes = rows * g->c, plane_in = g->h_in * g->w_in;
    const int64_t plane_out = g->h_out * g->w_out, wo = g->w_out;
    const int64_t sw = g->stride_w;
    memset(grad_input, 0, (size_t)(rows * g->in_size) * sizeof(float));
    for (int64_t k = 0; k < planes; k++)
        for (int64_t p = 0; p < g->h_out; p++) {
            const int64_t top = p * g->stride_h * g->w_in;
            const float *x = input + k * plane_in + top;
            const float *dy = grad_output + k * plane_out + p * wo;
            float *dx = grad_input + k * plane_in + top;
            for (int64_t q0 = 0; q0 < wo; q0 += POOL_BLOCK) {
                const int64_t nq = wo - q0 < POOL_BLOCK ? wo - q0 : POOL_BLOCK;
                float best[POOL_BLOCK];
                int32_t arg[POOL_BLOCK];
                for (int64_t q = 0; q < nq; q++) {
                    best[q] = x[(q0 + q) * sw];
                    arg[q] = 0;
                }
                for (int64_t i = 0; i < g->kh; i++)
                    for (int64_t j = i == 0 ? 1 : 0; j < g->kw; j++) {
                        /* < in_size <= INT32_MAX */
                        const int32_t off = (int32_t)(i * g->w_in + j);
                        const float *tap = x + off + q0 * sw;
                        for (int64_t q = 0; q < nq; q++) {
                            const float v = tap[q * sw], b = best[q];
                            /* Selects by mask: with ?: GCC branches. */
                            const int32_t take =
                                -(int32_t)((v > b) | ((v != v) & (b == b)));
                            int32_t vb, bb;
                            memcpy(&vb, &v, sizeof vb);
                            memcpy(&bb, &b, sizeof bb);
                            bb = (vb & take) | (bb & ~take);
                            memcpy(&best[q], &bb, sizeof bb);
                            arg[q] = (off & take) | (arg[q] & ~take);
                        }
                    }
                for (int64_t q = 0; q < nq; q++)
                    dx[(q0 + q) * sw + arg[q]] += dy[q0 + q];
            }
        }
}

void ibvi__avgpool_forward(const ibvi__pool2d_geom *g, const float *input,
                           float *output, int64_t rows)
{
    const int64_t planes = rows * g->c, plane_in = g->h_in * g->w_in;
    const int64_t plane_out = g->h_out * g->w_out;
    const float scale = (float)(1.0 / (double)(g->kh * g->kw));
    for (int64_t k = 0; k < planes; k++) {
        const float *x = input + k * plane_in;
        float *y = output + k * plane_out;
        for (int64_t p = 0; p < g->h_out; p++)
            for (int64_t q = 0; q < g->w_out; q++) {
                const float *window =
                    x + p * g->stride_h * g->w_in + q * g->stride_w;
                /* Rows summed in float, the window in double: a global
                 * pool's window is a whole plane. */
                double sum = 0.0;
                for (int64_t i = 0; i < g->kh; i++) {
                    const float *row = window + i * g->w_in;
                    float s = 0.0f;
                    for (int64_t j = 0; j < g->kw; j++)
                        s += row[j];
                    sum += s;
                }
                y[p * g->w_out + q] = (float)sum * scale;
            }
    }
}

void ibvi__avgpool_backward(const ibvi__pool2d_geom *g,
                            const float *grad_output, float *grad_input,
                            int64_t rows)
{
    const int64_t planes = rows * g->c, plane_in = g->h_in * g->w_in;
    const int64_t plane_out = g->h_out * g->w_out;
    const float scale = (float)(1.0 / (double)(g->kh * g->kw));
    memset(grad_input, 0, (size_t)(rows * g->in_size) * sizeof(float));
    for (int64_t k = 0; k < planes; k++) {
        const float *dy = grad_output + k * plane_out;
        float *dx = grad_input + k * plane_in;
        for (int64_t p = 0; p < g->h_out; p++)
            for (int64_t q = 0; q < g->w_out; q++) {
                const float share = dy[p * g->w_out + q] * scale;
                float *window =
                    dx + p * g->stride_h * g->w_in + q * g->stride_w;
                for (int64_t i = 0; i < g->kh; i++) {
                    float *restrict row = window + i * g->w_in;
                    for (int64_t j = 0; j < g->kw; j++)
                        row[j] += share;
                }
            }
    }
}

/* ---- the layer kinds (layer_ops.h) ------------------------------------------
 * Three kinds without parameters over one geometry: max and average pooling
 * (the builder's kernel and stride in layer->pool), and global average
 * pooling (average pooling over the whole plane). */

static int configure_window(ibvi_layer *layer, const char *fn)
{
    const ibvi__shape in = layer->in_shape;
    const int32_t k = layer->pool.kernel, s = layer->pool.stride;
    const int st = ibvi__pool2d_geometry(&layer->pool.geom, in.c, in.h, in.w,
                                         k, k, s, s, fn);
    if (st)
        return st;
    layer->out_shape = (ibvi__shape){in.c, (int32_t)layer->pool.geom.h_out,
                                     (int32_t)layer->pool.geom.w_out};
    layer->params = 0;
    layer->group_count = 0;
    return IBVI_OK;
}

static int configure_global(ibvi_layer *layer, const char *fn)
{
    const ibvi__shape in = layer->in_shape;
    const int st = ibvi__pool2d_global_geometry(&layer->pool.geom, in.c, in.h,
                                                in.w, fn);
    if (st)
        return st;
    layer->out_shape = (ibvi__shape){in.c, 1, 1};
    layer->params = 0;
    layer->group_count = 0;
    return IBVI_OK;
}

/* The kinds' passes, split across the network's threads by examples: each
 * example's planes are pooled (and their gradients scattered) on their
 * own, so the split changes no value. */
typedef enum pool_pass {
    MAX_FORWARD, MAX_BACKWARD, AVG_FORWARD, AVG_BACKWARD
} pool_pass;

typedef struct pool_job {
    const ibvi__pool2d_geom *g;
    pool_pass pass;
    const float *in, *dy;
    float *out;
} pool_job;

static void pool_rows(void *arg, int64_t r0, int64_t r1)
{
    const pool_job *j = arg;
    const ibvi__pool2d_geom *g = j->g;
    const int64_t rows = r1 - r0;
    switch (j->pass) {
    case MAX_FORWARD:
        ibvi__maxpool_forward(g, j->in + r0 * g->in_size,
                              j->out + r0 * g->out_size, rows);
        break;
    case MAX_BACKWARD:
        ibvi__maxpool_backward(g, j->in + r0 * g->in_size,
                               j->dy + r0 * g->out_size,
                               j->out + r0 * g->in_size, rows);
        break;
    case AVG_FORWARD:
        ibvi__avgpool_forward(g, j->in + r0 * g->in_size,
                              j->out + r0 * g->out_size, rows);
        break;
    case AVG_BACKWARD:
        ibvi__avgpool_backward(g, j->dy + r0 * g->out_size,
                               j->out + r0 * g->in_size, rows);
        break;
    }
}

static void run_pool(const ibvi_layer *layer, pool_pass pass, const float *in,
                     const float *dy, float *out, int64_t rows)
{
    const ibvi__pool2d_geom *g = &layer->pool.geom;
    pool_job j = {g, pass, in, dy, out};
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), rows,
                       IBVI__PARALLEL_GRAIN_FLOATS / g->in_size + 1,
                       pool_rows, &j);
}

static void max_forward(const ibvi_layer *layer, const float *theta,
                        const float *in, float *out, int64_t rows,
                        float *scratch)
{
    (void)theta;
    (void)scratch;
    run_pool(layer, MAX_FORWARD, in, NULL, out, rows);
}

static void max_backward(const ibvi_layer *layer, const float *theta,
                         const float *in, const float *dy, float *dx,
                         float *dtheta, int64_t rows, float *scratch,
                         double *bound)
{
    (void)theta;
    (void)dtheta;
    (void)scratch;
    (void)bound;
    if (dx)
        run_pool(layer, MAX_BACKWARD, in, dy, dx, rows);
}

static void avg_forward(const ibvi_layer *layer, const float *theta,
                        const float *in, float *out, int64_t rows,
                        float *scratch)
{
    (void)theta;
    (void)scratch;
    run_pool(layer, AVG_FORWARD, in, NULL, out, rows);
}

static void avg_backward(const ibvi_layer *layer, const float *theta,
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
        run_pool(layer, AVG_BACKWARD, NULL, dy, dx, rows);
}

const ibvi__layer_ops ibvi__maxpool_ops = {
    .name = "max pooling",
    .configure = configure_window,
    .forward = max_forward,
    .backward = max_backward,
};

const ibvi__layer_ops ibvi__avgpool_ops = {
    .name = "average pooling",
    .configure = configure_window,
    .forward = avg_forward,
    .backward = avg_backward,
};

const ibvi__layer_ops ibvi__global_avgpool_ops = {
    .name = "global average pooling",
    .configure = configure_global,
    .forward = avg_forward,
    .backward = avg_backward,
};

static int add_pool(ibvi_net *net, const char *fn, int32_t kind,
                    int32_t kernel, int32_t stride)
{
    ibvi_layer proto;
    memset(&proto, 0, sizeof proto);
    proto.pool.kernel = kernel;
    proto.pool.stride = stride;
    return ibvi__net_add_layer(net, fn, kind, &proto, 0);
}

int ibvi_net_add_maxpool(ibvi_net *net, int32_t kernel, int32_t stride)
{
    return add_pool(net, "ibvi_net_add_maxpool", IBVI__KIND_MAXPOOL, kernel,
                    stride);
}

int ibvi_net_add_avgpool(ibvi_net *net, int32_t kernel, int32_t stride)
{
    return add_pool(net, "ibvi_net_add_avgpool", IBVI__KIND_AVGPOOL, kernel,
                    stride);
}

int ibvi_net_add_global_avgpool(ibvi_net *net)
{
    return add_pool(net, "ibvi_net_add_global_avgpool",
                    IBVI__KIND_GLOBAL_AVGPOOL, 0, 0);
}

/*
 * libibvi - the math of the image layers: 2-D convolution, max and average
 * pooling (global average pooling is average pooling with a kernel the size
 * of the input) and group normalisation. Private: the layer table calls
 * these; nothing here is part of the ABI. docs/image-layers.md derives the
 * formulas and explains the choices.
 *
 * Layouts. One example is a (C, H, W) tensor stored row-major: value
 * (c, h, w) is at c*H*W + h*W + w. A batch of `rows` examples is NCHW: the
 * examples one after another, each C*H*W floats. Everything is float32.
 *
 * Each layer has a geometry, made and validated once by its constructor
 * (which reports a bad argument through ibvi__fail under the caller's name
 * `fn` and leaves *g unspecified), then read by forward and backward. Those
 * trust the geometry and their pointers (the caller validated the shapes),
 * allocate nothing and never fail; a layer that needs scratch memory says
 * how much with its _scratch_floats function and takes it from the caller.
 * Distinct buffers must not overlap. Backward passes overwrite their
 * outputs (they do not accumulate into them). Non-finite inputs do not
 * crash any function; the results are then unspecified except where a
 * comment says otherwise (the library rejects non-finite data before a
 * layer runs).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_IMAGE_H
#define IBVI_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Largest channel count, height, width, kernel side, stride or padding a
 * geometry accepts. */
#define IBVI__IMAGE_DIM_MAX 65536
/* Largest number of values of one example's tensor (C*H*W, input or
 * output) and of one convolution patch (c_in*kh*kw): the network's widths
 * are int32. With these bounds every size product below fits int64. */
#define IBVI__IMAGE_SIZE_MAX INT32_MAX

/* The dimensions a geometry constructor checks: each must be in
 * 1..IBVI__IMAGE_DIM_MAX. Returns 0, or IBVI_ERR_INVALID_ARG through
 * ibvi__fail naming fn and the dimension. The one check of conv2d.c,
 * pool.c and groupnorm.c. */
typedef struct ibvi__image_dim {
    const char *name;
    int64_t value;
} ibvi__image_dim;

static inline int ibvi__image_check_dims(const char *fn,
                                         const ibvi__image_dim *dims,
                                         size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const int64_t v = dims[i].value;
        if (v < 1)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: %s = %lld, expected >= 1", fn,
                              dims[i].name, (long long)v);
        if (v > IBVI__IMAGE_DIM_MAX)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: %s = %lld exceeds the limit %d", fn,
                              dims[i].name, (long long)v, IBVI__IMAGE_DIM_MAX);
    }
    return 0;
}

/* ---- 2-D convolution (conv2d.c) ------------------------------------------
 * y[o][p][q] = b[o] + sum_{c,i,j} W[o][c][i][j] x[c][p*sh - ph + i][q*sw - pw + j]
 * with x = 0 outside the input (zero padding ph rows above and below, pw
 * columns left and right). Output size h_out = (h_in + 2 ph - kh) / sh + 1
 * (floor), likewise w_out.
 *
 * theta = [vec(W); b]: W (c_out x c_in*kh*kw) row-major, i.e. W[o][c][i][j]
 * at ((o*c_in + c)*kh + i)*kw + j, then b (c_out). P = c_out*c_in*kh*kw +
 * c_out; without a bias (ibvi__conv2d_without_bias) theta = vec(W) and P =
 * c_out*c_in*kh*kw. For the parameterization (muP), fan_in = c_in*kh*kw (the values a
 * filter reads) and fan_out = c_out*kh*kw (the outputs each input value
 * reaches, away from the border); the biases' fan_out is c_out. */
typedef struct ibvi__conv2d_geom {
    int64_t c_in, h_in, w_in;
    int64_t c_out, kh, kw;
    int64_t stride_h, stride_w, pad_h, pad_w;
    int64_t h_out, w_out;
    /* Derived by the constructor. */
    int64_t patch;     /* K = c_in*kh*kw: columns of W               */
    int64_t positions; /* h_out*w_out                                 */
    int64_t in_size;   /* c_in*h_in*w_in: floats of one input example */
    int64_t out_size;  /* c_out*h_out*w_out                           */
    int64_t params;    /* P                                           */
    int64_t bias;      /* 1: theta ends with c_out biases; 0: none    */
    int64_t chunk;     /* examples per im2col block (see scratch)     */
} ibvi__conv2d_geom;

/* Fills *g. Returns 0, IBVI_ERR_INVALID_ARG (a size < 1, a negative padding,
 * a padding not smaller than the kernel, a value above IBVI__IMAGE_DIM_MAX,
 * a tensor or patch above IBVI__IMAGE_SIZE_MAX) or IBVI_ERR_SHAPE (the
 * kernel is larger than the padded input), with a message naming fn, e.g.
 * "ibvi_net_add_conv2d: kernel 5x5 is larger than the padded input 3x3". */
int ibvi__conv2d_geometry(ibvi__conv2d_geom *g, int64_t c_in, int64_t h_in,
                          int64_t w_in, int64_t c_out, int64_t kh, int64_t kw,
                          int64_t stride_h, int64_t stride_w, int64_t pad_h,
                          int64_t pad_w, const char *fn);

/* Makes *g (from ibvi__conv2d_geometry, which gives every geometry a
 * bias) a convolution without one: bias 0, P = c_out*c_in*kh*kw. */
void ibvi__conv2d_without_bias(ibvi__conv2d_geom *g);

/* Floats of scratch forward and backward need for `rows` examples:
 * chunk * h_out*w_out * (c_in*kh*kw + c_out) with chunk = min(rows,
 * g->chunk). The batch is processed g->chunk examples at a time, g->chunk
 * chosen so one chunk's scratch is at most 256 Ki floats (1 MiB) when one
 * example fits; otherwise 1 (scratch is then one example's patches). So
 * the scratch never grows with rows beyond g->chunk examples. 0 for
 * rows <= 0. */
int64_t ibvi__conv2d_scratch_floats(const ibvi__conv2d_geom *g, int64_t rows);

/* output (rows x out_size) = conv(theta, input (rows x in_size)).
 * im2col of each chunk into scratch, then one GEMM per chunk with
 * `threads` BLIS threads (the rest runs on the calling thread). */
void ibvi__conv2d_forward(int32_t threads, const ibvi__conv2d_geom *g,
                          const float *theta, const float *input,
                          float *output, int64_t rows, float *scratch);

/* Given dL/dy (rows x out_size) at input x: grad_theta (P) = [dL/dW; dL/db]
 * (dL/dW alone without a bias) summed over the rows, and grad_input (rows x in_size) = dL/dx. Either
 * output may be NULL (not computed; with grad_theta NULL no im2col runs).
 * Needs no state from the forward: the patches are rebuilt from input.
 *     dW = sum_chunks dY_col X_col^T,  db[o] = sum_{r,p,q} dy[r][o][p][q],
 *     dX = col2im(W^T dY_col). */
void ibvi__conv2d_backward(int32_t threads, const ibvi__conv2d_geom *g,
                           const float *theta, const float *input,
                           const float *grad_output, float *grad_input,
                           float *grad_theta, int64_t rows, float *scratch);

/* ---- pooling (pool.c) ------------------------------------------------------
 * Per channel, kernel kh x kw moved by (stride_h, stride_w), no padding,
 * h_out = (h_in - kh) / stride_h + 1 (floor; trailing rows and columns that
 * no window covers get no gradient). Max pooling takes the window's
 * maximum, average pooling its mean (divisor kh*kw). No parameters
 * (P = 0), no scratch: max pooling's backward recomputes each window's
 * argmax from the input. */
typedef struct ibvi__pool2d_geom {
    int64_t c, h_in, w_in;
    int64_t kh, kw, stride_h, stride_w;
    int64_t h_out, w_out;
    int64_t in_size, out_size; /* c*h_in*w_in, c*h_out*w_out */
} ibvi__pool2d_geom;

/* Fills *g. IBVI_ERR_INVALID_ARG for a size < 1 or above the limits,
 * IBVI_ERR_SHAPE when the kernel is larger than the input, naming fn. */
int ibvi__pool2d_geometry(ibvi__pool2d_geom *g, int64_t c, int64_t h_in,
                          int64_t w_in, int64_t kh, int64_t kw,
                          int64_t stride_h, int64_t stride_w, const char *fn);

/* Global average pooling: (C, H, W) -> (C, 1, 1), the kernel the whole
 * plane. Use with the average pooling functions. */
int ibvi__pool2d_global_geometry(ibvi__pool2d_geom *g, int64_t c, int64_t h,
                                 int64_t w, const char *fn);

/* Max pooling. Ties: the first maximum of the window in row-major order
 * (smallest row, then smallest column) is the maximum, and alone receives
 * the gradient. NaN: a window holding a NaN outputs NaN (the first NaN, in
 * the same order) and routes its gradient there; nothing crashes. */
void ibvi__maxpool_forward(const ibvi__pool2d_geom *g, const float *input,
                           float *output, int64_t rows);
/* grad_input (rows x in_size) = dL/dx from dL/dy, given the forward's input;
 * overlapping windows (stride < kernel) add their contributions. */
void ibvi__maxpool_backward(const ibvi__pool2d_geom *g, const float *input,
                            const float *grad_output, float *grad_input,
                            int64_t rows);

/* Average pooling: y = (1 / (kh*kw)) sum over the window. */
void ibvi__avgpool_forward(const ibvi__pool2d_geom *g, const float *input,
                           float *output, int64_t rows);
/* grad_input = dL/dx: each window spreads dy / (kh*kw) over its values. */
void ibvi__avgpool_backward(const ibvi__pool2d_geom *g,
                            const float *grad_output, float *grad_input,
                            int64_t rows);

/* ---- group normalisation (groupnorm.c) -------------------------------------
 * The C channels split into G groups of C/G consecutive channels. Per
 * example and group, over its n = (C/G)*H*W values (contiguous in CHW):
 *     mean = sum x / n,  var = sum (x - mean)^2 / n  (biased; two passes in
 *     double),  rstd = 1 / sqrt(var + eps),
 *     y[c][h][w] = (x[c][h][w] - mean) * rstd * gamma[c] + beta[c].
 * theta = [gamma (C); beta (C)], P = 2C. Each example is normalised on its
 * own: no statistic crosses examples (no batch statistics, no running
 * averages). */
typedef struct ibvi__groupnorm_geom {
    int64_t c, h, w, groups;
    float eps;
    /* Derived by the constructor. */
    int64_t group_channels; /* C/G                     */
    int64_t spatial;        /* H*W                     */
    int64_t group_size;     /* n = (C/G)*H*W           */
    int64_t in_size;        /* C*H*W (= output size)   */
    int64_t params;         /* 2C                      */
} ibvi__groupnorm_geom;

/* Fills *g. IBVI_ERR_INVALID_ARG for a size < 1 or above the limits, or eps
 * not finite and > 0; IBVI_ERR_SHAPE when groups does not divide c
 * ("<fn>: channels 6 not divisible by groups 4"). */
int ibvi__groupnorm_geometry(ibvi__groupnorm_geom *g, int64_t c, int64_t h,
                             int64_t w, int64_t groups, float eps,
                             const char *fn);

/* rows * (3 groups + 2 C): each example's and group's mean (as a float
 * pair, high and low part, so it keeps double precision) and rstd, then
 * the backward's per-example channel sums (2C per example), which it adds
 * in example order, so a split of the examples across threads changes no
 * value. */
int64_t ibvi__groupnorm_scratch_floats(const ibvi__groupnorm_geom *g,
                                       int64_t rows);

/* output (rows x in_size) from input; writes the statistics into scratch,
 * which the backward of the same input reads: call forward before each
 * backward, with the same input, rows and scratch, and nothing writing
 * the scratch in between. */
void ibvi__groupnorm_forward(const ibvi__groupnorm_geom *g, const float *theta,
                             const float *input, float *output, int64_t rows,
                             float *scratch);

/* From dL/dy: grad_theta (2C) = [dgamma; dbeta] summed over the rows,
 *     dgamma[c] = sum dy * xhat,  dbeta[c] = sum dy  (xhat = (x - mean) rstd),
 * and grad_input = dL/dx, per example and group (sums over the group):
 *     dx = rstd * (g - sum(g)/n - xhat * sum(g * xhat)/n),  g = dy * gamma[c].
 * Either output may be NULL (skipped). Reads the forward's statistics
 * and writes the channel sums into the rest of the scratch. */
void ibvi__groupnorm_backward(const ibvi__groupnorm_geom *g,
                              const float *theta, const float *input,
                              const float *grad_output, float *grad_input,
                              float *grad_theta, int64_t rows,
                              float *scratch);

#endif /* IBVI_IMAGE_H */

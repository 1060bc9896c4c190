/*
 * libibvi - 2-D convolution by im2col and GEMM (lib/image.h,
 * docs/image-layers.md).
 *
 * A chunk of nb examples is unfolded into the column matrix X_col
 * (K x nb*HW, K = c_in*kh*kw, HW = h_out*w_out): row (c*kh + i)*kw + j,
 * column b*HW + p*w_out + q holds x_b[c][p*sh - ph + i][q*sw - pw + j] (0 in
 * the padding). Then, with W (c_out x K) as stored in theta,
 *     forward   Y_col = W X_col                  (c_out x nb*HW), one GEMM
 *     backward  dW   += dY_col X_col^T           (c_out x K),     one GEMM
 *               dX_col = W^T dY_col, dX = col2im(dX_col),         one GEMM
 * where Y_col holds y_b[o][p][q] at row o, column b*HW + p*w_out + q: NCHW
 * with the example and channel axes swapped, so forward scatters Y_col into
 * the output (adding the bias) and backward gathers dY into dY_col. Those
 * copies touch c_out*HW floats per example, the im2col K*HW: the GEMMs
 * dominate (measured in docs/image-layers.md). One GEMM per chunk beats one
 * per example, whose shapes (e.g. 16 x 100 x 150 for LeNet's second layer)
 * are too small for BLIS to run near its peak.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "image.h"
#include "internal.h"
#include "kernels.h"
#include "network.h"
#include "parallel.h"

/* Scratch per chunk, in floats: X_col and Y_col (or dY_col). 1 MiB, about
 * a core's L2, so the GEMMs read X_col from cache where im2col left it:
 * over LeNet's two layers at batch 128, 15% faster than 4 MiB and 5%
 * faster than 256 KiB (docs/image-layers.md). */
#define CHUNK_BUDGET ((int64_t)1 << 18)

static int check_pad(const char *fn, const char *name, int64_t pad,
                     int64_t kernel)
{
    if (pad < 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: %s = %lld is negative", fn, name,
                          (long long)pad);
    if (pad >= kernel)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: %s = %lld is not smaller than the kernel "
                          "side %lld (a window would see only padding)",
                          fn, name, (long long)pad, (long long)kernel);
    return 0;
}

int ibvi__conv2d_geometry(ibvi__conv2d_geom *g, int64_t c_in, int64_t h_in,
                          int64_t w_in, int64_t c_out, int64_t kh, int64_t kw,
                          int64_t stride_h, int64_t stride_w, int64_t pad_h,
                          int64_t pad_w, const char *fn)
{
    const ibvi__image_dim dims[] = {{"input channels", c_in}, {"input height", h_in},
                 {"input width", w_in},    {"output channels", c_out},
                 {"kernel height", kh},    {"kernel width", kw},
                 {"stride height", stride_h}, {"stride width", stride_w}};
    const int bad =
        ibvi__image_check_dims(fn, dims, sizeof dims / sizeof dims[0]);
    if (bad)
        return bad;
    int st = check_pad(fn, "padding height", pad_h, kh);
    if (st == 0)
        st = check_pad(fn, "padding width", pad_w, kw);
    if (st)
        return st;
    /* Every factor is <= 2^16, so these products fit int64. */
    const int64_t ph = h_in + 2 * pad_h, pw = w_in + 2 * pad_w;
    if (kh > ph || kw > pw)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: kernel %lldx%lld is larger than the padded "
                          "input %lldx%lld",
                          fn, (long long)kh, (long long)kw, (long long)ph,
                          (long long)pw);
    const int64_t h_out = (ph - kh) / stride_h + 1;
    const int64_t w_out = (pw - kw) / stride_w + 1;
    const int64_t in_size = c_in * h_in * w_in;
    const int64_t out_size = c_out * h_out * w_out;
    const int64_t patch = c_in * kh * kw;
    if (in_size > IBVI__IMAGE_SIZE_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: input %lldx%lldx%lld has more than %d values",
                          fn, (long long)c_in, (long long)h_in,
                          (long long)w_in, IBVI__IMAGE_SIZE_MAX);
    if (out_size > IBVI__IMAGE_SIZE_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: output %lldx%lldx%lld has more than %d values",
                          fn, (long long)c_out, (long long)h_out,
                          (long long)w_out, IBVI__IMAGE_SIZE_MAX);
    if (patch > IBVI__IMAGE_SIZE_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: patch %lldx%lldx%lld has more than %d values",
                          fn, (long long)c_in, (long long)kh, (long long)kw,
                          IBVI__IMAGE_SIZE_MAX);
    g->c_in = c_in;
    g->h_in = h_in;
    g->w_in = w_in;
    g->c_out = c_out;
    g->kh = kh;
    g->kw = kw;
    g->stride_h = stride_h;
    g->stride_w = stride_w;
    g->pad_h = pad_h;
    g->pad_w = pad_w;
    g->h_out = h_out;
    g->w_out = w_out;
    g->patch = patch;
    g->positions = h_out * w_out;
    g->in_size = in_size;
    g->out_size = out_size;
    g->params = c_out * patch + c_out;
    g->bias = 1;
    const int64_t per_example = g->positions * (patch + c_out);
    g->chunk = per_example >= CHUNK_BUDGET ? 1 : CHUNK_BUDGET / per_example;
    return 0;
}

void ibvi__conv2d_without_bias(ibvi__conv2d_geom *g)
{
    if (g->bias) {
        g->bias = 0;
        g->params -= g->c_out;
    }
}

int64_t ibvi__conv2d_scratch_floats(const ibvi__conv2d_geom *g, int64_t rows)
{
    if (rows <= 0)
        return 0;
    const int64_t nb = rows < g->chunk ? rows : g->chunk;
    return nb * g->positions * (g->patch + g->c_out);
}

/* The outputs o in [0, out) whose tap o*stride - pad + k lies in [0, n):
 * [*lo, *hi). */
static void valid_range(int64_t n, int64_t out, int64_t stride, int64_t pad,
                        int64_t k, int64_t *lo, int64_t *hi)
{
    const int64_t first = pad - k; /* o*stride >= first */
    const int64_t last = n - 1 + pad - k; /* o*stride <= last */
    int64_t l = first > 0 ? (first + stride - 1) / stride : 0;
    int64_t h = last < 0 ? 0 : last / stride + 1;
    if (h > out)
        h = out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* d[0..n) = s[0..n). The runs im2col copies are short (at most w_out
 * values, e.g. 10 in LeNet's second layer), and a memcpy of a run-time size
 * is a library call: in blocks of 8 the compiler inlines the copies. */
static inline void copy_run(float *restrict d, const float *restrict s,
                            int64_t n)
{
    int64_t q = 0;
    for (; q + 8 <= n; q += 8)
        memcpy(d + q, s + q, 8 * sizeof(float));
    if (n >= 8) {
        memcpy(d + n - 8, s + n - 8, 8 * sizeof(float)); /* overlaps */
        return;
    }
    for (; q + 2 <= n; q += 2)
        memcpy(d + q, s + q, 2 * sizeof(float));
    if (q < n)
        d[q] = s[q];
}

/* GCC turns short copy and zero loops into calls of memcpy and memset with
 * run-time sizes (even copy_run's blocks), which cost more than the copies
 * in im2col's short runs: measured 15% of im2col for LeNet's layers. */
#if defined(__GNUC__) && !defined(__clang__)
#define IBVI_INLINE_RUNS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define IBVI_INLINE_RUNS
#endif

/* d[0..n) += s[0..n), in blocks of 8 for the same reason. */
static inline void add_run(float *restrict d, const float *restrict s,
                           int64_t n)
{
    int64_t q = 0;
    for (; q + 8 <= n; q += 8)
        for (int k = 0; k < 8; k++)
            d[q + k] += s[q + k];
    for (; q < n; q++)
        d[q] += s[q];
}

/* Stride 1 and the output as wide as the input (a "same" convolution:
 * 2 pad_w = kw - 1): then a tap's output position p*w_out + q reads input
 * index p*w_out + q + (i - pad_h)*w_in + j - pad_w, one offset for the
 * whole plane, so a tap's rows are one contiguous run (im2col, col2im). */
static int is_flat(const ibvi__conv2d_geom *g)
{
    return g->stride_h == 1 && g->stride_w == 1 && g->w_in == g->w_out;
}

/* Rows t0 .. t1-1 of X_col (K x ld) for nb examples starting at x; ld =
 * nb * positions. Row t = (c*kh + i)*kw + j is tap (i, j) of channel c. */
IBVI_INLINE_RUNS
static void im2col_rows(const ibvi__conv2d_geom *g, const float *x,
                        int64_t nb, float *col, int64_t t0, int64_t t1)
{
    const int64_t H = g->h_in, W = g->w_in, HW = g->positions;
    const int64_t wo = g->w_out, sh = g->stride_h, sw = g->stride_w;
    const int64_t ld = nb * HW;
    const int flat = is_flat(g);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t c = t / (g->kh * g->kw), i = t / g->kw % g->kh;
        const int64_t j = t % g->kw;
        int64_t p_lo, p_hi;
        valid_range(H, g->h_out, sh, g->pad_h, i, &p_lo, &p_hi);
        int64_t q_lo, q_hi;
        valid_range(W, wo, sw, g->pad_w, j, &q_lo, &q_hi);
        const int64_t shift = j - g->pad_w; /* iw = q*sw + shift */
        const int64_t offset = (i - g->pad_h) * W + shift;
        float *row = col + ((c * g->kh + i) * g->kw + j) * ld;
        for (int64_t b = 0; b < nb; b++) {
            const float *plane = x + b * g->in_size + c * H * W;
            float *dst = row + b * HW;
            if (p_lo > 0)
                memset(dst, 0, (size_t)(p_lo * wo) * sizeof(float));
            if (flat && p_lo < p_hi) {
                /* Input and output rows have one width and stride
                 * 1: this tap's values are the plane shifted by a
                 * constant, one copy from the first valid value to
                 * the last, then the columns that wrapped around a
                 * row's end (the padding) are set to 0. */
                const int64_t first = p_lo * wo + q_lo;
                const int64_t last = (p_hi - 1) * wo + q_hi;
                memcpy(dst + first, plane + first + offset,
                       (size_t)(last - first) * sizeof(float));
                for (int64_t p = p_lo; p < p_hi; p++) {
                    float *restrict d = dst + p * wo;
                    for (int64_t q = 0; q < q_lo; q++)
                        d[q] = 0.0f;
                    for (int64_t q = q_hi; q < wo; q++)
                        d[q] = 0.0f;
                }
            } else if (sw == 1 && q_lo == 0 && q_hi == wo) {
                /* Whole runs (no padding in this tap's columns):
                 * offsets that step, nothing recomputed per run
                 * (measured 2x faster on 10-value runs). */
                int64_t from = (p_lo * sh - g->pad_h + i) * W + shift;
                for (int64_t p = p_lo; p < p_hi; p++) {
                    copy_run(dst + p * wo, plane + from, wo);
                    from += sh * W;
                }
            } else {
                for (int64_t p = p_lo; p < p_hi; p++) {
                    const float *restrict src =
                        plane + (p * sh - g->pad_h + i) * W;
                    float *restrict d = dst + p * wo;
                    for (int64_t q = 0; q < q_lo; q++)
                        d[q] = 0.0f;
                    if (sw == 1)
                        copy_run(d + q_lo, src + q_lo + shift,
                                 q_hi - q_lo);
                    else if (sw == 2) /* a constant stride
                                         vectorises */
                        for (int64_t q = q_lo; q < q_hi; q++)
                            d[q] = src[2 * q + shift];
                    else
                        for (int64_t q = q_lo; q < q_hi; q++)
                            d[q] = src[q * sw + shift];
                    for (int64_t q = q_hi; q < wo; q++)
                        d[q] = 0.0f;
                }
            }
            if (p_hi < g->h_out)
                memset(dst + p_hi * wo, 0,
                       (size_t)((g->h_out - p_hi) * wo) *
                           sizeof(float));
        }
    }
}

/* Channels c0 .. c1-1 of dx (nb x in_size) = col2im(col): the adjoint of
 * im2col, each column entry added to the input value it was copied from;
 * channel c reads only X_col's rows of channel c. In a flat convolution
 * (is_flat) the entries of the columns that wrap around a row's end (they
 * belong to the padding) are set to 0 in col first, so each tap is one
 * contiguous add; dx starts at +0 and a sum that starts at +0 is never -0,
 * so adding those zeros changes no bit. */
IBVI_INLINE_RUNS
static void col2im_channels(const ibvi__conv2d_geom *g, float *col,
                            int64_t nb, float *dx, int64_t c0, int64_t c1)
{
    const int64_t H = g->h_in, W = g->w_in, HW = g->positions;
    const int64_t wo = g->w_out, sh = g->stride_h, sw = g->stride_w;
    const int64_t ld = nb * HW;
    const int flat = is_flat(g);
    for (int64_t b = 0; b < nb; b++)
        memset(dx + b * g->in_size + c0 * H * W, 0,
               (size_t)((c1 - c0) * H * W) * sizeof(float));
    for (int64_t c = c0; c < c1; c++)
        for (int64_t i = 0; i < g->kh; i++) {
            int64_t p_lo, p_hi;
            valid_range(H, g->h_out, sh, g->pad_h, i, &p_lo, &p_hi);
            for (int64_t j = 0; j < g->kw; j++) {
                int64_t q_lo, q_hi;
                valid_range(W, wo, sw, g->pad_w, j, &q_lo, &q_hi);
                const int64_t shift = j - g->pad_w;
                const int64_t offset = (i - g->pad_h) * W + shift;
                float *row = col + ((c * g->kh + i) * g->kw + j) * ld;
                for (int64_t b = 0; b < nb; b++) {
                    float *plane = dx + b * g->in_size + c * H * W;
                    float *src = row + b * HW;
                    if (flat && p_lo < p_hi) {
                        const int64_t first = p_lo * wo + q_lo;
                        const int64_t last = (p_hi - 1) * wo + q_hi;
                        for (int64_t p = p_lo; p < p_hi; p++) {
                            float *restrict s = src + p * wo;
                            for (int64_t q = 0; q < q_lo; q++)
                                s[q] = 0.0f;
                            for (int64_t q = q_hi; q < wo; q++)
                                s[q] = 0.0f;
                        }
                        add_run(plane + first + offset, src + first,
                                last - first);
                    } else if (sw == 1 && q_lo == 0 && q_hi == wo) {
                        int64_t to = (p_lo * sh - g->pad_h + i) * W + shift;
                        for (int64_t p = p_lo; p < p_hi; p++) {
                            add_run(plane + to, src + p * wo, wo);
                            to += sh * W;
                        }
                    } else {
                        for (int64_t p = p_lo; p < p_hi; p++) {
                            float *restrict d =
                                plane + (p * sh - g->pad_h + i) * W;
                            const float *restrict s = src + p * wo;
                            if (sw == 1)
                                add_run(d + q_lo + shift, s + q_lo,
                                        q_hi - q_lo);
                            else
                                for (int64_t q = q_lo; q < q_hi; q++)
                                    d[q * sw + shift] += s[q];
                        }
                    }
                }
            }
        }
}

/* Channels o0 .. o1-1 of y (nb examples, NCHW) = Y_col (c_out x nb*HW)
 * plus the bias (none when bias is NULL). ycol may be y itself (one
 * example: in place). */
static void scatter_channels(const ibvi__conv2d_geom *g, const float *ycol,
                             int64_t nb, float *y, const float *bias,
                             int64_t o0, int64_t o1)
{
    const int64_t HW = g->positions, ld = nb * HW;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t o = o0; o < o1; o++) {
            const float *s = ycol + o * ld + b * HW;
            float *d = y + b * g->out_size + o * HW;
            if (!bias) {
                memcpy(d, s, (size_t)HW * sizeof(float));
                continue;
            }
            const float bo = bias[o];
            for (int64_t p = 0; p < HW; p++)
                d[p] = s[p] + bo;
        }
}

/* The sum of src[0..n) as gather_dy adds it up: eight running sums, so
 * the reduction vectorises (a single float sum would not without
 * reassociation) and stays in one fixed order; with dst, the values are
 * copied there in the same pass. */
static inline float run_sum(const float *restrict src, float *restrict dst,
                            int64_t n)
{
    const int64_t bulk = n & ~(int64_t)7;
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (dst)
        for (int64_t p = 0; p < bulk; p += 8)
            for (int k = 0; k < 8; k++) {
                const float v = src[p + k];
                dst[p + k] = v;
                lane[k] += v;
            }
    else
        for (int64_t p = 0; p < bulk; p += 8)
            for (int k = 0; k < 8; k++)
                lane[k] += src[p + k];
    float sum = 0.0f;
    for (int64_t p = bulk; p < n; p++) {
        if (dst)
            dst[p] = src[p];
        sum += src[p];
    }
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    return sum;
}

/* Channels o0 .. o1-1 of dY_col (c_out x ld) from nb examples of dy
 * (NCHW), and when bias is not NULL, bias[o] += the sum of channel o's
 * values, example by example. dycol NULL: one example (nb = 1), whose dy
 * is its dY_col already; only the sums are taken. */
static void gather_channels(const ibvi__conv2d_geom *g, const float *dy,
                            int64_t nb, float *dycol, float *bias, int64_t o0,
                            int64_t o1)
{
    const int64_t HW = g->positions, ld = nb * HW;
    for (int64_t o = o0; o < o1; o++)
        for (int64_t b = 0; b < nb; b++) {
            const float *restrict src = dy + b * g->out_size + o * HW;
            float *restrict dst = dycol ? dycol + o * ld + b * HW : NULL;
            if (!bias) {
                if (dst)
                    memcpy(dst, src, (size_t)HW * sizeof(float));
                continue;
            }
            bias[o] += run_sum(src, dst, HW);
        }
}

/* ---- the passes around the GEMMs, split across threads ----------------------
 * Each pass is split into ranges whose outputs are disjoint (X_col's rows,
 * dx's channels, the output's and dY_col's channels), and every value is
 * computed as one thread computes it, so the result is the same bits for
 * any thread count (lib/parallel.h). */

typedef enum conv_pass { IM2COL, COL2IM, SCATTER, GATHER } conv_pass;

typedef struct conv_job {
    const ibvi__conv2d_geom *g;
    conv_pass pass;
    int64_t nb;
    const float *in;  /* im2col: x; scatter: Y_col; gather: dy    */
    float *col;       /* im2col: X_col (out); col2im: dX_col (in) */
    float *out;       /* col2im: dx; scatter: y; gather: dY_col   */
    const float *bias; /* scatter                                 */
    float *sums;      /* gather: the bias gradient, or NULL       */
} conv_job;

static void conv_span(void *arg, int64_t i0, int64_t i1)
{
    const conv_job *j = arg;
    switch (j->pass) {
    case IM2COL:
        im2col_rows(j->g, j->in, j->nb, j->col, i0, i1);
        break;
    case COL2IM:
        col2im_channels(j->g, j->col, j->nb, j->out, i0, i1);
        break;
    case SCATTER:
        scatter_channels(j->g, j->in, j->nb, j->out, j->bias, i0, i1);
        break;
    case GATHER:
        gather_channels(j->g, j->in, j->nb, j->out, j->sums, i0, i1);
        break;
    }
}

/* Runs the pass over [0, n) with at least grain floats written per range
 * (lib/parallel.h's grain for passes of a few operations per float). */
static void conv_run(int32_t threads, const conv_job *j, int64_t n,
                     int64_t floats_per_index)
{
    ibvi__parallel_for(ibvi__threads_in_effect(threads), n,
                       IBVI__PARALLEL_GRAIN_FLOATS / floats_per_index + 1,
                       conv_span, (void *)j);
}

static void im2col(int32_t threads, const ibvi__conv2d_geom *g,
                   const float *x, int64_t nb, float *col)
{
    const conv_job j = {.g = g, .pass = IM2COL, .nb = nb, .in = x, .col = col};
    conv_run(threads, &j, g->patch, nb * g->positions);
}

static void col2im(int32_t threads, const ibvi__conv2d_geom *g, float *col,
                   int64_t nb, float *dx)
{
    const conv_job j = {.g = g, .pass = COL2IM, .nb = nb, .col = col, .out = dx};
    conv_run(threads, &j, g->c_in, nb * g->positions * g->kh * g->kw);
}

static void scatter_y(int32_t threads, const ibvi__conv2d_geom *g,
                      const float *ycol, int64_t nb, float *y,
                      const float *bias)
{
    const conv_job j = {.g = g, .pass = SCATTER, .nb = nb, .in = ycol,
                        .out = y, .bias = bias};
    conv_run(threads, &j, g->c_out, nb * g->positions);
}

static void gather_dy(int32_t threads, const ibvi__conv2d_geom *g,
                      const float *dy, int64_t nb, float *dycol, float *bias)
{
    const conv_job j = {.g = g, .pass = GATHER, .nb = nb, .in = dy,
                        .out = dycol, .sums = bias};
    conv_run(threads, &j, g->c_out, nb * g->positions);
}

void ibvi__conv2d_forward(int32_t threads, const ibvi__conv2d_geom *g,
                          const float *theta, const float *input,
                          float *output, int64_t rows, float *scratch)
{
    const int64_t K = g->patch, HW = g->positions, co = g->c_out;
    const float *bias = g->bias ? theta + co * K : NULL;
    for (int64_t r0 = 0; r0 < rows; r0 += g->chunk) {
        const int64_t nb = rows - r0 < g->chunk ? rows - r0 : g->chunk;
        const int64_t ld = nb * HW;
        float *col = scratch;
        /* One example: Y_col is its output (c_out x HW), so the GEMM
         * writes there and the bias is added in place. */
        float *ycol = nb == 1 ? output + r0 * g->out_size : scratch + K * ld;
        im2col(threads, g, input + r0 * g->in_size, nb, col);
        ibvi__gemm(threads, 0, 0, co, ld, K, 1.0f, theta, K, col, ld, 0.0f,
                   ycol, ld);
        if (ycol != output + r0 * g->out_size || bias)
            scatter_y(threads, g, ycol, nb, output + r0 * g->out_size, bias);
    }
}

void ibvi__conv2d_backward(int32_t threads, const ibvi__conv2d_geom *g,
                           const float *theta, const float *input,
                           const float *grad_output, float *grad_input,
                           float *grad_theta, int64_t rows, float *scratch)
{
    const int64_t K = g->patch, HW = g->positions, co = g->c_out;
    float *grad_bias = grad_theta && g->bias ? grad_theta + co * K : NULL;
    if (grad_theta)
        memset(grad_theta, 0, (size_t)g->params * sizeof(float));
    if (!grad_theta && !grad_input)
        return;
    for (int64_t r0 = 0; r0 < rows; r0 += g->chunk) {
        const int64_t nb = rows - r0 < g->chunk ? rows - r0 : g->chunk;
        const int64_t ld = nb * HW;
        float *col = scratch;
        /* One example's dy is its dY_col (c_out x HW): no copy. */
        float *gathered = nb == 1 ? NULL : scratch + K * ld;
        const float *dycol =
            gathered ? gathered : grad_output + r0 * g->out_size;
        if (gathered || grad_bias)
            gather_dy(threads, g, grad_output + r0 * g->out_size, nb,
                      gathered, grad_bias);
        if (grad_theta) {
            im2col(threads, g, input + r0 * g->in_size, nb, col);
            ibvi__gemm(threads, 0, 1, co, K, ld, 1.0f, dycol, ld, col, ld,
                       r0 == 0 ? 0.0f : 1.0f, grad_theta, K);
        }
        if (grad_input) {
            ibvi__gemm(threads, 1, 0, K, ld, co, 1.0f, theta, K, dycol, ld,
                       0.0f, col, ld);
            col2im(threads, g, col, nb, grad_input + r0 * g->in_size);
        }
    }
}

/* ---- the layer kind (layer_ops.h) -----------------------------------------
 * The builders put an ibvi_conv2d_options in layer->conv.options; configure
 * derives the geometry from it and the input shape. theta = [vec(W); b]
 * (vec(W) without a bias) is deterministic or a low-rank Gaussian (gaussian.c), like a dense layer's. */

static int configure(ibvi_layer *layer, const char *fn)
{
    const ibvi_conv2d_options *o = &layer->conv.options;
    ibvi__conv2d_geom *g = &layer->conv.geom;
    const ibvi__shape in = layer->in_shape;
    const int st = ibvi__conv2d_geometry(g, in.c, in.h, in.w, o->out_channels,
                                         o->kernel_h, o->kernel_w, o->stride_h,
                                         o->stride_w, o->pad_h, o->pad_w, fn);
    if (st)
        return st;
    if (o->no_bias)
        ibvi__conv2d_without_bias(g);
    const int64_t weights = g->c_out * g->patch;
    layer->out_shape = (ibvi__shape){(int32_t)g->c_out, (int32_t)g->h_out,
                                     (int32_t)g->w_out};
    layer->params = g->params;
    layer->group_count = g->bias ? 2 : 1;
    /* The muP fans: a filter reads c_in*kh*kw values, and each
     * input value reaches c_out*kh*kw outputs (away from the border). */
    layer->groups[0] = (ibvi__param_group){.offset = 0, .count = weights,
                                           .fan_in = g->patch,
                                           .fan_out = g->c_out * g->kh * g->kw,
                                           .role = IBVI__GROUP_WEIGHT};
    layer->groups[1] = (ibvi__param_group){.offset = weights,
                                           .count = g->c_out, .fan_in = 1,
                                           .fan_out = g->c_out,
                                           .role = IBVI__GROUP_BIAS};
    return IBVI_OK;
}

static int64_t scratch_floats(const ibvi_layer *layer, int64_t rows)
{
    return ibvi__conv2d_scratch_floats(&layer->conv.geom, rows);
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    ibvi__conv2d_forward(layer->net->threads, &layer->conv.geom, theta, in,
                         out, rows, scratch);
}

/* bound[0], bound[1]: max |dW| and max |db|, measured. theta is small
 * next to the activations (LeNet's first conv: 156 values against 100352 x
 * 6 of dy per batch of 128), so reading it is cheaper than the analytic
 * bound dense.c uses, which scans dy and the input; a non-finite dy or
 * input reaches dtheta, which the measured maximum then reports. */
static void backward(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound)
{
    ibvi__conv2d_backward(layer->net->threads, &layer->conv.geom, theta, in,
                          dy, dx, dtheta, rows, scratch);
    if (bound)
        ibvi__group_max_abs(layer, dtheta, bound);
}

const ibvi__layer_ops ibvi__conv2d_ops = {
    .name = "conv2d",
    .flags = IBVI__OPS_WEIGHT_MATRIX | IBVI__OPS_VARIATIONAL |
             IBVI__OPS_LINEAR_IN_THETA,
    .configure = configure,
    .scratch_floats = scratch_floats,
    .forward = forward,
    .backward = backward,
};

static int add_conv2d(ibvi_net *net, const char *fn,
                      const ibvi_conv2d_options *options)
{
    ibvi_layer proto;
    memset(&proto, 0, sizeof proto);
    proto.conv.options = *options;
    return ibvi__net_add_layer(net, fn, IBVI__KIND_CONV2D, &proto,
                               options->rank);
}

int ibvi_net_add_conv2d(ibvi_net *net, int32_t out_channels, int32_t kernel,
                        int32_t stride, int32_t padding, int32_t rank)
{
    const ibvi_conv2d_options o = {IBVI_CONV2D_OPTIONS_VERSION, out_channels,
                                   kernel, kernel, stride, stride, padding,
                                   padding, rank, 0};
    return add_conv2d(net, "ibvi_net_add_conv2d", &o);
}

int ibvi_net_add_conv2d_ex(ibvi_net *net, const ibvi_conv2d_options *options)
{
    static const char fn[] = "ibvi_net_add_conv2d_ex";
    IBVI_CHECK_NOT_NULL(fn, net);
    IBVI_CHECK_NOT_NULL(fn, options);
    if (options->version < 1 || options->version > IBVI_CONV2D_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->version = %u, expected 1 .. %d "
                          "(IBVI_CONV2D_OPTIONS_VERSION; start from "
                          "IBVI_CONV2D_OPTIONS_INIT)",
                          fn, (unsigned)options->version,
                          IBVI_CONV2D_OPTIONS_VERSION);
    /* Only the fields of the caller's version: a version-1 struct ends
     * before no_bias. */
    ibvi_conv2d_options o = {IBVI_CONV2D_OPTIONS_VERSION,
                             options->out_channels, options->kernel_h,
                             options->kernel_w, options->stride_h,
                             options->stride_w, options->pad_h,
                             options->pad_w, options->rank, 0};
    if (options->version >= 2) {
        if (options->no_bias != 0 && options->no_bias != 1)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: options->no_bias = %d, expected 0 (a bias "
                              "per output channel) or 1 (none)",
                              fn, (int)options->no_bias);
        o.no_bias = options->no_bias;
    }
    return add_conv2d(net, fn, &o);
}

/*
 * The math of the image layers (lib/image.h): convolution, max, average and
 * global average pooling, group normalisation.
 *
 *   - forward passes against naive double-precision references (a direct
 *     7-loop convolution, window loops, two-pass group statistics) over a
 *     grid of shapes: strides 1-3, padding 0-2, non-square kernels, one and
 *     several channels, 1x1 kernels, outputs of size 1, 1 and 5 examples,
 *     and the batch split into chunks of 1, 2 and all examples;
 *   - backward passes against the naive adjoint on the same grid, and
 *     against central differences of L = sum(dy * y) through the layer's
 *     own forward, for theta and the input;
 *   - the NULL paths (no dx, no dtheta), that backward overwrites, and two
 *     BLIS threads;
 *   - max pooling's ties (first maximum in row-major order) and NaN;
 *   - the geometry constructors' errors: status and a message naming the
 *     calling function.
 * Buffers are allocated to their exact size, so the sanitizer builds catch
 * any access past them; scratch also carries a canary checked afterwards.
 *
 * This suite compiles the layer files (and the kernels they call) in: they
 * are not part of the library's public API.
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibvi/ibvi.h"
#include "image.h"
#include "network.h"

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static void seed(uint64_t s) { rng_state = s * 0x9e3779b97f4a7c15ull + 1; }

/* Uniform in [-1, 1) (xorshift64*). */
static float uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    const uint64_t v = rng_state * 0x2545f4914f6cdd1dull;
    return (float)((double)(v >> 40) / (double)(1ull << 23) - 1.0);
}

static float *random_floats(int64_t n)
{
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = uniform();
    return v;
}

static float *filled(int64_t n, float value)
{
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = value;
    return v;
}

#define CANARY 8
static const float canary_value = 12345.678f;

/* Scratch of n floats followed by CANARY guard values. */
static float *scratch_alloc(int64_t n)
{
    float *s = filled(n + CANARY, -777.0f);
    for (int k = 0; k < CANARY; k++)
        s[n + k] = canary_value;
    return s;
}

static void scratch_check(const float *s, int64_t n)
{
    for (int k = 0; k < CANARY; k++)
        ck_assert_msg(s[n + k] == canary_value,
                      "scratch written past its %lld floats", (long long)n);
}

/* |got - want| <= tol * scale for every entry, scale[i] (or 1 when NULL)
 * the natural size of entry i. */
static void assert_close(const char *what, const float *got,
                         const double *want, const double *scale, int64_t n,
                         double tol)
{
    for (int64_t i = 0; i < n; i++) {
        const double s = scale ? scale[i] : 1.0;
        const double err = fabs((double)got[i] - want[i]);
        ck_assert_msg(err <= tol * (s > 1e-30 ? s : 1e-30),
                      "%s[%lld]: got %.9g, want %.9g (scale %.3g)", what,
                      (long long)i, (double)got[i], want[i], s);
    }
}

static double *dalloc(int64_t n)
{
    double *v = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    ck_assert_ptr_nonnull(v);
    return v;
}

/* Asserts `call` returns `status` and the message names `fn` and contains
 * `part` (when not NULL). */
#define CK_FAILS(call, status, fn, part)                                      \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        const int st_ = (call);                                               \
        ck_assert_msg(st_ == (status), "%s returned %d, expected %d (%s)",    \
                      #call, st_, (int)(status), ibvi_last_error());          \
        ck_assert_msg(strncmp(ibvi_last_error(), fn ": ", strlen(fn) + 2) ==  \
                          0,                                                  \
                      "message does not start with the function: %s",         \
                      ibvi_last_error());                                     \
        const char *part_ = (part);                                           \
        ck_assert_msg(part_ == NULL || strstr(ibvi_last_error(), part_),      \
                      "message '%s' lacks '%s'", ibvi_last_error(),           \
                      part_ ? part_ : "");                                    \
    } while (0)

/* ---- convolution: references ---------------------------------------------- */

typedef struct {
    int64_t c_in, h, w, c_out, kh, kw, sh, sw, ph, pw;
} conv_case;

static double conv_x(const ibvi__conv2d_geom *g, const float *x, int64_t r,
                     int64_t c, int64_t ih, int64_t iw)
{
    if (ih < 0 || ih >= g->h_in || iw < 0 || iw >= g->w_in)
        return 0.0;
    return x[r * g->in_size + (c * g->h_in + ih) * g->w_in + iw];
}

/* The direct 7-loop convolution: y and, per entry, sum |terms| as scale. */
static void conv_reference(const ibvi__conv2d_geom *g, const float *theta,
                           const float *x, int64_t rows, double *y,
                           double *scale)
{
    const int64_t K = g->patch;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < g->c_out; o++)
            for (int64_t p = 0; p < g->h_out; p++)
                for (int64_t q = 0; q < g->w_out; q++) {
                    double sum = theta[g->c_out * K + o];
                    double mag = fabs(sum);
                    for (int64_t c = 0; c < g->c_in; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                const double t =
                                    theta[o * K + (c * g->kh + i) * g->kw + j] *
                                    conv_x(g, x, r, c,
                                           p * g->stride_h - g->pad_h + i,
                                           q * g->stride_w - g->pad_w + j);
                                sum += t;
                                mag += fabs(t);
                            }
                    const int64_t at =
                        r * g->out_size + (o * g->h_out + p) * g->w_out + q;
                    y[at] = sum;
                    scale[at] = mag;
                }
}

/* The adjoint by the same loops: dtheta, dx and their scales. */
static void conv_reference_backward(const ibvi__conv2d_geom *g,
                                    const float *theta, const float *x,
                                    const float *dy, int64_t rows,
                                    double *dtheta, double *dtheta_scale,
                                    double *dx, double *dx_scale)
{
    const int64_t K = g->patch;
    memset(dtheta, 0, (size_t)g->params * sizeof(double));
    memset(dtheta_scale, 0, (size_t)g->params * sizeof(double));
    memset(dx, 0, (size_t)(rows * g->in_size) * sizeof(double));
    memset(dx_scale, 0, (size_t)(rows * g->in_size) * sizeof(double));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < g->c_out; o++)
            for (int64_t p = 0; p < g->h_out; p++)
                for (int64_t q = 0; q < g->w_out; q++) {
                    const double d =
                        dy[r * g->out_size + (o * g->h_out + p) * g->w_out + q];
                    dtheta[g->c_out * K + o] += d;
                    dtheta_scale[g->c_out * K + o] += fabs(d);
                    for (int64_t c = 0; c < g->c_in; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                const int64_t ih = p * g->stride_h - g->pad_h + i;
                                const int64_t iw = q * g->stride_w - g->pad_w + j;
                                const int64_t wi =
                                    o * K + (c * g->kh + i) * g->kw + j;
                                const double xv = conv_x(g, x, r, c, ih, iw);
                                dtheta[wi] += d * xv;
                                dtheta_scale[wi] += fabs(d * xv);
                                if (ih < 0 || ih >= g->h_in || iw < 0 ||
                                    iw >= g->w_in)
                                    continue;
                                const int64_t xi = r * g->in_size +
                                                   (c * g->h_in + ih) * g->w_in +
                                                   iw;
                                dx[xi] += d * theta[wi];
                                dx_scale[xi] += fabs(d * theta[wi]);
                            }
                }
}

static const conv_case conv_grid[] = {
    /* c_in h  w  c_out kh kw sh sw ph pw */
    {1, 5, 5, 1, 3, 3, 1, 1, 0, 0},
    {1, 7, 6, 2, 3, 3, 2, 2, 1, 1},
    {3, 8, 7, 4, 3, 2, 1, 2, 2, 1},  /* non-square kernel, pad 2 */
    {2, 9, 9, 3, 5, 5, 3, 3, 2, 2},  /* stride 3 */
    {2, 6, 5, 3, 1, 1, 1, 1, 0, 0},  /* 1x1 kernel */
    {3, 6, 6, 2, 1, 1, 2, 3, 0, 0},  /* 1x1 kernel, strided */
    {2, 4, 4, 3, 4, 4, 1, 1, 0, 0},  /* output 1x1 */
    {1, 3, 3, 2, 5, 5, 1, 1, 1, 1},  /* kernel > input, fits the padding */
    {2, 5, 8, 3, 2, 3, 3, 1, 1, 2},  /* mixed strides, w pad 2 */
    {4, 10, 3, 5, 3, 3, 1, 1, 1, 0}, /* narrow input */
    {1, 1, 1, 2, 1, 1, 1, 1, 0, 0},  /* one pixel */
    {2, 7, 6, 3, 3, 3, 2, 1, 0, 0},  /* stride 2 down, 1 across, whole runs */
    {2, 12, 12, 6, 5, 5, 1, 1, 2, 2},
    /* "Same" width at stride 1 (lib/conv2d.c's flat path: one run per
     * tap): 3x3 pad 1 on a non-square input, rows that shrink (kh 3, ph 0)
     * under a 5-wide kernel with pad 2, a 1x3 kernel. */
    {3, 7, 6, 2, 3, 3, 1, 1, 1, 1},
    {2, 6, 7, 3, 3, 5, 1, 1, 0, 2},
    {1, 4, 9, 2, 1, 3, 1, 1, 0, 1},
};

static void make_geom(ibvi__conv2d_geom *g, const conv_case *c)
{
    const int st = ibvi__conv2d_geometry(g, c->c_in, c->h, c->w, c->c_out,
                                         c->kh, c->kw, c->sh, c->sw, c->ph,
                                         c->pw, "test");
    ck_assert_msg(st == 0, "geometry failed: %s", ibvi_last_error());
}

/* Forward and backward on case c with rows examples and chunk size chunk
 * (0: the geometry's own), against the references. */
static void conv_check_case(const conv_case *c, int64_t rows, int64_t chunk)
{
    ibvi__conv2d_geom g;
    make_geom(&g, c);
    if (chunk > 0)
        g.chunk = chunk;
    const int64_t nx = rows * g.in_size, ny = rows * g.out_size;
    float *theta = random_floats(g.params);
    float *x = random_floats(nx);
    float *dy = random_floats(ny);
    float *y = filled(ny, NAN);
    float *dx = filled(nx, 1e30f);       /* backward must overwrite */
    float *dtheta = filled(g.params, 1e30f);
    const int64_t ns = ibvi__conv2d_scratch_floats(&g, rows);
    float *scratch = scratch_alloc(ns);
    double *y_ref = dalloc(ny), *y_scale = dalloc(ny);
    double *dt_ref = dalloc(g.params), *dt_scale = dalloc(g.params);
    double *dx_ref = dalloc(nx), *dx_scale = dalloc(nx);

    ibvi__conv2d_forward(1, &g, theta, x, y, rows, scratch);
    scratch_check(scratch, ns);
    conv_reference(&g, theta, x, rows, y_ref, y_scale);
    assert_close("conv y", y, y_ref, y_scale, ny, 1e-4);

    ibvi__conv2d_backward(1, &g, theta, x, dy, dx, dtheta, rows, scratch);
    scratch_check(scratch, ns);
    conv_reference_backward(&g, theta, x, dy, rows, dt_ref, dt_scale, dx_ref,
                            dx_scale);
    assert_close("conv dtheta", dtheta, dt_ref, dt_scale, g.params, 1e-4);
    assert_close("conv dx", dx, dx_ref, dx_scale, nx, 1e-4);

    free(theta), free(x), free(dy), free(y), free(dx), free(dtheta);
    free(scratch), free(y_ref), free(y_scale), free(dt_ref), free(dt_scale);
    free(dx_ref), free(dx_scale);
}

START_TEST(conv_against_reference)
{
    seed(1);
    const int n = (int)(sizeof conv_grid / sizeof conv_grid[0]);
    for (int i = 0; i < n; i++) {
        conv_check_case(&conv_grid[i], 1, 0);
        conv_check_case(&conv_grid[i], 5, 0);
        conv_check_case(&conv_grid[i], 5, 2); /* chunks of 2, 2, 1 */
        conv_check_case(&conv_grid[i], 5, 1);
    }
}
END_TEST

START_TEST(conv_geometry_values)
{
    ibvi__conv2d_geom g;
    /* Classic LeNet on 28x28: 1 -> 6 channels, 5x5, padding 2. */
    ck_assert_int_eq(ibvi__conv2d_geometry(&g, 1, 28, 28, 6, 5, 5, 1, 1, 2, 2,
                                           "t"), 0);
    ck_assert_int_eq(g.h_out, 28);
    ck_assert_int_eq(g.w_out, 28);
    ck_assert_int_eq(g.patch, 25);
    ck_assert_int_eq(g.params, 6 * 25 + 6);
    ck_assert_int_eq(g.out_size, 6 * 28 * 28);
    /* Floor: (7 + 2 - 3) / 2 + 1 = 4, (6 - 2) / 3 + 1 = 2. */
    ck_assert_int_eq(ibvi__conv2d_geometry(&g, 2, 7, 6, 3, 3, 2, 2, 3, 1, 0,
                                           "t"), 0);
    ck_assert_int_eq(g.h_out, 4);
    ck_assert_int_eq(g.w_out, 2);
    /* The scratch is bounded whatever the batch, and covers the batch
     * when it is small. */
    ck_assert_int_eq(ibvi__conv2d_scratch_floats(&g, 0), 0);
    ck_assert_int_eq(ibvi__conv2d_scratch_floats(&g, 3),
                     3 * g.positions * (g.patch + g.c_out));
    /* 22528 floats per example: chunks of 11 examples, within 1 MiB. */
    ck_assert_int_eq(ibvi__conv2d_geometry(&g, 8, 16, 16, 16, 3, 3, 1, 1, 1,
                                           1, "t"), 0);
    ck_assert_int_eq(g.chunk, 11);
    ck_assert_int_eq(ibvi__conv2d_scratch_floats(&g, 1000000), 11 * 22528);
    ck_assert_int_le(ibvi__conv2d_scratch_floats(&g, 1000000), 1 << 18);
    /* One example above the budget: chunks of one. */
    ck_assert_int_eq(ibvi__conv2d_geometry(&g, 16, 64, 64, 32, 3, 3, 1, 1, 1,
                                           1, "t"), 0);
    ck_assert_int_eq(g.chunk, 1);
    ck_assert_int_eq(ibvi__conv2d_scratch_floats(&g, 1000000),
                     64 * 64 * (16 * 9 + 32));
}
END_TEST

/* ---- finite differences ------------------------------------------------------
 * L(v) = sum dy * f(v) in double; the central difference at each entry of v
 * against the analytic gradient. */

typedef void (*forward_fn)(void *ctx, float *out);

static double loss_of(forward_fn f, void *ctx, const float *dy, float *out,
                      int64_t n_out)
{
    f(ctx, out);
    double l = 0.0;
    for (int64_t i = 0; i < n_out; i++)
        l += (double)dy[i] * out[i];
    return l;
}

/* Checks grad (n entries) = dL/dv, v perturbed in place by +-h. tol is
 * relative to max(|numeric|, max over the vector |numeric| * floor). */
static void fd_check(const char *what, forward_fn f, void *ctx, float *v,
                     int64_t n, const float *grad, const float *dy,
                     int64_t n_out, float h, double tol)
{
    float *out = filled(n_out, 0.0f);
    double *num = dalloc(n);
    double max_num = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float keep = v[i];
        v[i] = keep + h;
        const double hp = (double)v[i] - keep;
        const double lp = loss_of(f, ctx, dy, out, n_out);
        v[i] = keep - h;
        const double hm = keep - (double)v[i];
        const double lm = loss_of(f, ctx, dy, out, n_out);
        v[i] = keep;
        num[i] = (lp - lm) / (hp + hm);
        if (fabs(num[i]) > max_num)
            max_num = fabs(num[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        const double scale = fmax(fabs(num[i]), 0.05 * max_num) + 1e-6;
        ck_assert_msg(fabs(grad[i] - num[i]) <= tol * scale,
                      "%s[%lld]: analytic %.7g, numeric %.7g", what,
                      (long long)i, (double)grad[i], num[i]);
    }
    free(out);
    free(num);
}

typedef struct {
    ibvi__conv2d_geom g;
    float *theta, *x, *scratch;
    int64_t rows;
} conv_ctx;

static void conv_fwd(void *p, float *out)
{
    conv_ctx *c = p;
    ibvi__conv2d_forward(1, &c->g, c->theta, c->x, out, c->rows, c->scratch);
}

START_TEST(conv_finite_differences)
{
    static const conv_case cases[] = {
        {2, 5, 4, 3, 3, 2, 2, 1, 1, 1},
        {1, 4, 4, 2, 2, 2, 3, 3, 0, 0},
        {2, 3, 3, 2, 3, 3, 1, 1, 2, 2}, /* pad 2: every tap hits padding */
        {1, 6, 5, 2, 3, 1, 2, 2, 1, 0},
        {3, 2, 2, 2, 1, 1, 1, 1, 0, 0},
    };
    seed(2);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        conv_ctx c;
        make_geom(&c.g, &cases[k]);
        c.rows = 2;
        c.g.chunk = 1; /* two chunks, so the dW accumulation is exercised */
        const int64_t nx = c.rows * c.g.in_size, ny = c.rows * c.g.out_size;
        c.theta = random_floats(c.g.params);
        c.x = random_floats(nx);
        c.scratch = scratch_alloc(ibvi__conv2d_scratch_floats(&c.g, c.rows));
        float *dy = random_floats(ny);
        float *dx = filled(nx, 0.0f), *dtheta = filled(c.g.params, 0.0f);
        ibvi__conv2d_backward(1, &c.g, c.theta, c.x, dy, dx, dtheta, c.rows,
                              c.scratch);
        /* The layer is linear in theta and in x: any step is exact but for
         * rounding, so a large one keeps rounding small. */
        fd_check("conv dtheta", conv_fwd, &c, c.theta, c.g.params, dtheta, dy,
                 ny, 0.25f, 1e-3);
        fd_check("conv dx", conv_fwd, &c, c.x, nx, dx, dy, ny, 0.25f, 1e-3);
        free(c.theta), free(c.x), free(c.scratch), free(dy), free(dx);
        free(dtheta);
    }
}
END_TEST

START_TEST(conv_null_outputs)
{
    seed(3);
    const conv_case cc = {2, 7, 6, 3, 3, 3, 2, 1, 1, 1};
    ibvi__conv2d_geom g;
    make_geom(&g, &cc);
    const int64_t rows = 3, nx = rows * g.in_size, ny = rows * g.out_size;
    float *theta = random_floats(g.params), *x = random_floats(nx);
    float *dy = random_floats(ny);
    const int64_t ns = ibvi__conv2d_scratch_floats(&g, rows);
    float *scratch = scratch_alloc(ns);
    float *dx = filled(nx, 0.0f), *dtheta = filled(g.params, 0.0f);
    float *dx2 = filled(nx, 7.0f), *dtheta2 = filled(g.params, 7.0f);
    ibvi__conv2d_backward(1, &g, theta, x, dy, dx, dtheta, rows, scratch);
    ibvi__conv2d_backward(1, &g, theta, x, dy, NULL, dtheta2, rows, scratch);
    ibvi__conv2d_backward(1, &g, theta, x, dy, dx2, NULL, rows, scratch);
    ibvi__conv2d_backward(1, &g, theta, x, dy, NULL, NULL, rows, scratch);
    scratch_check(scratch, ns);
    ck_assert_mem_eq(dtheta, dtheta2, (size_t)g.params * sizeof(float));
    ck_assert_mem_eq(dx, dx2, (size_t)nx * sizeof(float));
    /* Zero rows: nothing to read, gradients of an empty sum are 0. */
    ibvi__conv2d_forward(1, &g, theta, x, NULL, 0, scratch);
    ibvi__conv2d_backward(1, &g, theta, x, dy, NULL, dtheta2, 0, scratch);
    for (int64_t i = 0; i < g.params; i++)
        ck_assert_float_eq(dtheta2[i], 0.0f);
    free(theta), free(x), free(dy), free(scratch), free(dx), free(dtheta);
    free(dx2), free(dtheta2);
}
END_TEST

/* Two threads give the same values as one, up to the GEMM's order of
 * summation: LeNet's second layer (its passes too small to split), and a
 * layer whose im2col, col2im and the copies around the GEMMs are split
 * across the two threads (lib/conv2d.c; at least 2 x 32768 floats per
 * pass), in chunks of one and of three examples. */
START_TEST(conv_two_threads)
{
    seed(8);
    const conv_case cases[] = {{6, 14, 14, 16, 5, 5, 1, 1, 0, 0},
                               {16, 32, 32, 32, 3, 3, 1, 1, 1, 1},
                               {16, 32, 32, 32, 3, 3, 1, 1, 1, 1}};
    for (int k = 0; k < 3; k++) {
        ibvi__conv2d_geom g;
        make_geom(&g, &cases[k]);
        if (k == 2)
            g.chunk = 3;
        const int64_t rows = k == 0 ? 9 : 4;
        const int64_t nx = rows * g.in_size, ny = rows * g.out_size;
        float *theta = random_floats(g.params), *x = random_floats(nx);
        float *dy = random_floats(ny);
        float *scratch = scratch_alloc(ibvi__conv2d_scratch_floats(&g, rows));
        float *y1 = filled(ny, 0.0f), *y2 = filled(ny, 0.0f);
        float *dx1 = filled(nx, 0.0f), *dx2 = filled(nx, 0.0f);
        float *dt1 = filled(g.params, 0.0f), *dt2 = filled(g.params, 0.0f);
        ibvi__conv2d_forward(1, &g, theta, x, y1, rows, scratch);
        ibvi__conv2d_backward(1, &g, theta, x, dy, dx1, dt1, rows, scratch);
        ibvi__conv2d_forward(2, &g, theta, x, y2, rows, scratch);
        ibvi__conv2d_backward(2, &g, theta, x, dy, dx2, dt2, rows, scratch);
        for (int64_t i = 0; i < ny; i++)
            ck_assert_float_eq_tol(y1[i], y2[i], 1e-4f * (1.0f + fabsf(y1[i])));
        for (int64_t i = 0; i < nx; i++)
            ck_assert_float_eq_tol(dx1[i], dx2[i],
                                   1e-4f * (1.0f + fabsf(dx1[i])));
        for (int64_t i = 0; i < g.params; i++)
            ck_assert_float_eq_tol(dt1[i], dt2[i],
                                   1e-4f * (1.0f + fabsf(dt1[i])));
        free(theta), free(x), free(dy), free(scratch), free(y1), free(y2);
        free(dx1), free(dx2), free(dt1), free(dt2);
    }
}
END_TEST

START_TEST(conv_geometry_errors)
{
    ibvi__conv2d_geom g;
#define FN "ibvi_net_add_conv2d"
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 3, 3, 2, 5, 5, 1, 1, 0, 0, FN),
             IBVI_ERR_SHAPE, FN,
             "kernel 5x5 is larger than the padded input 3x3");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 3, 8, 2, 6, 2, 1, 1, 1, 0, FN),
             IBVI_ERR_SHAPE, FN,
             "kernel 6x2 is larger than the padded input 5x8");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 3, 2, 2, 7, 1, 1, 0, 1, FN),
             IBVI_ERR_SHAPE, FN,
             "kernel 2x7 is larger than the padded input 8x5");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, 0, 1, 0, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "stride height = 0");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, 1, -2, 0, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "stride width = -2");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, 1, 1, -1, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "padding height = -1 is negative");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, 1, 1, 0, 3, FN),
             IBVI_ERR_INVALID_ARG, FN, "padding width = 3 is not smaller");
    CK_FAILS(ibvi__conv2d_geometry(&g, 0, 8, 8, 2, 3, 3, 1, 1, 0, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "input channels = 0");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 0, 3, 3, 1, 1, 0, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "output channels = 0");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 0, 3, 1, 1, 0, 0, FN),
             IBVI_ERR_INVALID_ARG, FN, "kernel height = 0");
    /* Huge sizes: above the per-dimension limit, even far above int64 range
     * once multiplied, and tensors above 2^31 - 1 values. */
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, INT64_MAX, 8, 2, 3, 3, 1, 1, 0, 0,
                                   FN),
             IBVI_ERR_INVALID_ARG, FN, "exceeds the limit 65536");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, INT64_MAX, 1, 0, 0,
                                   FN),
             IBVI_ERR_INVALID_ARG, FN, "exceeds the limit");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 8, 8, 2, 3, 3, 1, 1, INT64_MAX, 0,
                                   FN),
             IBVI_ERR_INVALID_ARG, FN, "not smaller than the kernel");
    CK_FAILS(ibvi__conv2d_geometry(&g, 65536, 65536, 65536, 2, 3, 3, 1, 1, 0,
                                   0, FN),
             IBVI_ERR_INVALID_ARG, FN, "input 65536x65536x65536 has more than");
    CK_FAILS(ibvi__conv2d_geometry(&g, 1, 2048, 2048, 1024, 1, 1, 1, 1, 0, 0,
                                   FN),
             IBVI_ERR_INVALID_ARG, FN, "output 1024x2048x2048 has more than");
    CK_FAILS(ibvi__conv2d_geometry(&g, 65536, 300, 300, 2, 200, 200, 1, 1, 0,
                                   0, FN),
             IBVI_ERR_INVALID_ARG, FN, "has more than");
    /* At the limits, accepted. */
    ck_assert_int_eq(ibvi__conv2d_geometry(&g, 1, 65536, 1, 1, 65536, 1, 1,
                                           1, 0, 0, FN), 0);
    ck_assert_int_eq(g.h_out, 1);
#undef FN
}
END_TEST

/* ---- pooling ------------------------------------------------------------------ */

typedef struct {
    int64_t c, h, w, kh, kw, sh, sw;
} pool_case;

static const pool_case pool_grid[] = {
    {1, 4, 4, 2, 2, 2, 2},   {3, 7, 5, 2, 2, 2, 2}, /* floor: odd sizes */
    {2, 6, 6, 3, 3, 1, 1},                          /* overlapping */
    {2, 9, 8, 3, 2, 3, 2},   {1, 5, 5, 5, 5, 1, 1}, /* one window */
    {2, 5, 7, 1, 1, 1, 1},   {3, 8, 8, 2, 3, 3, 1},
    {1, 1, 1, 1, 1, 1, 1},   {2, 6, 4, 2, 2, 5, 5}, /* stride > kernel */
    {1, 3, 150, 2, 3, 1, 2},                        /* rows of 74 windows */
};

static void make_pool(ibvi__pool2d_geom *g, const pool_case *c)
{
    const int st = ibvi__pool2d_geometry(g, c->c, c->h, c->w, c->kh, c->kw,
                                         c->sh, c->sw, "test");
    ck_assert_msg(st == 0, "pool geometry failed: %s", ibvi_last_error());
}

/* Naive pooling: max (1) or mean (0) of each window. */
static void pool_reference(const ibvi__pool2d_geom *g, int max, const float *x,
                           int64_t rows, double *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t p = 0; p < g->h_out; p++)
                for (int64_t q = 0; q < g->w_out; q++) {
                    double acc = max ? -INFINITY : 0.0;
                    for (int64_t i = 0; i < g->kh; i++)
                        for (int64_t j = 0; j < g->kw; j++) {
                            const double v =
                                x[r * g->in_size +
                                  (c * g->h_in + p * g->stride_h + i) *
                                      g->w_in +
                                  q * g->stride_w + j];
                            acc = max ? fmax(acc, v) : acc + v;
                        }
                    if (!max)
                        acc /= (double)(g->kh * g->kw);
                    y[r * g->out_size + (c * g->h_out + p) * g->w_out + q] =
                        acc;
                }
}

/* Distinct values at least 1/16 apart, in random order (no ties). */
static float *distinct_floats(int64_t n)
{
    float *v = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)i / 16.0f - (float)n / 32.0f;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)((uniform() + 1.0f) * 0.5f * (float)(i + 1));
        const int64_t k = j > i ? i : j;
        const float t = v[i];
        v[i] = v[k];
        v[k] = t;
    }
    return v;
}

typedef struct {
    ibvi__pool2d_geom g;
    float *x;
    int64_t rows;
    int max;
} pool_ctx;

static void pool_fwd(void *p, float *out)
{
    pool_ctx *c = p;
    if (c->max)
        ibvi__maxpool_forward(&c->g, c->x, out, c->rows);
    else
        ibvi__avgpool_forward(&c->g, c->x, out, c->rows);
}

static void pool_check(pool_ctx *c)
{
    const int64_t nx = c->rows * c->g.in_size, ny = c->rows * c->g.out_size;
    float *y = filled(ny, NAN), *dy = random_floats(ny);
    float *dx = filled(nx, 1e30f);
    double *ref = dalloc(ny), *scale = dalloc(ny);
    pool_fwd(c, y);
    pool_reference(&c->g, c->max, c->x, c->rows, ref);
    for (int64_t i = 0; i < ny; i++)
        scale[i] = 1.0 + fabs(ref[i]);
    assert_close(c->max ? "maxpool y" : "avgpool y", y, ref, scale, ny, 1e-6);
    if (c->max)
        ibvi__maxpool_backward(&c->g, c->x, dy, dx, c->rows);
    else
        ibvi__avgpool_backward(&c->g, dy, dx, c->rows);
    /* Steps below half the gap between values: max pooling's argmax does
     * not move; average pooling is linear. */
    fd_check(c->max ? "maxpool dx" : "avgpool dx", pool_fwd, c, c->x, nx, dx,
             dy, ny, 1.0f / 64, 1e-3);
    free(y), free(dy), free(dx), free(ref), free(scale);
}

START_TEST(pool_against_reference_and_fd)
{
    seed(4);
    for (size_t k = 0; k < sizeof pool_grid / sizeof pool_grid[0]; k++)
        for (int max = 0; max <= 1; max++)
            for (int64_t rows = 1; rows <= 5; rows += 4) {
                pool_ctx c;
                make_pool(&c.g, &pool_grid[k]);
                c.rows = rows;
                c.max = max;
                /* Max pooling copies a value, exactly; average pooling
                 * sums in float, so keep its values small. */
                c.x = max ? distinct_floats(rows * c.g.in_size)
                          : random_floats(rows * c.g.in_size);
                pool_check(&c);
                free(c.x);
            }
}
END_TEST

START_TEST(global_avgpool)
{
    seed(5);
    pool_ctx c;
    ck_assert_int_eq(ibvi__pool2d_global_geometry(&c.g, 3, 5, 4, "t"), 0);
    ck_assert_int_eq(c.g.h_out, 1);
    ck_assert_int_eq(c.g.w_out, 1);
    ck_assert_int_eq(c.g.out_size, 3);
    c.rows = 5;
    c.max = 0;
    c.x = random_floats(c.rows * c.g.in_size);
    float y[15];
    ibvi__avgpool_forward(&c.g, c.x, y, c.rows);
    for (int64_t r = 0; r < c.rows; r++)
        for (int64_t ch = 0; ch < 3; ch++) {
            double sum = 0.0;
            for (int64_t i = 0; i < 20; i++)
                sum += c.x[r * 60 + ch * 20 + i];
            ck_assert_double_eq_tol(y[r * 3 + ch], sum / 20.0, 1e-6);
        }
    pool_check(&c);
    /* Every input value gets dy / (H W) of its channel. */
    float dy[15], dx[300];
    for (int i = 0; i < 15; i++)
        dy[i] = (float)(i + 1);
    ibvi__avgpool_backward(&c.g, dy, dx, c.rows);
    for (int i = 0; i < 300; i++)
        ck_assert_float_eq_tol(dx[i], dy[(i / 60) * 3 + (i % 60) / 20] / 20.0f,
                               1e-6f);
    free(c.x);
}
END_TEST

/* The 2x2, stride 2 path (lib/pool.c runs it apart from the general loops):
 * the same tie and NaN rules, every dx value written (dx starts as
 * garbage; the column and row no window covers get 0), and a -0 dy lands
 * as +0, as the general path's 0 + dy does. */
START_TEST(maxpool_2x2_ties_nan_and_cover)
{
    ibvi__pool2d_geom g;
    ck_assert_int_eq(ibvi__pool2d_geometry(&g, 1, 3, 5, 2, 2, 2, 2, "t"), 0);
    ck_assert_int_eq(g.h_out, 1);
    ck_assert_int_eq(g.w_out, 2);
    /* Window 0: ties 4 at (0,1) and (1,0): (0,1) wins. Window 1: NaN at
     * (1,2) after a larger value: the NaN wins; row 2 and column 4 lie
     * outside every window. */
    const float x[15] = {1, 4, 9, 2, 100, 4, 3, NAN, 8, 100,
                         100, 100, 100, 100, 100};
    float y[2], dy[2] = {-0.0f, 7}, dx[15];
    ibvi__maxpool_forward(&g, x, y, 1);
    ck_assert_float_eq(y[0], 4.0f);
    ck_assert(isnan(y[1]));
    for (int i = 0; i < 15; i++)
        dx[i] = 1e30f;
    ibvi__maxpool_backward(&g, x, dy, dx, 1);
    const float want[15] = {0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 15; i++) {
        ck_assert_msg(dx[i] == want[i], "dx[%d] = %g, want %g", i,
                      (double)dx[i], (double)want[i]);
        ck_assert_msg(!signbit(dx[i]), "dx[%d] is -0", i);
    }
    /* A window of equal values and one starting with NaN: the first tap. */
    const float x2[8] = {5, 5, NAN, 1, 5, 5, 2, NAN};
    ck_assert_int_eq(ibvi__pool2d_geometry(&g, 1, 2, 4, 2, 2, 2, 2, "t"), 0);
    dy[0] = 3;
    ibvi__maxpool_backward(&g, x2, dy, dx, 1);
    const float want2[8] = {3, 0, 7, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(dx[i] == want2[i], "dx[%d] = %g, want %g", i,
                      (double)dx[i], (double)want2[i]);
}
END_TEST

START_TEST(maxpool_ties_and_nan)
{
    ibvi__pool2d_geom g;
    /* One 2x3 window per channel; channel 0 all equal, channel 1 ties at
     * (0,2) and (1,0): the first in row-major order, (0,2), wins. */
    ck_assert_int_eq(ibvi__pool2d_geometry(&g, 3, 2, 3, 2, 3, 1, 1, "t"), 0);
    float x[18] = {1, 1, 1, 1, 1, 1,       /* channel 0 */
                   0, 2, 5, 5, 3, -1,      /* channel 1 */
                   1, NAN, 4, NAN, 9, 0};  /* channel 2: NaN */
    float y[3], dy[3] = {10, 20, 30}, dx[18];
    ibvi__maxpool_forward(&g, x, y, 1);
    ck_assert_float_eq(y[0], 1.0f);
    ck_assert_float_eq(y[1], 5.0f);
    ck_assert_msg(isnan(y[2]), "a window with NaN gives NaN, got %g",
                  (double)y[2]);
    ibvi__maxpool_backward(&g, x, dy, dx, 1);
    const float want[18] = {10, 0, 0, 0, 0, 0, 0, 0, 20,
                            0,  0, 0, 0, 30, 0, 0, 0, 0};
    for (int i = 0; i < 18; i++)
        ck_assert_msg(dx[i] == want[i], "dx[%d] = %g, want %g", i,
                      (double)dx[i], (double)want[i]);
    /* NaN first in the window, and a window of NaN only. */
    float x2[6] = {NAN, 7, 8, 9, 1, 2};
    ck_assert_int_eq(ibvi__pool2d_geometry(&g, 1, 2, 3, 2, 3, 1, 1, "t"), 0);
    ibvi__maxpool_forward(&g, x2, y, 1);
    ck_assert(isnan(y[0]));
    ibvi__maxpool_backward(&g, x2, dy, dx, 1);
    ck_assert_float_eq(dx[0], 10.0f);
    for (int i = 1; i < 6; i++)
        ck_assert_float_eq(dx[i], 0.0f);
}
END_TEST

START_TEST(pool_geometry_errors)
{
    ibvi__pool2d_geom g;
#define FN "ibvi_net_add_max_pool"
    CK_FAILS(ibvi__pool2d_geometry(&g, 2, 4, 4, 5, 2, 2, 2, FN),
             IBVI_ERR_SHAPE, FN, "kernel 5x2 is larger than the input 4x4");
    CK_FAILS(ibvi__pool2d_geometry(&g, 2, 4, 3, 1, 4, 1, 1, FN),
             IBVI_ERR_SHAPE, FN, "kernel 1x4 is larger than the input 4x3");
    CK_FAILS(ibvi__pool2d_geometry(&g, 2, 4, 4, 2, 2, 0, 2, FN),
             IBVI_ERR_INVALID_ARG, FN, "stride height = 0");
    CK_FAILS(ibvi__pool2d_geometry(&g, 0, 4, 4, 2, 2, 2, 2, FN),
             IBVI_ERR_INVALID_ARG, FN, "channels = 0");
    CK_FAILS(ibvi__pool2d_geometry(&g, 2, 4, -4, 2, 2, 2, 2, FN),
             IBVI_ERR_INVALID_ARG, FN, "input width = -4");
    CK_FAILS(ibvi__pool2d_geometry(&g, 2, 4, 4, 2, 2, 2, INT64_MAX, FN),
             IBVI_ERR_INVALID_ARG, FN, "exceeds the limit");
    CK_FAILS(ibvi__pool2d_geometry(&g, 65536, 65536, 65536, 2, 2, 2, 2, FN),
             IBVI_ERR_INVALID_ARG, FN, "has more than");
    CK_FAILS(ibvi__pool2d_global_geometry(&g, 2, 0, 4, FN),
             IBVI_ERR_INVALID_ARG, FN, "input height = 0");
#undef FN
}
END_TEST

/* ---- group normalisation ---------------------------------------------------- */

static void groupnorm_reference(const ibvi__groupnorm_geom *g,
                                const float *theta, const float *x,
                                int64_t rows, double *y)
{
    const int64_t n = g->in_size / g->groups, cg = g->c / g->groups;
    const int64_t hw = g->h * g->w;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < g->groups; k++) {
            const float *v = x + r * g->in_size + k * n;
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < n; i++)
                mean += v[i];
            mean /= (double)n;
            for (int64_t i = 0; i < n; i++)
                var += (v[i] - mean) * (v[i] - mean);
            var /= (double)n;
            for (int64_t i = 0; i < n; i++) {
                const int64_t c = k * cg + i / hw;
                y[r * g->in_size + k * n + i] =
                    (v[i] - mean) / sqrt(var + (double)g->eps) * theta[c] +
                    theta[g->c + c];
            }
        }
}

typedef struct {
    ibvi__groupnorm_geom g;
    float *theta, *x, *scratch;
    int64_t rows;
} gn_ctx;

static void gn_fwd(void *p, float *out)
{
    gn_ctx *c = p;
    ibvi__groupnorm_forward(&c->g, c->theta, c->x, out, c->rows, c->scratch);
}

START_TEST(groupnorm_against_reference_and_fd)
{
    static const int64_t cases[][5] = {
        /* c, h, w, groups, rows */
        {6, 3, 4, 3, 2}, {4, 2, 2, 1, 3}, {4, 3, 3, 4, 1}, /* instance norm */
        {8, 1, 1, 2, 5}, {6, 5, 2, 2, 2}, {1, 4, 4, 1, 1},
    };
    seed(6);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        gn_ctx c;
        const float eps = k % 2 ? 1e-5f : 0.1f;
        ck_assert_int_eq(ibvi__groupnorm_geometry(&c.g, cases[k][0],
                                                  cases[k][1], cases[k][2],
                                                  cases[k][3], eps, "t"),
                         0);
        c.rows = cases[k][4];
        const int64_t n = c.rows * c.g.in_size;
        const int64_t ns = ibvi__groupnorm_scratch_floats(&c.g, c.rows);
        ck_assert_int_eq(ns, c.rows * (3 * c.g.groups + 2 * c.g.c));
        c.theta = random_floats(c.g.params);
        c.x = random_floats(n);
        c.scratch = scratch_alloc(ns);
        float *y = filled(n, NAN), *dy = random_floats(n);
        float *dx = filled(n, 1e30f), *dtheta = filled(c.g.params, 1e30f);
        double *ref = dalloc(n);
        gn_fwd(&c, y);
        scratch_check(c.scratch, ns);
        groupnorm_reference(&c.g, c.theta, c.x, c.rows, ref);
        assert_close("groupnorm y", y, ref, NULL, n, 1e-5);
        ibvi__groupnorm_backward(&c.g, c.theta, c.x, dy, dx, dtheta, c.rows,
                                 c.scratch);
        /* The layer's own forward, perturbed: it rewrites the scratch, so
         * the backward above ran first. */
        fd_check("groupnorm dtheta", gn_fwd, &c, c.theta, c.g.params, dtheta,
                 dy, n, 1.0f / 64, 2e-3);
        fd_check("groupnorm dx", gn_fwd, &c, c.x, n, dx, dy, n, 1.0f / 512,
                 2e-2);
        /* NULL outputs give the same values for the other. */
        float *dx2 = filled(n, 3.0f), *dtheta2 = filled(c.g.params, 3.0f);
        gn_fwd(&c, y);
        ibvi__groupnorm_backward(&c.g, c.theta, c.x, dy, NULL, dtheta2, c.rows,
                                 c.scratch);
        ibvi__groupnorm_backward(&c.g, c.theta, c.x, dy, dx2, NULL, c.rows,
                                 c.scratch);
        ibvi__groupnorm_backward(&c.g, c.theta, c.x, dy, NULL, NULL, c.rows,
                                 c.scratch);
        ck_assert_mem_eq(dx, dx2, (size_t)n * sizeof(float));
        ck_assert_mem_eq(dtheta, dtheta2, (size_t)c.g.params * sizeof(float));
        free(c.theta), free(c.x), free(c.scratch), free(y), free(dy);
        free(dx), free(dtheta), free(ref), free(dx2), free(dtheta2);
    }
}
END_TEST

/* A group whose mean is far larger than its spread: centring in float alone
 * would lose the spread's digits. */
START_TEST(groupnorm_large_mean)
{
    seed(7);
    ibvi__groupnorm_geom g;
    ck_assert_int_eq(ibvi__groupnorm_geometry(&g, 2, 8, 8, 1, 1e-6f, "t"), 0);
    const int64_t n = g.in_size;
    float *theta = filled(g.params, 1.0f);
    for (int64_t c = 0; c < g.c; c++)
        theta[g.c + c] = 0.0f;
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = 3000.0f + 0.01f * uniform();
    float *y = filled(n, NAN), scratch[3];
    double *ref = dalloc(n);
    ibvi__groupnorm_forward(&g, theta, x, y, 1, scratch);
    groupnorm_reference(&g, theta, x, 1, ref);
    assert_close("groupnorm y, mean 3000", y, ref, NULL, n, 2e-3);
    free(theta), free(x), free(y), free(ref);
}
END_TEST

/* The kind splits its rows across the network's threads: with two threads
 * (enough rows for two chunks) its output, dx and dtheta are bitwise the
 * single-threaded math's. */
START_TEST(groupnorm_kind_threads)
{
    ibvi_net *net = NULL;
    ck_assert_int_eq(ibvi_net_create_image(&net, 4, 6, 6, NULL), 0);
    ck_assert_int_eq(ibvi_net_add_groupnorm(net, 2, 1e-5f), 0);
    ck_assert_int_eq(ibvi_net_add_flatten(net), 0);
    ck_assert_int_eq(ibvi_net_add_dense(net, 3, 0), 0);
    ck_assert_int_eq(ibvi_net_init(net, IBVI_PARAM_MUP, 1), 0);
    ibvi_layer *l = net->layers[0];
    const ibvi__groupnorm_geom *g = &l->groupnorm;
    const int64_t rows = 700, n = rows * g->in_size;
    const int64_t ns = l->ops->scratch_floats(l, rows);
    float *theta = random_floats(g->params), *x = random_floats(n);
    float *dy = random_floats(n);
    float *ref_y = filled(n, 0), *ref_dx = filled(n, 0);
    float *ref_dt = filled(g->params, 0), *ref_s = scratch_alloc(ns);
    ibvi__groupnorm_forward(g, theta, x, ref_y, rows, ref_s);
    ibvi__groupnorm_backward(g, theta, x, dy, ref_dx, ref_dt, rows, ref_s);
    for (int32_t threads = 1; threads <= 2; threads++) {
        ck_assert_int_eq(ibvi_net_set_threads(net, threads), 0);
        float *y = filled(n, NAN), *dx = filled(n, NAN);
        float *dt = filled(g->params, NAN), *sc = scratch_alloc(ns);
        double bound[2 * IBVI__MAX_GROUPS];
        l->ops->forward(l, theta, x, y, rows, sc);
        l->ops->backward(l, theta, x, dy, dx, dt, rows, sc, bound);
        scratch_check(sc, ns);
        ck_assert_mem_eq(y, ref_y, (size_t)n * sizeof(float));
        ck_assert_mem_eq(dx, ref_dx, (size_t)n * sizeof(float));
        ck_assert_mem_eq(dt, ref_dt, (size_t)g->params * sizeof(float));
        free(y), free(dx), free(dt), free(sc);
    }
    free(theta), free(x), free(dy), free(ref_y), free(ref_dx), free(ref_dt);
    free(ref_s);
    ibvi_net_free(net);
}
END_TEST

START_TEST(groupnorm_geometry_errors)
{
    ibvi__groupnorm_geom g;
#define FN "ibvi_net_add_group_norm"
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 4, 1e-5f, FN),
             IBVI_ERR_SHAPE, FN, "channels 6 not divisible by groups 4");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 12, 1e-5f, FN),
             IBVI_ERR_SHAPE, FN, "not divisible");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 0, 1e-5f, FN),
             IBVI_ERR_INVALID_ARG, FN, "groups = 0");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 3, 0.0f, FN),
             IBVI_ERR_INVALID_ARG, FN, "eps");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 3, -1e-5f, FN),
             IBVI_ERR_INVALID_ARG, FN, "eps");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 3, NAN, FN),
             IBVI_ERR_INVALID_ARG, FN, "eps");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, 4, 4, 3, INFINITY, FN),
             IBVI_ERR_INVALID_ARG, FN, "eps");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 65536, 65536, 65536, 1, 1e-5f, FN),
             IBVI_ERR_INVALID_ARG, FN, "has more than");
    CK_FAILS(ibvi__groupnorm_geometry(&g, 6, INT64_MIN, 4, 3, 1e-5f, FN),
             IBVI_ERR_INVALID_ARG, FN, "height");
#undef FN
}
END_TEST

static Suite *image_suite(void)
{
    Suite *s = suite_create("image_layers");
    TCase *conv = tcase_create("conv2d");
    tcase_set_timeout(conv, 120);
    tcase_add_test(conv, conv_against_reference);
    tcase_add_test(conv, conv_geometry_values);
    tcase_add_test(conv, conv_finite_differences);
    tcase_add_test(conv, conv_null_outputs);
    tcase_add_test(conv, conv_two_threads);
    tcase_add_test(conv, conv_geometry_errors);
    suite_add_tcase(s, conv);
    TCase *pool = tcase_create("pool");
    tcase_add_test(pool, pool_against_reference_and_fd);
    tcase_add_test(pool, global_avgpool);
    tcase_add_test(pool, maxpool_ties_and_nan);
    tcase_add_test(pool, maxpool_2x2_ties_nan_and_cover);
    tcase_add_test(pool, pool_geometry_errors);
    suite_add_tcase(s, pool);
    TCase *gn = tcase_create("groupnorm");
    tcase_add_test(gn, groupnorm_against_reference_and_fd);
    tcase_add_test(gn, groupnorm_large_mean);
    tcase_add_test(gn, groupnorm_geometry_errors);
    tcase_add_test(gn, groupnorm_kind_threads);
    suite_add_tcase(s, gn);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(image_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

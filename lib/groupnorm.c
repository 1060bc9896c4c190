/*
 * libibvi - group normalisation (lib/image.h, docs/image-layers.md).
 *
 * A group's values are contiguous in CHW (channels g*C/G .. (g+1)*C/G - 1),
 * so each (example, group) is one run of n floats. Its mean and variance
 * come from two passes in double. The mean is kept as a float pair
 * (hi = (float)mean, lo = (float)(mean - hi)) and x - mean is formed as
 * (x - hi) - lo: for x near the mean x - hi is exact in float, so xhat
 * keeps double-precision centring even when |mean| >> std, and forward and
 * backward compute bit-identical xhat from the same three floats.
 *
 * The layer kind (the end of this file) is deterministic: theta = [gamma;
 * beta] in two groups, a gain (prior 1) and a shift (prior 0), which
 * param.c scales like biases. Its scratch is kept (layer_ops.h): the
 * forward's statistics are what the backward reads.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "image.h"
#include "internal.h"
#include "network.h"
#include "parallel.h"

int ibvi__groupnorm_geometry(ibvi__groupnorm_geom *g, int64_t c, int64_t h,
                             int64_t w, int64_t groups, float eps,
                             const char *fn)
{
    const ibvi__image_dim dims[] = {{"channels", c}, {"height", h}, {"width", w},
                 {"groups", groups}};
    const int bad =
        ibvi__image_check_dims(fn, dims, sizeof dims / sizeof dims[0]);
    if (bad)
        return bad;
    if (!(eps > 0.0f) || !isfinite(eps))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: eps = %g, expected finite and > 0", fn,
                          (double)eps);
    if (c % groups != 0)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: channels %lld not divisible by groups %lld", fn,
                          (long long)c, (long long)groups);
    const int64_t in_size = c * h * w; /* factors <= 2^16 */
    if (in_size > IBVI__IMAGE_SIZE_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: input %lldx%lldx%lld has more than %d values",
                          fn, (long long)c, (long long)h, (long long)w,
                          IBVI__IMAGE_SIZE_MAX);
    g->c = c;
    g->h = h;
    g->w = w;
    g->groups = groups;
    g->eps = eps;
    g->group_channels = c / groups;
    g->spatial = h * w;
    g->group_size = g->group_channels * g->spatial;
    g->in_size = in_size;
    g->params = 2 * c;
    return 0;
}

int64_t ibvi__groupnorm_scratch_floats(const ibvi__groupnorm_geom *g,
                                       int64_t rows)
{
    return rows > 0 ? rows * (3 * g->groups + 2 * g->c) : 0;
}

/* The sums run in eight independent lanes: a single accumulator is a
 * chain of dependent adds, which does not vectorise (no reassociation) and
 * ran at 3 ns per value. */

/* stats = {mean hi, mean lo, rstd} of the n values of x. */
static void group_stats(const float *x, int64_t n, double eps, float *stats)
{
    const int64_t bulk = n & ~(int64_t)7;
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < bulk; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += x[i + k];
    double sum = 0.0;
    for (int64_t i = bulk; i < n; i++)
        sum += x[i];
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    const double mean = sum / (double)n;
    for (int k = 0; k < 8; k++)
        lane[k] = 0.0;
    for (int64_t i = 0; i < bulk; i += 8)
        for (int k = 0; k < 8; k++) {
            const double d = (double)x[i + k] - mean;
            lane[k] += d * d;
        }
    double ss = 0.0;
    for (int64_t i = bulk; i < n; i++) {
        const double d = (double)x[i] - mean;
        ss += d * d;
    }
    for (int k = 0; k < 8; k++)
        ss += lane[k];
    const float hi = (float)mean;
    stats[0] = hi;
    stats[1] = (float)(mean - (double)hi);
    stats[2] = (float)(1.0 / sqrt(ss / (double)n + eps));
}

/* sums[0] = sum dy, sums[1] = sum dy * xhat over one channel's hw values. */
static void channel_sums(const float *restrict x, const float *restrict dy,
                         int64_t hw, float hi, float lo, float rstd,
                         float sums[2])
{
    const int64_t bulk = hw & ~(int64_t)7;
    float l_dy[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float l_dyx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < bulk; i += 8)
        for (int k = 0; k < 8; k++) {
            const float xhat = ((x[i + k] - hi) - lo) * rstd;
            l_dy[k] += dy[i + k];
            l_dyx[k] += dy[i + k] * xhat;
        }
    float s_dy = 0.0f, s_dyx = 0.0f;
    for (int64_t i = bulk; i < hw; i++) {
        const float xhat = ((x[i] - hi) - lo) * rstd;
        s_dy += dy[i];
        s_dyx += dy[i] * xhat;
    }
    for (int k = 0; k < 8; k++) {
        s_dy += l_dy[k];
        s_dyx += l_dyx[k];
    }
    sums[0] = s_dy;
    sums[1] = s_dyx;
}

void ibvi__groupnorm_forward(const ibvi__groupnorm_geom *g, const float *theta,
                             const float *input, float *output, int64_t rows,
                             float *scratch)
{
    const float *gamma = theta, *beta = theta + g->c;
    const int64_t n = g->group_size, hw = g->spatial;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < g->groups; k++) {
            const int64_t start = r * g->in_size + k * n;
            float *stats = scratch + 3 * (r * g->groups + k);
            group_stats(input + start, n, (double)g->eps, stats);
            const float hi = stats[0], lo = stats[1], rstd = stats[2];
            for (int64_t cc = 0; cc < g->group_channels; cc++) {
                const int64_t c = k * g->group_channels + cc;
                const float *restrict x = input + start + cc * hw;
                float *restrict y = output + start + cc * hw;
                const float gc = gamma[c], bc = beta[c];
                for (int64_t i = 0; i < hw; i++)
                    y[i] = ((x[i] - hi) - lo) * rstd * gc + bc;
            }
        }
}

/* Per row of [0, rows): the row's channel sums into sums (2C floats per
 * row: sum dy * xhat per channel, then sum dy per channel, the layout of
 * grad_theta) and, unless grad_input is NULL, its dL/dx. Rows are
 * independent, so any split of the rows gives the same values. */
static void backward_rows(const ibvi__groupnorm_geom *g, const float *theta,
                          const float *input, const float *grad_output,
                          float *grad_input, int64_t rows,
                          const float *stats_all, float *sums)
{
    const float *gamma = theta;
    const int64_t n = g->group_size, hw = g->spatial, C = g->c;
    for (int64_t r = 0; r < rows; r++) {
        float *row_sums = sums + r * 2 * C;
        for (int64_t k = 0; k < g->groups; k++) {
            const int64_t start = r * g->in_size + k * n;
            const float *stats = stats_all + 3 * (r * g->groups + k);
            const float hi = stats[0], lo = stats[1], rstd = stats[2];
            /* sum g and sum g*xhat over the group, g = dy * gamma[c]. */
            double sum_g = 0.0, sum_gx = 0.0;
            for (int64_t cc = 0; cc < g->group_channels; cc++) {
                const int64_t c = k * g->group_channels + cc;
                float cs[2];
                channel_sums(input + start + cc * hw,
                             grad_output + start + cc * hw, hw, hi, lo, rstd,
                             cs);
                row_sums[c] = cs[1];
                row_sums[C + c] = cs[0];
                sum_g += (double)gamma[c] * cs[0];
                sum_gx += (double)gamma[c] * cs[1];
            }
            if (!grad_input)
                continue;
            const float mean_g = (float)(sum_g / (double)n);
            const float mean_gx = (float)(sum_gx / (double)n);
            for (int64_t cc = 0; cc < g->group_channels; cc++) {
                const int64_t c = k * g->group_channels + cc;
                const float *restrict x = input + start + cc * hw;
                const float *restrict dy = grad_output + start + cc * hw;
                float *restrict dx = grad_input + start + cc * hw;
                const float gc = gamma[c];
                for (int64_t i = 0; i < hw; i++) {
                    const float xhat = ((x[i] - hi) - lo) * rstd;
                    dx[i] = rstd * (dy[i] * gc - mean_g - xhat * mean_gx);
                }
            }
        }
    }
}

/* grad_theta = the rows' sums, added in row order (the order the
 * single-threaded loop always had). */
static void reduce_rows(const ibvi__groupnorm_geom *g, const float *sums,
                        int64_t rows, float *grad_theta)
{
    const int64_t P = g->params;
    memset(grad_theta, 0, (size_t)P * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < P; j++)
            grad_theta[j] += sums[r * P + j];
}

/* Where the per-row sums live in a scratch of `rows` rows: after the
 * statistics. */
static float *row_sums_of(const ibvi__groupnorm_geom *g, float *scratch,
                          int64_t rows)
{
    return scratch + 3 * rows * g->groups;
}

void ibvi__groupnorm_backward(const ibvi__groupnorm_geom *g,
                              const float *theta, const float *input,
                              const float *grad_output, float *grad_input,
                              float *grad_theta, int64_t rows,
                              float *scratch)
{
    if (!grad_theta && !grad_input)
        return;
    float *sums = row_sums_of(g, scratch, rows);
    backward_rows(g, theta, input, grad_output, grad_input, rows, scratch,
                  sums);
    if (grad_theta)
        reduce_rows(g, sums, rows, grad_theta);
}

/* ---- the kind ------------------------------------------------------------- */

/* The builder (ibvi_net_add_groupnorm) put groups and eps in
 * layer->groupnorm; the geometry comes from the input shape. */
static int configure(ibvi_layer *layer, const char *fn)
{
    const ibvi__shape in = layer->in_shape;
    ibvi__groupnorm_geom g;
    const int st = ibvi__groupnorm_geometry(&g, in.c, in.h, in.w,
                                            layer->groupnorm.groups,
                                            layer->groupnorm.eps, fn);
    if (st)
        return st;
    layer->groupnorm = g;
    layer->out_shape = in;
    layer->params = g.params;
    layer->group_count = 2;
    layer->groups[0] = (ibvi__param_group){.offset = 0, .count = g.c,
                                           .fan_in = 1, .fan_out = g.c,
                                           .role = IBVI__GROUP_GAIN};
    layer->groups[1] = (ibvi__param_group){.offset = g.c, .count = g.c,
                                           .fan_in = 1, .fan_out = g.c,
                                           .role = IBVI__GROUP_SHIFT};
    return IBVI_OK;
}

static int64_t scratch_floats(const ibvi_layer *layer, int64_t rows)
{
    return ibvi__groupnorm_scratch_floats(&layer->groupnorm, rows);
}

/* The kind's passes, split across the network's threads by rows (pool.c
 * does the same): each row's statistics, output, gradient and channel
 * sums are its own, and the sums are added in row order afterwards, so
 * every thread count gives the single-threaded values bit for bit. */
typedef struct gn_job {
    const ibvi__groupnorm_geom *g;
    const float *theta, *in, *dy;
    float *out, *dx, *scratch, *sums;
} gn_job;

static void forward_chunk(void *arg, int64_t r0, int64_t r1)
{
    const gn_job *j = arg;
    const ibvi__groupnorm_geom *g = j->g;
    ibvi__groupnorm_forward(g, j->theta, j->in + r0 * g->in_size,
                            j->out + r0 * g->in_size, r1 - r0,
                            j->scratch + 3 * r0 * g->groups);
}

static void backward_chunk(void *arg, int64_t r0, int64_t r1)
{
    const gn_job *j = arg;
    const ibvi__groupnorm_geom *g = j->g;
    backward_rows(g, j->theta, j->in + r0 * g->in_size,
                  j->dy + r0 * g->in_size,
                  j->dx ? j->dx + r0 * g->in_size : NULL, r1 - r0,
                  j->scratch + 3 * r0 * g->groups, j->sums + r0 * g->params);
}

static void run_rows(const ibvi_layer *layer, ibvi__range_fn fn, gn_job *j,
                     int64_t rows)
{
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), rows,
                       IBVI__PARALLEL_GRAIN_FLOATS / layer->groupnorm.in_size +
                           1,
                       fn, j);
}

static void forward(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch)
{
    gn_job j = {&layer->groupnorm, theta, in, NULL, out, NULL, scratch, NULL};
    run_rows(layer, forward_chunk, &j, rows);
}

/* No cheap analytic bound on |dgamma| (it sums dy * xhat): the exact
 * maximum per group, which is +inf or NaN when dy or x was not finite. */
static void backward(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound)
{
    const ibvi__groupnorm_geom *g = &layer->groupnorm;
    if (!dtheta && !dx)
        return;
    gn_job j = {g, theta, in, dy, NULL, dx, scratch,
                row_sums_of(g, scratch, rows)};
    run_rows(layer, backward_chunk, &j, rows);
    if (dtheta) {
        reduce_rows(g, j.sums, rows, dtheta);
        ibvi__group_max_abs(layer, dtheta, bound);
    }
}

const ibvi__layer_ops ibvi__groupnorm_ops = {
    .name = "groupnorm",
    .flags = 0,
    .configure = configure,
    .scratch_floats = scratch_floats,
    .scratch_kept = 1,
    .forward = forward,
    .backward = backward,
};

int ibvi_net_add_groupnorm(ibvi_net *net, int32_t groups, float eps)
{
    ibvi_layer proto = {.groupnorm = {.groups = groups, .eps = eps}};
    return ibvi__net_add_layer(net, "ibvi_net_add_groupnorm",
                               IBVI__KIND_GROUPNORM, &proto, 0);
}

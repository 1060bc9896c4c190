/*
 * libibvi - the weight distribution of a layer's parameters, whatever its
 * kind (docs/design.md, "The variational layer"): theta is deterministic
 * (= mu), a low-rank Gaussian N(mu, S S^T) with S of P x R, or a diagonal
 * (mean-field) Gaussian N(mu, diag(sigma^2)) with sigma = softplus(rho).
 *
 * A variational layer draws theta_m = mu + S z_m once per weight sample m
 * and applies it, through its kind's forward, to that sample's block of n
 * rows. The gradient at the sampled weights, g_m = dL/dtheta_m, gives
 *     dL/dmu = sum_m g_m,    dL/dS = sum_m g_m z_m^T = G^T Z,
 * with G (samples x P) and Z (samples x R). A deterministic layer (R = 0)
 * and a kind without parameters run all samples' rows in one call.
 *
 * A diagonal layer draws theta_m = mu + softplus(rho) .* z_m (z_m of P
 * entries) and, from the same g_m,
 *     dL/drho = sigmoid(rho) .* sum_m g_m .* z_m,
 * stored (P floats, like the mean's gradient): it is no larger than theta.
 *
 * A diag-lowrank (SWAG) layer draws theta_m = mu + d .* z1_m + S z2_m
 * (z1_m of P entries, then z2_m of R): the low-rank sampler, then the
 * diagonal one adding into the same theta. It is never trained (SWAG
 * collects its moments), so it has no gradient beyond the mean's and S's.
 *
 * The factor S is R times the size of the mean, so this file touches it as
 * little as it can: sampling reads S once for all samples (and is skipped
 * when the last optimizer step already drew this forward's weights, see
 * network.h), and dL/dS is never materialised: the backward keeps G (and
 * the network keeps Z), and the optimizer forms G^T Z a few rows at a time
 * inside its single update pass (ibvi__factor_grad_span).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "deferred.h"
#include "network.h"
#include "parallel.h"

double ibvi__rounding_slack(double terms)
{
    return exp(terms * 0x1p-24 * 1.0001);
}

void ibvi__softplus_sigmoid(float x, float *softplus, float *sigmoid)
{
    /* One exponential for both. log(1 + e^x) is x itself above 20 (e^-20
     * is below float's epsilon relative to x) and e^x below -20
     * (log1p(e^x) = e^x to float precision). */
    if (x > 20.0f) {
        *softplus = x;
        *sigmoid = 1.0f / (1.0f + expf(-x));
        return;
    }
    const float e = expf(x);
    *softplus = x < -20.0f ? e : log1pf(e);
    *sigmoid = e / (1.0f + e);
}

float ibvi__softplus(float x)
{
    if (x > 20.0f)
        return x;
    const float e = expf(x);
    return x < -20.0f ? e : log1pf(e);
}

float ibvi__sigmoid(float x)
{
    if (x > 20.0f)
        return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

/* ---- sampling: theta_m = mu + S z_m -------------------------------------- */

/* Rows of S per block: small enough that a block (SAMPLE_BLOCK x R floats)
 * stays in L1 while every sample reads it, so S crosses memory once. */
#define SAMPLE_BLOCK 64

/* theta[b] = mu[b] + sum_r s[b, r] z[r] for b < rows <= SAMPLE_BLOCK, s
 * row-major with R columns. Every variant sums over r in order from 0 and
 * works row by row, so the weights do not depend on how the rows are split
 * into blocks: the optimizer's draw ahead (a chunk at a time) and the
 * forward (all rows) give bitwise the same values.
 *
 * The general variant goes column by column across the rows: its inner
 * loop runs over rows (a strided read of S) and vectorises, where a dot
 * product of a runtime R per row would be a short horizontal reduction. For
 * small R known at compile time, a dot per row is faster still (unrolled,
 * z in registers): measured 1.25x for R = 10 and 2.2x for R = 1. */
static void sample_block(const float *restrict mu, const float *restrict s,
                         int32_t R, const float *restrict z, int64_t rows,
                         float *restrict theta)
{
    float acc[SAMPLE_BLOCK];
    for (int64_t b = 0; b < rows; b++)
        acc[b] = 0.0f;
    for (int32_t r = 0; r < R; r++) {
        const float zr = z[r];
        const float *col = s + r;
        for (int64_t b = 0; b < rows; b++)
            acc[b] += col[b * R] * zr;
    }
    for (int64_t b = 0; b < rows; b++)
        theta[b] = mu[b] + acc[b];
}

#define SAMPLE_BLOCK_R(RANK)                                                  \
    static void sample_block_##RANK(const float *restrict mu,                 \
                                    const float *restrict s,                  \
                                    const float *restrict z_in, int64_t rows, \
                                    float *restrict theta)                    \
    {                                                                         \
        float z[RANK];                                                        \
        for (int r = 0; r < RANK; r++)                                        \
            z[r] = z_in[r];                                                   \
        for (int64_t b = 0; b < rows; b++) {                                  \
            const float *row = s + b * RANK;                                  \
            float acc = 0.0f;                                                 \
            for (int r = 0; r < RANK; r++)                                    \
                acc += row[r] * z[r];                                         \
            theta[b] = mu[b] + acc;                                           \
        }                                                                     \
    }
SAMPLE_BLOCK_R(1)
SAMPLE_BLOCK_R(2)
SAMPLE_BLOCK_R(3)
SAMPLE_BLOCK_R(4)
SAMPLE_BLOCK_R(5)
SAMPLE_BLOCK_R(6)
SAMPLE_BLOCK_R(8)
SAMPLE_BLOCK_R(10)
SAMPLE_BLOCK_R(12)
SAMPLE_BLOCK_R(16)

/* Entries row0 .. row0 + rows - 1 of theta_m = mu + softplus(rho) .* z_m,
 * z_m's entry p at z[m * z_stride + p]. A diag-lowrank (SWAG) layer adds
 * its d .* z1_m to the theta_m = mu + S z2_m the low-rank block wrote
 * (the two samplers on the same theta). */
static void sample_diagonal(const ibvi_layer *layer, int64_t row0,
                            int64_t rows, const float *z, int64_t z_stride,
                            int32_t samples, float *theta)
{
    const int64_t P = layer->params, end = row0 + rows;
    const int add = layer->covariance == IBVI__COV_DIAG_LOWRANK;
    float sigma[SAMPLE_BLOCK];
    for (int64_t p0 = row0; p0 < end; p0 += SAMPLE_BLOCK) {
        const int64_t n = end - p0 < SAMPLE_BLOCK ? end - p0 : SAMPLE_BLOCK;
        const float *mu = layer->mean + p0;
        for (int64_t b = 0; b < n; b++)
            sigma[b] = add ? layer->diag[p0 + b]
                           : ibvi__softplus(layer->rho[p0 + b]);
        for (int32_t m = 0; m < samples; m++) {
            const float *restrict zm = z + m * z_stride + p0;
            float *out = theta + m * P + p0;
            const float *base = add ? out : mu;
            for (int64_t b = 0; b < n; b++)
                out[b] = base[b] + sigma[b] * zm[b];
        }
    }
}

void ibvi__gaussian_sample_rows(const ibvi_layer *layer, int64_t row0,
                                int64_t rows, const float *z,
                                int64_t z_stride, int32_t samples,
                                float *theta)
{
    const int64_t P = layer->params, end = row0 + rows;
    const int32_t R = layer->rank;
    const float *z_diag = NULL; /* diag-lowrank: z1, after the low rank */
    switch ((ibvi__covariance)layer->covariance) {
    case IBVI__COV_NONE:
        return;
    case IBVI__COV_DIAGONAL:
        sample_diagonal(layer, row0, rows, z, z_stride, samples, theta);
        return;
    case IBVI__COV_LOWRANK:
        break;
    case IBVI__COV_DIAG_LOWRANK: /* z1 (P entries), then z2 (R) */
        z_diag = z;
        z += P;
        break;
    }
    for (int64_t p0 = row0; p0 < end; p0 += SAMPLE_BLOCK) {
        const int64_t n = end - p0 < SAMPLE_BLOCK ? end - p0 : SAMPLE_BLOCK;
        const float *mu = layer->mean + p0, *s = layer->factor + p0 * R;
        for (int32_t m = 0; m < samples; m++) {
            const float *zm = z + m * z_stride;
            float *out = theta + m * P + p0;
            switch (R) {
            case 1: sample_block_1(mu, s, zm, n, out); break;
            case 2: sample_block_2(mu, s, zm, n, out); break;
            case 3: sample_block_3(mu, s, zm, n, out); break;
            case 4: sample_block_4(mu, s, zm, n, out); break;
            case 5: sample_block_5(mu, s, zm, n, out); break;
            case 6: sample_block_6(mu, s, zm, n, out); break;
            case 8: sample_block_8(mu, s, zm, n, out); break;
            case 10: sample_block_10(mu, s, zm, n, out); break;
            case 12: sample_block_12(mu, s, zm, n, out); break;
            case 16: sample_block_16(mu, s, zm, n, out); break;
            default: sample_block(mu, s, R, zm, n, out); break;
            }
        }
    }
    if (z_diag)
        sample_diagonal(layer, row0, rows, z_diag, z_stride, samples, theta);
}

/* The forward's sampling of every row, split across the network's threads
 * by blocks of SAMPLE_BLOCK rows: the rows do not depend on the split (see
 * sample_block), so neither do the weights on the thread count. The
 * predictor's materialised samples come from here too (network.h); the
 * optimizer's draw ahead calls ibvi__gaussian_sample_rows itself. */
typedef struct sample_job {
    const ibvi_layer *layer;
    const float *z;
    int64_t z_stride;
    int32_t samples;
    float *theta;
} sample_job;

static void sample_blocks(void *arg, int64_t b0, int64_t b1)
{
    const sample_job *j = arg;
    const int64_t P = j->layer->params;
    const int64_t row0 = b0 * SAMPLE_BLOCK;
    const int64_t row1 = b1 * SAMPLE_BLOCK < P ? b1 * SAMPLE_BLOCK : P;
    ibvi__gaussian_sample_rows(j->layer, row0, row1 - row0, j->z, j->z_stride,
                               j->samples, j->theta);
}

void ibvi__gaussian_sample_all(const ibvi_layer *layer, const float *z,
                               int64_t z_stride, int32_t samples,
                               float *theta)
{
    sample_job j = {layer, z, z_stride, samples, theta};
    const int64_t P = layer->params;
    const int64_t blocks = (P + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    /* A block reads SAMPLE_BLOCK x R floats of S and writes SAMPLE_BLOCK
     * per sample. */
    const int64_t per_block = SAMPLE_BLOCK * ((int64_t)layer->rank + samples);
    const int64_t grain = IBVI__PARALLEL_GRAIN_FLOATS / per_block + 1;
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), blocks,
                       grain, sample_blocks, &j);
}

/* grad_mean = sum_m g_m over the samples, split by entries. */
typedef struct sum_job {
    float *out;
    const float *g;
    int64_t P;
    int32_t samples;
} sum_job;

static void sum_samples(void *arg, int64_t p0, int64_t p1)
{
    const sum_job *j = arg;
    float *restrict out = j->out;
    memcpy(out + p0, j->g + p0, (size_t)(p1 - p0) * sizeof(float));
    for (int32_t m = 1; m < j->samples; m++) {
        const float *restrict g = j->g + m * j->P;
        for (int64_t p = p0; p < p1; p++)
            out[p] += g[p];
    }
}

/* ---- forward and backward of any layer ---------------------------------- */

/* The kind's scratch for sample block m of n rows (layer_ops.h): a kept
 * scratch has one region per block, a shared one is reused. */
static float *block_scratch(const ibvi_layer *layer, int64_t n, int32_t m)
{
    if (!layer->scratch || !layer->ops->scratch_kept || m == 0)
        return layer->scratch;
    return layer->scratch + m * layer->ops->scratch_floats(layer, n);
}

void ibvi__layer_forward(ibvi_layer *layer, const float *input, int64_t n,
                         int32_t samples, const float *noise,
                         int64_t noise_stride)
{
    const ibvi__layer_ops *ops = layer->ops;
    const int64_t in = layer->inputs, out = layer->outputs;
    if (!ibvi__is_variational(layer) || noise == NULL) {
        ops->forward(layer, layer->params ? layer->mean : NULL, input,
                     layer->output, n * samples, layer->scratch);
        return;
    }
    switch ((ibvi__covariance)layer->covariance) {
    case IBVI__COV_NONE: /* rank 0: handled above */
        break;
    case IBVI__COV_LOWRANK:
        /* The last optimizer step may have drawn these weights already,
         * while it held S in cache (passes.c decides whether they are
         * still valid). */
        if (layer->net->use_window)
            ibvi__window_sample(layer->net->window, layer);
        else if (!layer->net->use_presampled)
            ibvi__gaussian_sample_all(layer, noise, noise_stride, samples,
                                      layer->sampled);
        break;
    case IBVI__COV_DIAGONAL:
    case IBVI__COV_DIAG_LOWRANK:
        /* Never drawn ahead: one element-wise pass (diagonal), or never
         * trained (diag-lowrank, SWAG). */
        ibvi__gaussian_sample_all(layer, noise, noise_stride, samples,
                                  layer->sampled);
        break;
    }
    for (int32_t m = 0; m < samples; m++)
        ops->forward(layer, layer->sampled + (int64_t)m * layer->params,
                     input + m * n * in, layer->output + m * n * out, n,
                     block_scratch(layer, n, m));
}

typedef struct rho_job {
    ibvi_layer *layer;
    const float *g, *noise;
    int64_t noise_stride;
    int32_t samples;
} rho_job;

static void rho_entries(void *arg, int64_t p0, int64_t p1)
{
    const rho_job *j = arg;
    const int64_t P = j->layer->params;
    float *restrict out = j->layer->grad_rho;
    const float *restrict rho = j->layer->rho;
    for (int64_t p = p0; p < p1; p++)
        out[p] = j->g[p] * j->noise[p];
    for (int32_t m = 1; m < j->samples; m++) {
        const float *restrict gm = j->g + m * P;
        const float *restrict zm = j->noise + m * j->noise_stride;
        for (int64_t p = p0; p < p1; p++)
            out[p] += gm[p] * zm[p];
    }
    for (int64_t p = p0; p < p1; p++)
        out[p] *= ibvi__sigmoid(rho[p]);
}

/* dL/drho = sigmoid(rho) .* sum_m g_m .* z_m from the per-sample
 * gradients g (samples x P), before they are summed into grad_mean; split
 * by entries across the network's threads (each entry is computed the
 * same way whatever the split). */
static void diagonal_grad(ibvi_layer *layer, const float *g, int32_t samples,
                          const float *noise, int64_t noise_stride)
{
    rho_job j = {layer, g, noise, noise_stride, samples};
    /* An exponential per entry: a smaller grain than the plain passes. */
    ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads),
                       layer->params,
                       IBVI__PARALLEL_GRAIN_FLOATS / (8 + samples) + 1,
                       rho_entries, &j);
}

void ibvi__layer_backward(ibvi_layer *layer, const float *input,
                          const float *grad_output, float *grad_input,
                          int64_t n, int32_t samples, const float *noise,
                          int64_t noise_stride)
{
    const ibvi__layer_ops *ops = layer->ops;
    const int64_t in = layer->inputs, out = layer->outputs;
    const int64_t P = layer->params;
    const int32_t R = layer->rank, G = layer->group_count;
    double bound[IBVI__MAX_GROUPS];

    if (P == 0) {
        if (grad_input)
            ops->backward(layer, NULL, input, grad_output, grad_input, NULL,
                          n * samples, layer->scratch, NULL);
        return;
    }
    if (!ibvi__is_variational(layer) || noise == NULL) {
        /* One weight vector for every row: a single pass over all samples. */
        ops->backward(layer, layer->mean, input, grad_output, grad_input,
                      layer->grad_mean, n * samples, layer->scratch, bound);
        for (int32_t g = 0; g < G; g++) {
            layer->grad_bound[g] = bound[g];
            layer->grad_bound[G + g] = 0.0; /* dS = 0, drho = 0 */
        }
        if (layer->grad_rho)
            memset(layer->grad_rho, 0, (size_t)P * sizeof(float));
        return;
    }

    /* Per-sample gradients g_m; with one sample, straight into grad_mean. */
    float *per_sample = samples == 1 ? layer->grad_mean : layer->sample_grad;
    double sums[2 * IBVI__MAX_GROUPS] = {0.0};
    for (int32_t m = 0; m < samples; m++) {
        const float *theta = layer->sampled + (int64_t)m * P;
        ops->backward(layer, theta, input + m * n * in,
                      grad_output + m * n * out,
                      grad_input ? grad_input + m * n * in : NULL,
                      per_sample + m * P, n, block_scratch(layer, n, m),
                      bound);
        /* dL/dmu sums the g_m; dL/dS sums g_m z_m^T: |entries| <= sum_m
         * bound_m max|z_m|. */
        double z_max = 0.0;
        switch ((ibvi__covariance)layer->covariance) {
        case IBVI__COV_NONE:
            break;
        case IBVI__COV_LOWRANK:
            z_max = ibvi__max_abs(noise + m * noise_stride, R);
            break;
        case IBVI__COV_DIAGONAL: /* |drho| <= sum_m |g_m| |z_m| (sigmoid < 1) */
            z_max = ibvi__max_abs(noise + m * noise_stride, P);
            break;
        case IBVI__COV_DIAG_LOWRANK: /* the factor's z2, after z1 */
            z_max = ibvi__max_abs(noise + m * noise_stride + P, R);
            break;
        }
        for (int32_t g = 0; g < G; g++) {
            sums[g] += bound[g];
            sums[G + g] += bound[g] * z_max;
        }
    }
    const double slack = ibvi__rounding_slack(samples);
    for (int32_t k = 0; k < 2 * G; k++)
        layer->grad_bound[k] = sums[k] * slack;
    if (layer->covariance == IBVI__COV_DIAGONAL)
        diagonal_grad(layer, per_sample, samples, noise, noise_stride);
    if (samples > 1) {
        sum_job j = {layer->grad_mean, per_sample, P, samples};
        ibvi__parallel_for(ibvi__threads_in_effect(layer->net->threads), P,
                           IBVI__PARALLEL_GRAIN_FLOATS / samples + 1,
                           sum_samples, &j);
    }
    /* dS = G^T Z stays factored (see the file comment). */
}

void ibvi__group_max_abs(const ibvi_layer *layer, const float *theta,
                         double *bound)
{
    for (int32_t g = 0; g < layer->group_count; g++)
        bound[g] = ibvi__max_abs(theta + layer->groups[g].offset,
                                 layer->groups[g].count);
}

/* ---- the factor gradient, factored --------------------------------------- */

ibvi__factor_grad ibvi__gaussian_factor_grad(const ibvi_layer *layer)
{
    const ibvi_net *net = layer->net;
    ibvi__factor_grad fg = {NULL, NULL, layer->params, net->noise_size,
                            net->grad_samples, layer->rank};
    if (layer->rank > 0 && net->grad_samples > 0) {
        fg.g = net->grad_samples == 1 ? layer->grad_mean : layer->sample_grad;
        fg.z = net->grad_noise + layer->noise_offset +
               (layer->covariance == IBVI__COV_DIAG_LOWRANK ? layer->params
                                                            : 0);
    }
    return fg;
}

/* out (rows x R) = g z^T for rows of g: one sample's factor gradient. For
 * small R known at compile time the row is unrolled (and vectorised across
 * its R entries); otherwise the loop over a row's R entries vectorises. */
static void outer_rows(const float *restrict g, const float *restrict z,
                       int32_t R, int64_t rows, float *restrict out)
{
    for (int64_t b = 0; b < rows; b++) {
        const float gb = g[b];
        float *restrict o = out + b * R;
        for (int32_t r = 0; r < R; r++)
            o[r] = gb * z[r];
    }
}

#define OUTER_ROWS_R(RANK)                                                    \
    static void outer_rows_##RANK(const float *restrict g,                    \
                                  const float *restrict z_in, int64_t rows,   \
                                  float *restrict out)                        \
    {                                                                         \
        float z[RANK];                                                        \
        for (int r = 0; r < RANK; r++)                                        \
            z[r] = z_in[r];                                                   \
        for (int64_t b = 0; b < rows; b++)                                    \
            for (int r = 0; r < RANK; r++)                                    \
                out[b * RANK + r] = g[b] * z[r];                              \
    }
OUTER_ROWS_R(1)
OUTER_ROWS_R(2)
OUTER_ROWS_R(4)
OUTER_ROWS_R(8)
OUTER_ROWS_R(10)
OUTER_ROWS_R(16)

void ibvi__factor_grad_span(const ibvi__factor_grad *fg, int64_t first,
                            int64_t count, float *restrict out)
{
    if (fg->g == NULL) {
        memset(out, 0, (size_t)count * sizeof(float));
        return;
    }
    const int32_t R = fg->rank;
    if (fg->samples == 1 && first % R == 0 && count % R == 0) {
        /* The common case (one sample, whole rows): g[p] z^T row by row. */
        const float *g = fg->g + first / R;
        const int64_t rows = count / R;
        switch (R) {
        case 1: outer_rows_1(g, fg->z, rows, out); break;
        case 2: outer_rows_2(g, fg->z, rows, out); break;
        case 4: outer_rows_4(g, fg->z, rows, out); break;
        case 8: outer_rows_8(g, fg->z, rows, out); break;
        case 10: outer_rows_10(g, fg->z, rows, out); break;
        case 16: outer_rows_16(g, fg->z, rows, out); break;
        default: outer_rows(g, fg->z, R, rows, out); break;
        }
        return;
    }
    int64_t p = first / R, c = first % R;
    for (int64_t j = 0; j < count; p++, c = 0) {
        /* Entries c .. c + len - 1 of row p: sum_m g[m, p] z[m, c..]. */
        const int64_t len = R - c < count - j ? R - c : count - j;
        float *restrict o = out + j;
        const float *restrict z = fg->z + c;
        const float g0 = fg->g[p];
        for (int64_t k = 0; k < len; k++)
            o[k] = g0 * z[k];
        for (int32_t m = 1; m < fg->samples; m++) {
            const float gm = fg->g[m * fg->params + p];
            const float *restrict zm = z + m * fg->z_stride;
            for (int64_t k = 0; k < len; k++)
                o[k] += gm * zm[k];
        }
        j += len;
    }
}


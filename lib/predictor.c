/*
 * libibvi - predictive averaging over K weight samples (and over the members
 * of an ensemble), with the uncertainty measures of SPEC.md section 5.
 *
 * Rows are "shared" while no layer has depended on the weight sample yet:
 * those layers run once on n rows. The first variational layer fans the rows
 * out to K blocks of n (sample-major); every later layer runs on K * n rows.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "ibvi/predictor.h"
#include "kernels.h"
#include "network.h"

#define DEFAULT_BATCH 256

struct ibvi_predictor {
    ibvi_allocator allocator;
    ibvi_net **nets;
    int32_t count;
    int32_t samples;      /* K */
    int32_t mean_network; /* 1: z = 0, one sample */
    float temperature;
    int64_t batch;
    float *noise;         /* count x K x noise_size, drawn at creation */

    /* Workspace for `batch` inputs (one block). */
    float *block;
    float **outputs;      /* per layer: K * batch x outputs */
    float *projection;    /* batch x outputs * R (low-rank identity) */
    float *factor_t;      /* inputs x outputs * R, the factor rearranged */
    float *sampled;       /* K x P materialised weights */
    double *prob_sum;     /* batch x classes */
    double *entropy_sum;  /* batch */
};

/* ---- creation ------------------------------------------------------------ */

static int same_architecture(const ibvi_net *a, const ibvi_net *b)
{
    if (a->input_dim != b->input_dim || a->layer_count != b->layer_count)
        return 0;
    for (int32_t i = 0; i < a->layer_count; i++) {
        const ibvi_layer *x = a->layers[i], *y = b->layers[i];
        if (x->kind != y->kind || x->outputs != y->outputs ||
            x->rank != y->rank || x->activation != y->activation)
            return 0;
    }
    return 1;
}

static int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

/* Lays the workspace out for `batch` inputs from the first network's shape:
 * returns its size in floats and, when base is not NULL, points the
 * predictor's buffers into it. */
static int64_t layout_workspace(ibvi_predictor *p, int64_t batch, float *base,
                                float **outputs)
{
    const ibvi_net *net = p->nets[0];
    const int64_t K = p->samples;
    int64_t total = 0, projection = 0, factor_t = 0, sampled = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (base)
            outputs[i] = base + total;
        total += padded(K * batch * l->outputs);
        if (l->rank > 0) {
            const int64_t outer = (int64_t)l->outputs * l->rank;
            if (batch * outer > projection)
                projection = batch * outer;
            if (l->params * l->rank > factor_t)
                factor_t = l->params * l->rank;
            if (K * l->params > sampled)
                sampled = K * l->params;
        }
    }
    const int64_t classes = net->layers[net->layer_count - 1]->outputs;
    if (base) {
        p->projection = base + total;
        p->factor_t = p->projection + padded(projection);
        p->sampled = p->factor_t + padded(factor_t);
        p->prob_sum = (double *)(p->sampled + padded(sampled));
        p->entropy_sum = p->prob_sum + padded(batch * classes);
    }
    /* The double buffers count twice: they hold 8-byte values. */
    return total + padded(projection) + padded(factor_t) + padded(sampled) +
           2 * padded(batch * classes) + 2 * padded(batch);
}

static int allocate_workspace(ibvi_predictor *p, int64_t batch, const char *fn)
{
    const ibvi_net *net = p->nets[0];
    const int64_t total = layout_workspace(p, batch, NULL, NULL);
    float *block = ibvi__alloc(&p->allocator, (size_t)total, sizeof(float));
    float **outputs = ibvi__alloc(&p->allocator, (size_t)net->layer_count,
                                  sizeof *outputs);
    if (!block || !outputs) {
        ibvi__free(&p->allocator, block);
        ibvi__free(&p->allocator, outputs);
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for a batch of %lld inputs", fn,
                          (long long)batch);
    }
    ibvi__free(&p->allocator, p->block);
    ibvi__free(&p->allocator, p->outputs);
    p->block = block;
    p->outputs = outputs;
    p->batch = batch;
    layout_workspace(p, batch, block, outputs);
    return IBVI_OK;
}

/* Both public creators; fn names the one the host called in messages. */
static int create(const char *fn, ibvi_predictor **out, ibvi_net *const *nets,
                  int32_t count, int32_t samples, uint64_t seed)
{
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, nets);
    if (count < 1 || count > 4096)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: count = %d, expected 1..4096", fn, (int)count);
    if (samples < 1 || samples > IBVI_MAX_SAMPLES)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: samples = %d, expected 1..%d", fn, (int)samples,
                          IBVI_MAX_SAMPLES);
    for (int32_t i = 0; i < count; i++) {
        if (!nets[i])
            return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: nets[%d] is NULL", fn,
                              (int)i);
        int status = ibvi__net_check_ready(nets[i], fn);
        if (status < 0)
            return status;
        if (!same_architecture(nets[0], nets[i]))
            return ibvi__fail(IBVI_ERR_SHAPE,
                              "%s: nets[%d] has another architecture than "
                              "nets[0]", fn, (int)i);
    }
    const ibvi_allocator *a = &nets[0]->allocator;
    const int64_t noise_floats = (int64_t)count * samples * nets[0]->noise_size;
    ibvi_predictor *p = ibvi__calloc(a, 1, sizeof *p);
    ibvi_net **copy = ibvi__alloc(a, (size_t)count, sizeof *copy);
    float *noise = ibvi__alloc(a, (size_t)noise_floats, sizeof(float));
    if (!p || !copy || !noise) {
        ibvi__free(a, p);
        ibvi__free(a, copy);
        ibvi__free(a, noise);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    memcpy(copy, nets, (size_t)count * sizeof *copy);
    p->allocator = *a;
    p->nets = copy;
    p->count = count;
    p->samples = samples;
    p->temperature = 1.0f;
    p->noise = noise;
    ibvi_rng rng;
    ibvi__rng_seed(&rng, seed, IBVI_STREAM_PREDICT);
    ibvi__rng_normal(&rng, noise, noise_floats, 1.0f);
    int status = allocate_workspace(p, DEFAULT_BATCH, fn);
    if (status < 0) {
        ibvi_predictor_free(p);
        return status;
    }
    *out = p;
    return IBVI_OK;
}

int ibvi_predictor_create_ensemble(ibvi_predictor **out, ibvi_net *const *nets,
                                   int32_t count, int32_t samples,
                                   uint64_t seed)
{
    return create("ibvi_predictor_create_ensemble", out, nets, count, samples,
                  seed);
}

int ibvi_predictor_create(ibvi_predictor **out, ibvi_net *net, int32_t samples,
                          uint64_t seed)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_create", out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL("ibvi_predictor_create", net);
    return create("ibvi_predictor_create", out, &net, 1, samples, seed);
}

void ibvi_predictor_free(ibvi_predictor *p)
{
    if (!p)
        return;
    ibvi_allocator a = p->allocator;
    ibvi__free(&a, p->block);
    ibvi__free(&a, p->outputs);
    ibvi__free(&a, p->noise);
    ibvi__free(&a, p->nets);
    ibvi__free(&a, p);
}

/* ---- settings ------------------------------------------------------------ */

int ibvi_predictor_set_batch_size(ibvi_predictor *p, int64_t batch)
{
    static const char fn[] = "ibvi_predictor_set_batch_size";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (batch < 1 || batch > (INT64_MAX / IBVI_MAX_SAMPLES) / p->nets[0]->max_width /
                                 (int64_t)p->samples / 64)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: batch = %lld, expected >= 1 and a workspace "
                          "that fits in memory", fn, (long long)batch);
    return allocate_workspace(p, batch, fn);
}

int ibvi_predictor_set_mean_network(ibvi_predictor *p, int32_t on)
{
    static const char fn[] = "ibvi_predictor_set_mean_network";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (on != 0 && on != 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: on = %d, expected 0 or 1",
                          fn, (int)on);
    p->mean_network = on;
    return IBVI_OK;
}

int ibvi_predictor_set_temperature(ibvi_predictor *p, float temperature)
{
    static const char fn[] = "ibvi_predictor_set_temperature";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: temperature = %g, expected a finite value > 0",
                          fn, (double)temperature);
    p->temperature = temperature;
    return IBVI_OK;
}

int32_t ibvi_predictor_samples(const ibvi_predictor *p)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_samples", p);
    return p->mean_network ? 1 : p->samples;
}

int ibvi_predictor_noise(const ibvi_predictor *p, float *z, int64_t z_len)
{
    static const char fn[] = "ibvi_predictor_noise";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, z);
    const int64_t expected = (int64_t)p->count * p->samples * p->nets[0]->noise_size;
    if (z_len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE, "%s: z_len = %lld, expected %lld",
                          fn, (long long)z_len, (long long)expected);
    memcpy(z, p->noise, (size_t)expected * sizeof(float));
    return IBVI_OK;
}

/* ---- variational layers --------------------------------------------------- */

/* Input shared by all K samples, via the low-rank identity:
 *   out_k = (x W^T + b) + sum_r z_kr (x F_r^T + c_r).
 * The factor is rearranged to inputs x (outputs * R) so all R projections
 * come from one GEMM, then one more GEMM mixes them for all K samples. */
static void shared_low_rank(ibvi_predictor *p, const ibvi_layer *l,
                            const float *input, int64_t n, int32_t K,
                            const float *noise, int64_t noise_stride,
                            float *output)
{
    const int64_t in = l->inputs, out = l->outputs, R = l->rank;
    const int64_t outer = out * R;
    const float *bias_rows = l->factor + out * in * R;
    for (int64_t j = 0; j < out; j++)
        for (int64_t i = 0; i < in; i++)
            memcpy(p->factor_t + i * outer + j * R,
                   l->factor + (j * in + i) * R, (size_t)R * sizeof(float));
    for (int64_t row = 0; row < n; row++)
        memcpy(p->projection + row * outer, bias_rows,
               (size_t)outer * sizeof(float));
    ibvi__gemm(l->net->threads, 0, 0, n, outer, in, 1.0f, input, in,
               p->factor_t, outer, 1.0f, p->projection, outer);

    ibvi__affine_forward(l, l->mean, input, output, n);
    for (int32_t k = 1; k < K; k++)
        memcpy(output + k * n * out, output, (size_t)(n * out) * sizeof(float));
    /* output[k][q] += sum_r projection[q][r] z_k[r], q over n * out. */
    ibvi__gemm_strided(l->net->threads, n * out, K, R, 1.0f, p->projection, R,
                       1, noise, 1, noise_stride, 1.0f, output, 1, n * out);
}

/* K materialised weight samples; input_stride 0 when all share the input. */
static void sampled_weights(ibvi_predictor *p, const ibvi_layer *l,
                            const float *input, int64_t input_stride,
                            int64_t n, int32_t K, const float *noise,
                            int64_t noise_stride, float *output)
{
    for (int32_t k = 0; k < K; k++) {
        float *theta = p->sampled + (int64_t)k * l->params;
        ibvi__dense_sample_weights(l, noise + k * noise_stride, theta);
        ibvi__affine_forward(l, theta, input + k * input_stride,
                             output + k * n * l->outputs, n);
    }
}

/* Flop estimates of the two ways to run K samples on a shared input. */
static int low_rank_is_cheaper(const ibvi_layer *l, int64_t n, int32_t K)
{
    const double dense = (double)n * l->inputs * l->outputs;
    const double low_rank = dense * (1.0 + l->rank) +
                            (double)n * l->outputs * l->rank * K;
    const double materialise = (double)K * (dense + (double)l->params * l->rank);
    return low_rank < materialise;
}

/* ---- running --------------------------------------------------------------- */

/* Runs one network on n inputs; returns the logits and sets *blocks to the
 * number of sample blocks they hold (1 if no layer depended on z). */
static const float *run_network(ibvi_predictor *p, const ibvi_net *net,
                                const float *noise, const float *x, int64_t n,
                                int32_t *blocks)
{
    const int32_t K = p->mean_network ? 1 : p->samples;
    const int64_t stride = net->noise_size;
    const float *input = x;
    int shared = 1;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        float *output = p->outputs[i];
        const int64_t rows = shared ? n : K * n;
        const float *z = noise + l->noise_offset;
        if (l->kind == IBVI_LAYER_ACTIVATION) {
            ibvi__activation_forward(l->activation, input, output,
                                     rows * l->outputs);
        } else if (l->rank == 0 || p->mean_network) {
            ibvi__affine_forward(l, l->mean, input, output, rows);
        } else if (shared) {
            if (low_rank_is_cheaper(l, n, K))
                shared_low_rank(p, l, input, n, K, z, stride, output);
            else
                sampled_weights(p, l, input, 0, n, K, z, stride, output);
            shared = 0;
        } else {
            sampled_weights(p, l, input, n * l->inputs, n, K, z, stride, output);
        }
        input = output;
    }
    *blocks = shared ? 1 : K;
    return input;
}

/* Adds weight * softmax(logits / T) of each row to prob_sum and weight *
 * its entropy to entropy_sum. */
static void accumulate(ibvi_predictor *p, const float *logits, int64_t n,
                       int32_t classes, double weight)
{
    const double inv_t = 1.0 / p->temperature;
    for (int64_t row = 0; row < n; row++) {
        const float *f = logits + row * classes;
        double *sum = p->prob_sum + row * classes;
        float max = f[0];
        for (int32_t c = 1; c < classes; c++)
            if (f[c] > max)
                max = f[c];
        double z = 0.0, weighted = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            const double shifted = ((double)f[c] - max) * inv_t;
            const double e = exp(shifted);
            z += e;
            weighted += e * shifted;
        }
        /* H = log Z - sum_c p_c * shifted_c */
        p->entropy_sum[row] += weight * (log(z) - weighted / z);
        for (int32_t c = 0; c < classes; c++)
            sum[c] += weight * exp(((double)f[c] - max) * inv_t) / z;
    }
}

static void finish_rows(const ibvi_predictor *p, int64_t n, int32_t classes,
                        float *probs, float *predictive, float *expected,
                        float *mutual)
{
    for (int64_t row = 0; row < n; row++) {
        const double *sum = p->prob_sum + row * classes;
        double h = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            probs[row * classes + c] = (float)sum[c];
            if (sum[c] > 0.0)
                h -= sum[c] * log(sum[c]);
        }
        const double e = p->entropy_sum[row];
        if (predictive)
            predictive[row] = (float)h;
        if (expected)
            expected[row] = (float)e;
        if (mutual)
            mutual[row] = (float)(h > e ? h - e : 0.0);
    }
}

int ibvi_predictor_run(ibvi_predictor *p, const float *x, int64_t n,
                       float *probs, float *predictive_entropy,
                       float *expected_entropy, float *mutual_information)
{
    static const char fn[] = "ibvi_predictor_run";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, x);
    IBVI_CHECK_NOT_NULL(fn, probs);
    const ibvi_net *first = p->nets[0];
    if (n <= 0 || n > INT64_MAX / first->max_width)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    if (!ibvi__all_finite(x, n * first->input_dim))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: x holds NaN or infinity",
                          fn);
    const int32_t classes = first->layers[first->layer_count - 1]->outputs;
    for (int64_t start = 0; start < n; start += p->batch) {
        const int64_t rows = n - start < p->batch ? n - start : p->batch;
        const float *chunk = x + start * first->input_dim;
        memset(p->prob_sum, 0, (size_t)(rows * classes) * sizeof(double));
        memset(p->entropy_sum, 0, (size_t)rows * sizeof(double));
        for (int32_t m = 0; m < p->count; m++) {
            const ibvi_net *net = p->nets[m];
            const float *noise = p->noise + (int64_t)m * p->samples * net->noise_size;
            int32_t blocks;
            const float *logits = run_network(p, net, noise, chunk, rows, &blocks);
            /* Finite inputs can still overflow to infinite logits (weights
             * too large for them): report it instead of returning NaN. */
            if (!ibvi__all_finite(logits, (int64_t)blocks * rows * classes))
                return ibvi__fail(IBVI_ERR_NONFINITE,
                                  "%s: the logits of network %d overflow "
                                  "(NaN or infinity) for inputs %lld..%lld",
                                  fn, (int)m, (long long)start,
                                  (long long)(start + rows - 1));
            const double weight = 1.0 / ((double)p->count * blocks);
            for (int32_t k = 0; k < blocks; k++)
                accumulate(p, logits + (int64_t)k * rows * classes, rows,
                           classes, weight);
        }
        finish_rows(p, rows, classes, probs + start * classes,
                    predictive_entropy ? predictive_entropy + start : NULL,
                    expected_entropy ? expected_entropy + start : NULL,
                    mutual_information ? mutual_information + start : NULL);
    }
    return IBVI_OK;
}

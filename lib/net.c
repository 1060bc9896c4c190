/*
 * libibvi - networks: building, initialisation, workspace, forward and
 * backward passes over the chain of layers.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "network.h"

#define MAX_DIM 100000000 /* sanity bound on any layer size */
#define MAX_PARAMS ((int64_t)1 << 36) /* sum of P (1 + R): 256 GiB of floats */

/* ---- building ------------------------------------------------------------ */

int ibvi_net_create(ibvi_net **out, int32_t input_dim,
                    const ibvi_allocator *allocator)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_create", out);
    *out = NULL;
    if (input_dim <= 0 || input_dim > MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "ibvi_net_create: input_dim = %d, expected 1..%d",
                          (int)input_dim, MAX_DIM);
    ibvi_allocator a;
    int status = ibvi__allocator_resolve(allocator, &a, "ibvi_net_create");
    if (status < 0)
        return status;
    ibvi_net *net = ibvi__calloc(&a, 1, sizeof *net);
    if (!net)
        return ibvi__fail(IBVI_ERR_NOMEM, "ibvi_net_create: out of memory");
    net->allocator = a;
    net->input_dim = input_dim;
    net->threads = 1;
    net->max_width = input_dim;
    *out = net;
    return IBVI_OK;
}

void ibvi_net_free(ibvi_net *net)
{
    if (!net)
        return;
    ibvi_allocator a = net->allocator;
    for (int32_t i = 0; i < net->layer_count; i++)
        ibvi__free(&a, net->layers[i]);
    ibvi__free(&a, net->layers);
    ibvi__free(&a, net->param_block);
    ibvi__free(&a, net->ws_block);
    ibvi__free(&a, net);
}

static int32_t last_width(const ibvi_net *net)
{
    return net->layer_count ? net->layers[net->layer_count - 1]->outputs
                            : net->input_dim;
}

/* Appends a zeroed layer; the caller fills in its kind and shape. */
static int append_layer(ibvi_net *net, const char *fn, ibvi_layer **out)
{
    if (net->initialized)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network is initialised; layers can only be "
                          "added before ibvi_net_init", fn);
    if (net->layer_count == net->layer_capacity) {
        int32_t capacity = net->layer_capacity ? 2 * net->layer_capacity : 8;
        ibvi_layer **grown = ibvi__alloc(&net->allocator, (size_t)capacity,
                                         sizeof *grown);
        if (!grown)
            return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
        if (net->layer_count)
            memcpy(grown, net->layers, (size_t)net->layer_count * sizeof *grown);
        ibvi__free(&net->allocator, net->layers);
        net->layers = grown;
        net->layer_capacity = capacity;
    }
    ibvi_layer *layer = ibvi__calloc(&net->allocator, 1, sizeof *layer);
    if (!layer)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    layer->net = net;
    layer->inputs = last_width(net);
    net->layers[net->layer_count++] = layer;
    *out = layer;
    return IBVI_OK;
}

int ibvi_net_add_dense(ibvi_net *net, int32_t outputs, int32_t rank)
{
    static const char fn[] = "ibvi_net_add_dense";
    IBVI_CHECK_NOT_NULL(fn, net);
    if (outputs <= 0 || outputs > MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: outputs = %d, expected 1..%d", fn, (int)outputs,
                          MAX_DIM);
    const int64_t params = (int64_t)outputs * last_width(net) + outputs;
    if (rank < 0 || rank > params)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: rank = %d, expected 0..%lld (P = outputs * "
                          "inputs + outputs)", fn, (int)rank, (long long)params);
    /* Bounding the total keeps every later size computation (parameters,
     * gradients, optimizer state, samples x P) far from overflow. Compare
     * by division: the product itself overflows int64 for P near 1e16. */
    if (params > (MAX_PARAMS - net->param_floats) / (1 + (int64_t)rank))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: %lld outputs with rank %d would make the "
                          "network hold more than %lld parameters", fn,
                          (long long)outputs, (int)rank, (long long)MAX_PARAMS);
    const int64_t floats = params * (1 + (int64_t)rank);
    ibvi_layer *layer = NULL;
    int status = append_layer(net, fn, &layer);
    if (status < 0)
        return status;
    layer->kind = IBVI_LAYER_DENSE;
    layer->outputs = outputs;
    layer->rank = rank;
    layer->params = params;
    net->param_floats += floats;
    if (outputs > net->max_width)
        net->max_width = outputs;
    return IBVI_OK;
}

int ibvi_net_add_activation(ibvi_net *net, int32_t activation)
{
    static const char fn[] = "ibvi_net_add_activation";
    IBVI_CHECK_NOT_NULL(fn, net);
    if (!ibvi__activation_valid(activation))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: activation = %d, expected IBVI_ACT_RELU (1), "
                          "IBVI_ACT_TANH (2) or IBVI_ACT_SILU (3)", fn,
                          (int)activation);
    ibvi_layer *layer = NULL;
    int status = append_layer(net, fn, &layer);
    if (status < 0)
        return status;
    layer->kind = IBVI_LAYER_ACTIVATION;
    layer->activation = activation;
    layer->outputs = layer->inputs;
    return IBVI_OK;
}

/* ---- initialisation ------------------------------------------------------ */

/* Allocates the parameter block and points every dense layer into it:
 * mean (P), mean gradient (P) and factor (P x R) per layer. The factor's
 * gradient is never stored (see network.h). */
static int allocate_parameters(ibvi_net *net)
{
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        total += l->params * (2 + (int64_t)l->rank);
    }
    float *block = ibvi__calloc(&net->allocator, (size_t)total, sizeof(float));
    if (!block)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "ibvi_net_init: out of memory for %lld parameters",
                          (long long)total);
    float *cursor = block;
    int32_t noise_offset = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        const int64_t P = l->params, PR = l->params * l->rank;
        l->mean = cursor;
        l->grad_mean = cursor + P;
        l->factor = cursor + 2 * P;
        cursor += 2 * P + PR;
        l->noise_offset = noise_offset;
        noise_offset += l->rank;
    }
    net->param_block = block;
    net->noise_size = noise_offset;
    return IBVI_OK;
}

int ibvi_net_init(ibvi_net *net, int32_t parameterization, uint64_t seed)
{
    static const char fn[] = "ibvi_net_init";
    IBVI_CHECK_NOT_NULL(fn, net);
    if (parameterization != IBVI_PARAM_SP && parameterization != IBVI_PARAM_MUP)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: parameterization = %d, expected IBVI_PARAM_SP "
                          "(0) or IBVI_PARAM_MUP (1)", fn, (int)parameterization);
    if (net->layer_count == 0 ||
        net->layers[net->layer_count - 1]->kind != IBVI_LAYER_DENSE)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network needs at least one dense layer and "
                          "must end with a dense layer", fn);
    if (!net->param_block) {
        int status = allocate_parameters(net);
        if (status < 0)
            return status;
    }
    ibvi__param_configure(net, parameterization);
    ibvi__param_draw_prior(net, seed);
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        memset(l->grad_mean, 0, (size_t)l->params * sizeof(float));
        for (int k = 0; k < 4; k++)
            l->grad_bound[k] = 0.0;
    }
    net->seed = seed;
    ibvi__rng_seed(&net->noise_rng, seed, IBVI_STREAM_NOISE);
    net->initialized = 1;
    net->forward_valid = 0;
    net->noise_samples = 0;
    net->has_gradients = 0;
    net->grad_samples = 0;
    net->presampled = 0;
    net->param_version++;
    return IBVI_OK;
}

int ibvi__net_check_ready(const ibvi_net *net, const char *fn)
{
    IBVI_CHECK_NOT_NULL(fn, net);
    if (!net->initialized)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network is not initialised; call "
                          "ibvi_net_init first", fn);
    return IBVI_OK;
}

int ibvi_net_set_threads(ibvi_net *net, int32_t threads)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_set_threads", net);
    if (threads < 1 || threads > 1024)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "ibvi_net_set_threads: threads = %d, expected 1..1024",
                          (int)threads);
    net->threads = threads; /* the request; kernels.c caps it per call */
    return IBVI_OK;
}

int32_t ibvi_net_threads(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_threads", net);
    return ibvi__threads_in_effect(net->threads);
}

/* ---- workspace ----------------------------------------------------------- */

/* Rounds a float count up to 16 floats (64 bytes) so each buffer is aligned
 * like the block itself. */
static int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

/* The workspace size in floats, or -1 when it exceeds 2^60 floats: the sum
 * below would overflow int64 (and no allocator could serve it anyway).
 * The bound is taken in double first, with room for the padding. */
static int64_t workspace_floats(const ibvi_net *net, int64_t rows,
                                int32_t samples)
{
    double bound = (double)rows * (net->input_dim + 3.0 * net->max_width) +
                   3.0 * samples * net->noise_size +
                   16.0 * (7.0 + 3.0 * net->layer_count);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        bound += (double)rows * l->outputs;
        if (l->rank > 0)
            bound += 2.0 * samples * (double)l->params;
    }
    if (!(bound <= 0x1p60))
        return -1;
    int64_t total = padded(rows * net->input_dim) +
                    2 * padded(rows * net->max_width) +
                    3 * padded((int64_t)samples * net->noise_size) +
                    padded(rows * last_width(net));
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        total += padded(rows * l->outputs);
        if (l->rank > 0)
            total += padded(samples * l->params) * (samples > 1 ? 2 : 1);
    }
    return total;
}

static float *take(float **cursor, int64_t count)
{
    float *p = *cursor;
    *cursor += padded(count);
    return p;
}

int ibvi__net_reserve(ibvi_net *net, int64_t rows, int32_t samples,
                      const char *fn)
{
    if (rows <= net->ws_rows && samples <= net->ws_samples)
        return IBVI_OK;
    if (rows < net->ws_rows)
        rows = net->ws_rows;
    if (samples < net->ws_samples)
        samples = net->ws_samples;
    int64_t total = workspace_floats(net, rows, samples);
    float *block = total < 0 ? NULL
                             : ibvi__alloc(&net->allocator, (size_t)total,
                                           sizeof(float));
    if (!block)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for a workspace of %lld rows",
                          fn, (long long)rows);
    /* The noise of the last forward and everything the last backward left
     * in the workspace (its noise, the per-sample gradients) move along:
     * they stay readable (ibvi_net_last_noise, the factor gradient). */
    float *cursor = block;
    float *noise = take(&cursor, (int64_t)samples * net->noise_size);
    if (net->noise_samples > 0)
        memcpy(noise, net->noise,
               (size_t)net->noise_samples * net->noise_size * sizeof(float));
    net->noise = noise;
    float *grad_noise = take(&cursor, (int64_t)samples * net->noise_size);
    if (net->grad_samples > 0)
        memcpy(grad_noise, net->grad_noise,
               (size_t)net->grad_samples * net->noise_size * sizeof(float));
    net->grad_noise = grad_noise;
    net->presample_noise = take(&cursor, (int64_t)samples * net->noise_size);
    net->input = take(&cursor, rows * net->input_dim);
    net->grad_a = take(&cursor, rows * net->max_width);
    net->grad_b = take(&cursor, rows * net->max_width);
    net->loss_grad = take(&cursor, rows * last_width(net));
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        l->output = take(&cursor, rows * l->outputs);
        l->sampled = l->rank > 0 ? take(&cursor, samples * l->params) : NULL;
        float *sample_grad = (l->rank > 0 && samples > 1)
                                 ? take(&cursor, samples * l->params) : NULL;
        if (sample_grad && net->grad_samples > 1)
            memcpy(sample_grad, l->sample_grad,
                   (size_t)(net->grad_samples * l->params) * sizeof(float));
        l->sample_grad = sample_grad;
    }
    ibvi__free(&net->allocator, net->ws_block);
    net->ws_block = block;
    net->ws_rows = rows;
    net->ws_samples = samples;
    /* Activations moved: a pending backward would read stale buffers; the
     * weights drawn ahead were not carried over. */
    net->forward_valid = 0;
    net->presampled = 0;
    return IBVI_OK;
}

int ibvi_net_reserve(ibvi_net *net, int64_t max_rows, int32_t max_samples)
{
    static const char fn[] = "ibvi_net_reserve";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (max_rows <= 0 || max_samples <= 0 || max_samples > IBVI_MAX_SAMPLES ||
        max_rows > INT64_MAX / max_samples / net->max_width)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: max_rows = %lld, max_samples = %d, expected "
                          "both > 0 and a workspace that fits in memory", fn,
                          (long long)max_rows, (int)max_samples);
    return ibvi__net_reserve(net, max_rows * max_samples, max_samples, fn);
}

/* ---- queries ------------------------------------------------------------- */

int32_t ibvi_net_input_dim(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_input_dim", net);
    return net->input_dim;
}

int32_t ibvi_net_output_dim(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_output_dim", net);
    for (int32_t i = net->layer_count - 1; i >= 0; i--)
        if (net->layers[i]->kind == IBVI_LAYER_DENSE)
            return last_width(net);
    return ibvi__fail(IBVI_ERR_STATE,
                      "ibvi_net_output_dim: the network has no dense layer");
}

int32_t ibvi_net_layer_count(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_layer_count", net);
    return net->layer_count;
}

int32_t ibvi_net_is_initialized(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_is_initialized", net);
    return net->initialized;
}

int32_t ibvi_net_parameterization(const ibvi_net *net)
{
    int status = ibvi__net_check_ready(net, "ibvi_net_parameterization");
    return status < 0 ? status : net->parameterization;
}

int32_t ibvi_net_noise_size(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_noise_size", net);
    int32_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        total += net->layers[i]->rank;
    return total;
}

int64_t ibvi_net_param_count(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_param_count", net);
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        total += net->layers[i]->params * (1 + net->layers[i]->rank);
    return total;
}

int ibvi_net_seed(const ibvi_net *net, uint64_t *seed)
{
    int status = ibvi__net_check_ready(net, "ibvi_net_seed");
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL("ibvi_net_seed", seed);
    *seed = net->seed;
    return IBVI_OK;
}

int ibvi_net_rng_position(const ibvi_net *net, uint64_t *position)
{
    int status = ibvi__net_check_ready(net, "ibvi_net_rng_position");
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL("ibvi_net_rng_position", position);
    *position = net->noise_rng.counter;
    return IBVI_OK;
}

int ibvi_net_set_rng_position(ibvi_net *net, uint64_t position)
{
    int status = ibvi__net_check_ready(net, "ibvi_net_set_rng_position");
    if (status < 0)
        return status;
    net->noise_rng.counter = position;
    return IBVI_OK;
}

int ibvi_net_layer(ibvi_net *net, int32_t index, ibvi_layer **out)
{
    static const char fn[] = "ibvi_net_layer";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, net);
    if (index < 0 || index >= net->layer_count)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: index = %d, expected 0..%d", fn, (int)index,
                          (int)net->layer_count - 1);
    *out = net->layers[index];
    return IBVI_OK;
}

/*
 * libibvi - networks: building (the generic part of every layer builder),
 * initialisation, workspace, queries. The passes are passes.c's.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "network.h"

#define MAX_PARAMS ((int64_t)1 << 36) /* sum of P (1 + R): 256 GiB of floats */
#define MAX_NOISE ((int64_t)1 << 30)  /* z per sample: an int32 with room */

/* ---- building ------------------------------------------------------------ */

/* Both creators, once their arguments are checked. */
static int create(ibvi_net **out, ibvi__shape shape,
                  const ibvi_allocator *allocator, const char *fn)
{
    ibvi_allocator a;
    int status = ibvi__allocator_resolve(allocator, &a, fn);
    if (status < 0)
        return status;
    ibvi_net *net = ibvi__calloc(&a, 1, sizeof *net);
    if (!net)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    net->allocator = a;
    net->input_shape = shape;
    net->input_dim = (int32_t)ibvi__shape_size(shape);
    net->threads = 1;
    net->max_width = net->input_dim;
    *out = net;
    return IBVI_OK;
}

int ibvi_net_create(ibvi_net **out, int32_t input_dim,
                    const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_net_create";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (input_dim <= 0 || input_dim > IBVI__MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: input_dim = %d, expected 1..%d", fn,
                          (int)input_dim, IBVI__MAX_DIM);
    return create(out, (ibvi__shape){input_dim, 1, 1}, allocator, fn);
}

int ibvi_net_create_image(ibvi_net **out, int32_t channels, int32_t height,
                          int32_t width, const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_net_create_image";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (channels <= 0 || height <= 0 || width <= 0 ||
        (int64_t)channels * height * width > IBVI__MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: channels = %d, height = %d, width = %d, "
                          "expected each >= 1 and channels * height * width "
                          "<= %d", fn, (int)channels, (int)height, (int)width,
                          IBVI__MAX_DIM);
    return create(out, (ibvi__shape){channels, height, width}, allocator, fn);
}

void ibvi_net_free(ibvi_net *net)
{
    if (!net)
        return;
    ibvi_allocator a = net->allocator;
    ibvi__net_drop_window(net); /* its optimizer may outlive it */
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

static ibvi__shape last_shape(const ibvi_net *net)
{
    return net->layer_count ? net->layers[net->layer_count - 1]->out_shape
                            : net->input_shape;
}

/* Makes room for one more layer pointer. */
static int grow_layers(ibvi_net *net, const char *fn)
{
    if (net->layer_count < net->layer_capacity)
        return IBVI_OK;
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
    return IBVI_OK;
}

int ibvi__net_add_layer(ibvi_net *net, const char *fn, int32_t kind,
                        const ibvi_layer *proto, int32_t rank)
{
    IBVI_CHECK_NOT_NULL(fn, net);
    ibvi_layer l = *proto;
    l.net = net;
    l.kind = kind;
    l.ops = ibvi__ops_of(kind);
    l.index = net->layer_count;
    l.in_shape = last_shape(net);
    int status = l.ops->configure(&l, fn);
    if (status < 0)
        return status;
    const int64_t out_size = ibvi__shape_size(l.out_shape);
    if (out_size > IBVI__MAX_DIM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the output would hold %lld values per example, "
                          "expected at most %d", fn, (long long)out_size,
                          IBVI__MAX_DIM);
    l.inputs = (int32_t)ibvi__shape_size(l.in_shape);
    l.outputs = (int32_t)out_size;
    const int64_t params = l.params;
    if (rank != 0 && !(l.ops->flags & IBVI__OPS_VARIATIONAL))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: rank = %d, expected 0 (a %s layer is "
                          "deterministic)", fn, (int)rank, l.ops->name);
    if (rank < 0 || rank > params)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: rank = %d, expected 0..%lld (P = %lld, the "
                          "layer's parameter count)", fn, (int)rank,
                          (long long)params, (long long)params);
    /* Bounding the total keeps every later size computation (parameters,
     * gradients, optimizer state, samples x P) far from overflow. Compare
     * by division: the product itself overflows int64 for P near 1e16. */
    if (params > (MAX_PARAMS - net->param_floats) / (1 + (int64_t)rank))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: %lld parameters with rank %d would make the "
                          "network hold more than %lld parameters", fn,
                          (long long)params, (int)rank, (long long)MAX_PARAMS);
    if (net->initialized)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network is initialised; layers can only be "
                          "added before ibvi_net_init", fn);
    l.rank = rank;
    l.covariance = rank > 0 ? IBVI__COV_LOWRANK : IBVI__COV_NONE;
    l.noise_dim = rank;
    l.init_sigma = 0.0f;
    status = grow_layers(net, fn);
    if (status < 0)
        return status;
    ibvi_layer *layer = ibvi__alloc(&net->allocator, 1, sizeof *layer);
    if (!layer)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    *layer = l;
    net->layers[net->layer_count++] = layer;
    net->param_floats += params * (1 + (int64_t)rank);
    if (l.outputs > net->max_width)
        net->max_width = l.outputs;
    return IBVI_OK;
}

/* ---- initialisation ------------------------------------------------------ */

/* Allocates the parameter block and points every layer into it:
 * mean (P), mean gradient (P), factor (P x R) per layer, for a
 * diagonal layer rho (P) and its gradient (P), for a diag-lowrank (SWAG)
 * layer d (P; it has no gradient: it is never trained). The factor's
 * gradient is never stored (see network.h). */
static int allocate_parameters(ibvi_net *net)
{
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        total += 2 * l->params + ibvi__covariance_floats(l) +
                 (l->covariance == IBVI__COV_DIAGONAL ? l->params : 0);
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
        l->rho = l->grad_rho = l->diag = NULL;
        switch ((ibvi__covariance)l->covariance) {
        case IBVI__COV_NONE:
        case IBVI__COV_LOWRANK:
            break;
        case IBVI__COV_DIAGONAL:
            l->rho = cursor;
            l->grad_rho = cursor + P;
            cursor += 2 * P;
            break;
        case IBVI__COV_DIAG_LOWRANK:
            l->diag = cursor;
            cursor += P;
            break;
        }
        l->noise_offset = noise_offset;
        noise_offset += l->noise_dim;
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
        !(net->layers[net->layer_count - 1]->ops->flags &
          IBVI__OPS_WEIGHT_MATRIX))
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network must end with a layer with a "
                          "weight matrix (dense or conv2d)", fn);
    if (!net->param_block) {
        int status = allocate_parameters(net);
        if (status < 0)
            return status;
    }
    ibvi__net_settle(net); /* the factors are drawn anew */
    ibvi__param_configure(net, parameterization);
    ibvi__param_draw_prior(net, seed);
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        memset(l->grad_mean, 0, (size_t)l->params * sizeof(float));
        if (l->grad_rho)
            memset(l->grad_rho, 0, (size_t)l->params * sizeof(float));
        for (int k = 0; k < 2 * IBVI__MAX_GROUPS; k++)
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
/* Floats of a layer's kept scratch (layer_ops.h): enough for one call on
 * all rows and for one region per sample block. */
static int64_t kept_scratch(const ibvi_layer *l, int64_t rows, int32_t samples)
{
    const int64_t all = l->ops->scratch_floats(l, rows);
    const int64_t blocks = samples * l->ops->scratch_floats(l, rows / samples);
    return all > blocks ? all : blocks;
}

/* The largest shared scratch any layer needs for `rows` rows. */
static int64_t shared_scratch(const ibvi_net *net, int64_t rows)
{
    int64_t most = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->ops->scratch_floats && !l->ops->scratch_kept) {
            const int64_t floats = l->ops->scratch_floats(l, rows);
            most = floats > most ? floats : most;
        }
    }
    return most;
}

static int64_t workspace_floats(const ibvi_net *net, int64_t rows,
                                int32_t samples)
{
    double bound = (double)rows * (net->input_dim + 3.0 * net->max_width) +
                   3.0 * samples * net->noise_size +
                   16.0 * (8.0 + 5.0 * net->layer_count) +
                   (double)shared_scratch(net, rows);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        bound += (double)rows * l->outputs * (l->skip_readers > 0 ? 2 : 1);
        if (ibvi__is_variational(l))
            bound += 2.0 * samples * (double)l->params;
        if (l->ops->scratch_floats && l->ops->scratch_kept)
            bound += (double)kept_scratch(l, rows, samples);
    }
    if (!(bound <= 0x1p60))
        return -1;
    int64_t total = padded(rows * net->input_dim) +
                    2 * padded(rows * net->max_width) +
                    3 * padded((int64_t)samples * net->noise_size) +
                    padded(rows * last_width(net)) +
                    padded(shared_scratch(net, rows));
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        total += padded(rows * l->outputs);
        if (ibvi__is_variational(l))
            total += padded(samples * l->params) * (samples > 1 ? 2 : 1);
        if (l->ops->scratch_floats && l->ops->scratch_kept)
            total += padded(kept_scratch(l, rows, samples));
        if (l->skip_readers > 0)
            total += padded(rows * l->outputs);
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
    const int64_t shared = shared_scratch(net, rows);
    net->scratch = shared > 0 ? take(&cursor, shared) : NULL;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        l->output = take(&cursor, rows * l->outputs);
        if (!l->ops->scratch_floats)
            l->scratch = NULL;
        else if (l->ops->scratch_kept)
            l->scratch = take(&cursor, kept_scratch(l, rows, samples));
        else
            l->scratch = net->scratch;
        l->grad_skip = l->skip_readers > 0 ? take(&cursor, rows * l->outputs)
                                           : NULL;
        const int variational = ibvi__is_variational(l);
        l->sampled = variational ? take(&cursor, samples * l->params) : NULL;
        float *sample_grad = (variational && samples > 1)
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
    /* The optimizers' windows of deferred factor updates too, so that
     * training allocates nothing (optimizer.c). */
    status = ibvi__net_reserve_windows(net, max_samples, fn);
    if (status < 0)
        return status;
    return ibvi__net_reserve(net, max_rows * max_samples, max_samples, fn);
}

/* ---- queries ------------------------------------------------------------- */

int32_t ibvi_net_input_dim(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_input_dim", net);
    return net->input_dim;
}

int ibvi_net_input_shape(const ibvi_net *net, int32_t *channels,
                         int32_t *height, int32_t *width)
{
    static const char fn[] = "ibvi_net_input_shape";
    IBVI_CHECK_NOT_NULL(fn, net);
    IBVI_CHECK_NOT_NULL(fn, channels);
    IBVI_CHECK_NOT_NULL(fn, height);
    IBVI_CHECK_NOT_NULL(fn, width);
    *channels = net->input_shape.c;
    *height = net->input_shape.h;
    *width = net->input_shape.w;
    return IBVI_OK;
}

int32_t ibvi_net_output_dim(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_output_dim", net);
    for (int32_t i = net->layer_count - 1; i >= 0; i--)
        if (net->layers[i]->ops->flags & IBVI__OPS_WEIGHT_MATRIX)
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
        total += net->layers[i]->noise_dim;
    return total;
}

int64_t ibvi_net_param_count(const ibvi_net *net)
{
    IBVI_CHECK_NOT_NULL("ibvi_net_param_count", net);
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        total += net->layers[i]->params +
                 ibvi__covariance_floats(net->layers[i]);
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

/* ---- covariance families ------------------------------------------------- */

int64_t ibvi__covariance_floats(const ibvi_layer *l)
{
    switch ((ibvi__covariance)l->covariance) {
    case IBVI__COV_NONE:
        return 0;
    case IBVI__COV_LOWRANK:
        return l->params * (int64_t)l->rank;
    case IBVI__COV_DIAGONAL:
        return l->params;
    case IBVI__COV_DIAG_LOWRANK:
        return l->params * (1 + (int64_t)l->rank);
    }
    return 0;
}

int ibvi_net_set_covariance(ibvi_net *net, int32_t layer,
                            const ibvi_covariance_options *options)
{
    static const char fn[] = "ibvi_net_set_covariance";
    IBVI_CHECK_NOT_NULL(fn, net);
    IBVI_CHECK_NOT_NULL(fn, options);
    if (options->version != IBVI_COVARIANCE_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->version = %u, expected "
                          "IBVI_COVARIANCE_OPTIONS_VERSION (%d)", fn,
                          (unsigned)options->version,
                          IBVI_COVARIANCE_OPTIONS_VERSION);
    if (net->initialized)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the network is initialised; the covariance "
                          "family is chosen before ibvi_net_init", fn);
    if (layer < 0 || layer >= net->layer_count)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: layer = %d, expected 0..%d", fn, (int)layer,
                          (int)net->layer_count - 1);
    ibvi_layer *l = net->layers[layer];
    const int32_t family = options->family, rank = options->rank;
    const float sigma = options->init_sigma;
    if (l->params == 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: layer %d (%s) has no parameters", fn,
                          (int)layer, l->ops->name);
    if (family < 0 || family >= IBVI__COV_COUNT)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->family = %d, expected "
                          "IBVI_COVARIANCE_NONE (0), _LOWRANK (1), "
                          "_DIAGONAL (2) or _DIAG_LOWRANK (3)", fn,
                          (int)family);
    /* SWAG's R counts collected deviations, so it may exceed a small
     * layer's P (S S^T then simply has rank <= P). */
    const int32_t max_rank =
        family == IBVI__COV_DIAG_LOWRANK ? IBVI_DIAG_LOWRANK_MAX_RANK
        : family == IBVI__COV_LOWRANK
            ? (int32_t)(l->params < INT32_MAX ? l->params : INT32_MAX)
            : 0;
    if (max_rank > 0 ? (rank < 1 || rank > max_rank) : rank != 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->rank = %d, expected %s", fn,
                          (int)rank,
                          family == IBVI__COV_LOWRANK
                              ? "1..P (the layer's parameter count)"
                          : family == IBVI__COV_DIAG_LOWRANK
                              ? "1..IBVI_DIAG_LOWRANK_MAX_RANK (1024)"
                              : "0 (only the low-rank families have a "
                                "rank)");
    if (family == IBVI__COV_DIAGONAL ? !(sigma >= 0.0f && sigma <= 1.0f)
                                     : sigma != 0.0f)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: options->init_sigma = %g, expected %s", fn,
                          (double)sigma,
                          family == IBVI__COV_DIAGONAL
                              ? "0 (the default) or a value in (0, 1]"
                              : "0 (only the diagonal family has one)");
    if (family == IBVI__COV_LOWRANK &&
        !(l->ops->flags & IBVI__OPS_VARIATIONAL))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: a %s layer cannot carry a low-rank "
                          "covariance (only dense and conv2d layers)", fn,
                          l->ops->name);
    if (family != IBVI__COV_NONE && l->kind == IBVI__KIND_RESIDUAL)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: a residual's projection stays deterministic "
                          "(it reads another layer's output in one call "
                          "over all rows)", fn);
    ibvi_layer trial = *l;
    trial.covariance = family;
    trial.rank = rank;
    const int64_t old_floats = l->params + ibvi__covariance_floats(l);
    const int64_t new_floats = l->params + ibvi__covariance_floats(&trial);
    if (new_floats > MAX_PARAMS - (net->param_floats - old_floats))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the network would hold more than %lld "
                          "parameters", fn, (long long)MAX_PARAMS);
    int64_t noise = 0; /* z per sample, int32 (ibvi_net_noise_size) */
    for (int32_t i = 0; i < net->layer_count; i++)
        noise += i == layer ? 0 : net->layers[i]->noise_dim;
    const int64_t draws = family == IBVI__COV_LOWRANK    ? rank
                          : family == IBVI__COV_DIAGONAL ? l->params
                          : family == IBVI__COV_DIAG_LOWRANK
                              ? l->params + rank
                              : 0;
    if (draws > MAX_NOISE - noise)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the network's noise per sample would exceed "
                          "%lld values (a diagonal layer draws P, a "
                          "diag-lowrank one P + R)", fn, (long long)MAX_NOISE);
    net->param_floats += new_floats - old_floats;
    l->covariance = family;
    l->rank = rank;
    l->noise_dim = (int32_t)draws;
    l->init_sigma = family == IBVI__COV_DIAGONAL
                        ? (sigma > 0.0f ? sigma : IBVI_DEFAULT_INIT_SIGMA)
                        : 0.0f;
    return IBVI_OK;
}

int32_t ibvi_layer_covariance(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_covariance", layer);
    return layer->covariance;
}

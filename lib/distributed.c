/*
 * libibvi - the data-parallel interface (include/ibvi/distributed.h): all
 * parameters and gradients of a network as one flat buffer, a step from a
 * host's gradients, and a noise stream per process.
 *
 * The parameter block keeps each layer's mean, mean gradient and factor
 * together (network.h), so the flat buffers are copies, one memcpy per
 * layer and part; the factor gradient G^T Z is formed straight into the
 * host's buffer (gaussian.c). A host step hands the buffer to the
 * optimizer, which reads it like stored gradients (optimizer.c); its bounds
 * on |gradient| per range, which decide whether the step can skip its exact
 * finiteness check, are measured here in the buffer itself.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <string.h>

#include "ibvi/distributed.h"
#include "network.h"

/* Floats of one layer's slice of the flat layout: mean and factor. */
static int64_t slice_floats(const ibvi_layer *l)
{
    return l->params * (1 + (int64_t)l->rank);
}

/* IBVI_OK when every layer is deterministic or low rank: the flat layout
 * (distributed.h) has no place for a mean-field layer's rho yet. */
static int check_families(const ibvi_net *net, const char *fn)
{
    for (int32_t i = 0; i < net->layer_count; i++) {
        switch ((ibvi__covariance)net->layers[i]->covariance) {
        case IBVI__COV_NONE:
        case IBVI__COV_LOWRANK:
            break;
        case IBVI__COV_DIAGONAL:
            return ibvi__fail(IBVI_ERR_UNSUPPORTED,
                              "%s: layer %d is mean-field (diagonal); the "
                              "flat buffers cover deterministic and low-rank "
                              "layers only", fn, (int)i);
        case IBVI__COV_DIAG_LOWRANK:
            return ibvi__fail(IBVI_ERR_UNSUPPORTED,
                              "%s: layer %d is diag-lowrank (SWAG); the "
                              "flat buffers cover deterministic and low-rank "
                              "layers only (SWAG's moments are collected by "
                              "ibvi_swag_collect, not trained)", fn, (int)i);
        }
    }
    return IBVI_OK;
}

/* A ready network of deterministic and low-rank layers, and a buffer of
 * exactly param_count floats. */
static int check_flat(const ibvi_net *net, const char *fn, const void *buf,
                      int64_t len)
{
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_families(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, buf);
    if (len != net->param_floats)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: len = %lld, expected ibvi_net_param_count = "
                          "%lld", fn, (long long)len,
                          (long long)net->param_floats);
    return IBVI_OK;
}

int ibvi_net_get_params(const ibvi_net *net, float *buf, int64_t len)
{
    int status = check_flat(net, "ibvi_net_get_params", buf, len);
    if (status < 0)
        return status;
    ibvi__net_settle((ibvi_net *)net); /* deferred factor steps (network.h) */
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const int64_t P = l->params;
        memcpy(buf, l->mean, (size_t)P * sizeof(float));
        memcpy(buf + P, l->factor, (size_t)(P * l->rank) * sizeof(float));
        buf += slice_floats(l);
    }
    return IBVI_OK;
}

int ibvi_net_set_params(ibvi_net *net, const float *buf, int64_t len)
{
    static const char fn[] = "ibvi_net_set_params";
    int status = check_flat(net, fn, buf, len);
    if (status < 0)
        return status;
    if (!ibvi__all_finite(buf, len))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: buf holds NaN or infinity; the network is "
                          "unchanged", fn);
    ibvi__net_settle(net); /* the velocities take the deferred steps */
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        const int64_t P = l->params;
        memcpy(l->mean, buf, (size_t)P * sizeof(float));
        memcpy(l->factor, buf + P, (size_t)(P * l->rank) * sizeof(float));
        buf += slice_floats(l);
    }
    /* As ibvi_layer_set_mean: the cached forward used the old parameters,
     * and an optimizer's bounds on them no longer hold. */
    net->forward_valid = 0;
    net->param_version++;
    return IBVI_OK;
}

int ibvi_net_get_grads(const ibvi_net *net, float *grads, int64_t len)
{
    static const char fn[] = "ibvi_net_get_grads";
    int status = check_flat(net, fn, grads, len);
    if (status < 0)
        return status;
    if (!net->has_gradients)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no gradients yet (call ibvi_net_backward "
                          "first)", fn);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const int64_t P = l->params;
        memcpy(grads, l->grad_mean, (size_t)P * sizeof(float));
        if (l->rank > 0) {
            const ibvi__factor_grad fg = ibvi__gaussian_factor_grad(l);
            ibvi__factor_grad_span(&fg, 0, P * l->rank, grads + P);
        }
        grads += slice_floats(l);
    }
    return IBVI_OK;
}

/* The bounds of one layer's slice, indexed as grad_bound (network.h): the
 * mean's groups, then the factor's rows of each group. */
static void measure_slice(ibvi_layer *l, const float *slice)
{
    const int32_t G = l->group_count;
    const int64_t R = l->rank;
    for (int32_t g = 0; g < G; g++) {
        const ibvi__param_group *grp = &l->groups[g];
        l->host_grad_bound[g] = ibvi__max_abs(slice + grp->offset, grp->count);
        l->host_grad_bound[G + g] =
            R > 0 ? ibvi__max_abs(slice + l->params + grp->offset * R,
                                  grp->count * R)
                  : 0.0;
    }
}

int ibvi_optimizer_step_grads(ibvi_optimizer *opt, const float *grads,
                              int64_t len)
{
    static const char fn[] = "ibvi_optimizer_step_grads";
    IBVI_CHECK_NOT_NULL(fn, opt);
    ibvi_net *net = ibvi__optimizer_net(opt);
    int status = check_flat(net, fn, grads, len);
    if (status < 0)
        return status;
    status = ibvi__optimizer_check_step(opt, fn);
    if (status < 0)
        return status;
    /* One pass: the bounds are infinite or NaN where a value is not finite
     * (ibvi__max_abs), so they are the finiteness check as well. They live
     * in scratch fields only this step reads. */
    const float *slice = grads;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        if (l->params == 0)
            continue;
        measure_slice(l, slice);
        for (int32_t k = 0; k < 2 * l->group_count; k++)
            if (!(l->host_grad_bound[k] <= FLT_MAX))
                return ibvi__fail(IBVI_ERR_NONFINITE,
                                  "%s: grads holds NaN or infinity (layer "
                                  "%d); nothing changed", fn, (int)i);
        slice += slice_floats(l);
    }
    const ibvi__host_grads host = {.flat = grads, .scale = 1.0f};
    return ibvi__optimizer_step_host(opt, fn, &host);
}

int ibvi_net_set_noise_stream(ibvi_net *net, uint64_t stream)
{
    static const char fn[] = "ibvi_net_set_noise_stream";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (stream > UINT32_MAX)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: stream = %llu, expected 0..2^32 - 1", fn,
                          (unsigned long long)stream);
    /* Weights a step drew ahead with the old stream's noise stay unused:
     * the next forward compares its noise with theirs (passes.c). */
    net->noise_rng.substream = (uint32_t)stream;
    return IBVI_OK;
}

int ibvi_net_noise_stream(const ibvi_net *net, uint64_t *stream)
{
    static const char fn[] = "ibvi_net_noise_stream";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, stream);
    *stream = net->noise_rng.substream;
    return IBVI_OK;
}

/* ---- the factored layout ------------------------------------------------- */

/* Floats of one layer's part of the factored layout for `samples`. */
static int64_t factored_floats(const ibvi_layer *l, int64_t samples)
{
    return l->rank > 0 ? samples * (l->params + l->rank) : l->params;
}

/* The whole layout's floats, or -1 when it would not fit in an int64. */
static int64_t factored_size(const ibvi_net *net, int64_t samples)
{
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const int64_t f = factored_floats(l, samples);
        if (f > INT64_MAX / 2 - total)
            return -1;
        total += f;
    }
    return total;
}

int64_t ibvi_net_grads_factored_size(const ibvi_net *net, int32_t samples)
{
    static const char fn[] = "ibvi_net_grads_factored_size";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_families(net, fn);
    if (status < 0)
        return status;
    if (samples < 1 || samples > IBVI_MAX_SAMPLES)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: samples = %d, expected 1..%d", fn, (int)samples,
                          IBVI_MAX_SAMPLES);
    return factored_size(net, samples);
}

int ibvi_net_get_grads_factored(const ibvi_net *net, float *buf, int64_t len)
{
    static const char fn[] = "ibvi_net_get_grads_factored";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_families(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, buf);
    if (!net->has_gradients)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no gradients yet (call ibvi_net_backward "
                          "first)", fn);
    /* The mean network's backward: one sample, G = dL/dmu, Z = 0. */
    const int32_t S = net->grad_samples > 0 ? net->grad_samples : 1;
    const int64_t expected = factored_size(net, S);
    if (len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: len = %lld, expected "
                          "ibvi_net_grads_factored_size(net, %d) = %lld", fn,
                          (long long)len, (int)S, (long long)expected);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const int64_t P = l->params, R = l->rank;
        if (R == 0) {
            memcpy(buf, l->grad_mean, (size_t)P * sizeof(float));
        } else {
            const ibvi__factor_grad fg = ibvi__gaussian_factor_grad(l);
            if (fg.g == NULL) {
                memcpy(buf, l->grad_mean, (size_t)P * sizeof(float));
                memset(buf + P, 0, (size_t)R * sizeof(float));
            } else {
                memcpy(buf, fg.g, (size_t)(S * P) * sizeof(float));
                for (int32_t m = 0; m < S; m++)
                    memcpy(buf + S * P + m * R, fg.z + m * fg.z_stride,
                           (size_t)R * sizeof(float));
            }
        }
        buf += factored_floats(l, S);
    }
    return IBVI_OK;
}

/* The means' gradients of the blocks, summed and scaled into mean (as the
 * flat path's host would: each block's sum over its samples in order, then
 * the sum over the blocks in order, then the scale), and every layer's
 * bounds. 0, or the index of a layer whose blocks are not finite. */
static int32_t prepare_factored(ibvi_net *net, const float *blocks,
                                int32_t count, int64_t len, int32_t S,
                                float scale, float *mean, float *tmp)
{
    const float *part = blocks; /* layer i's part of block 0 */
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        const int64_t P = l->params, R = l->rank;
        const int64_t floats = factored_floats(l, S);
        const int32_t G = l->group_count, samples = R > 0 ? S : 1;
        double bound[IBVI__MAX_GROUPS] = {0.0};
        for (int32_t b = 0; b < count; b++) {
            const float *g = part + b * len;
            if (!(ibvi__max_abs(g, floats) <= FLT_MAX))
                return i;
            /* This block's mean gradient g_0 + g_1 + ... (as the backward
             * sums it), then added to the blocks before it. */
            float *acc = b == 0 ? mean : tmp;
            memcpy(acc, g, (size_t)P * sizeof(float));
            for (int32_t m = 1; m < samples; m++)
                for (int64_t p = 0; p < P; p++)
                    acc[p] += g[m * P + p];
            if (b > 0)
                for (int64_t p = 0; p < P; p++)
                    mean[p] += tmp[p];
            /* |G^T Z entries| <= sum over samples of max|g_m| max|z_m| */
            for (int32_t m = 0; R > 0 && m < samples; m++) {
                const double z_max = ibvi__max_abs(g + S * P + m * R, R);
                for (int32_t k = 0; k < G; k++)
                    bound[k] += ibvi__max_abs(g + m * P + l->groups[k].offset,
                                              l->groups[k].count) * z_max;
            }
        }
        for (int64_t p = 0; p < P; p++)
            mean[p] *= scale;
        const double slack = ibvi__rounding_slack((double)count * S);
        for (int32_t k = 0; k < G; k++) {
            const ibvi__param_group *grp = &l->groups[k];
            l->host_grad_bound[k] = ibvi__max_abs(mean + grp->offset,
                                                  grp->count);
            l->host_grad_bound[G + k] = bound[k] * slack * scale;
        }
        mean += P;
        part += floats;
    }
    return -1;
}

int ibvi_optimizer_step_factored(ibvi_optimizer *opt, const float *blocks,
                                 int32_t count, int64_t len)
{
    static const char fn[] = "ibvi_optimizer_step_factored";
    IBVI_CHECK_NOT_NULL(fn, opt);
    ibvi_net *net = ibvi__optimizer_net(opt);
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_families(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, blocks);
    if (count < 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: count = %d, expected 1 or more blocks", fn,
                          (int)count);
    /* len = (deterministic floats) + S (variational P + R): find S. */
    int64_t fixed = 0, per_sample = 0, means = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        means += l->params;
        if (l->rank > 0)
            per_sample += l->params + l->rank;
        else
            fixed += l->params;
    }
    int64_t S = per_sample > 0 && len > fixed ? (len - fixed) / per_sample : 1;
    if (len < fixed || S < 1 || S > IBVI_MAX_SAMPLES ||
        factored_size(net, S) != len)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: len = %lld is ibvi_net_grads_factored_size "
                          "for no sample count", fn, (long long)len);
    if (len > INT64_MAX / count)
        return ibvi__fail(IBVI_ERR_SHAPE, "%s: count x len overflows", fn);
    status = ibvi__optimizer_check_step(opt, fn);
    if (status < 0)
        return status;
    int64_t widest = 1;
    for (int32_t i = 0; i < net->layer_count; i++)
        widest = net->layers[i]->params > widest ? net->layers[i]->params
                                                 : widest;
    /* The means' summed gradients and one block's: a buffer of this call. */
    float *mean = ibvi__alloc(&net->allocator, (size_t)(means + widest),
                              sizeof(float));
    if (!mean)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    const float scale = 1.0f / (float)count;
    const int32_t bad = prepare_factored(net, blocks, count, len, (int32_t)S,
                                         scale, mean, mean + means);
    if (bad >= 0) {
        ibvi__free(&net->allocator, mean);
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: the blocks hold NaN or infinity (layer %d); "
                          "nothing changed", fn, (int)bad);
    }
    const ibvi__host_grads host = {.blocks = blocks, .mean = mean,
                                   .count = count, .samples = (int32_t)S,
                                   .len = len, .scale = scale};
    status = ibvi__optimizer_step_host(opt, fn, &host);
    ibvi__free(&net->allocator, mean);
    return status;
}

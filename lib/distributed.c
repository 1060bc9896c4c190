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

/* A ready network and a buffer of exactly param_count floats. */
static int check_flat(const ibvi_net *net, const char *fn, const void *buf,
                      int64_t len)
{
    int status = ibvi__net_check_ready(net, fn);
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
    return ibvi__optimizer_step_host(opt, fn, grads);
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

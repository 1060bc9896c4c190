/*
 * libibvi - networks built like another one: the same input shape and
 * layers, every layer deterministic, not initialised (ibvi_net_create_like).
 * SWAG and the Laplace approximation use it to build the network that
 * carries their posterior beside the trained one; a host can use it for
 * ensembles or to give a trained architecture another covariance.
 *
 * Each layer is rebuilt through ibvi__net_add_layer from a prototype that
 * holds only the kind's configuration (the union of struct ibvi_layer),
 * so its configure re-derives shapes, groups and geometry and nothing of
 * the source's state (pointers, bounds, workspace) is carried over.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <string.h>

#include "ibvi/net.h"
#include "network.h"

/* The kind's configuration: from the union's first member up to the
 * first field after it. */
#define CONFIG_BEGIN offsetof(ibvi_layer, units)
#define CONFIG_END offsetof(ibvi_layer, covariance)

int ibvi__net_clone_architecture(const ibvi_net *src, const char *fn,
                                 ibvi_net **out)
{
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, src);
    const ibvi__shape in = src->input_shape;
    ibvi_net *net = NULL;
    int status = in.h == 1 && in.w == 1
                     ? ibvi_net_create(&net, in.c, &src->allocator)
                     : ibvi_net_create_image(&net, in.c, in.h, in.w,
                                             &src->allocator);
    if (status < 0) /* src's shape is valid: only memory can fail */
        return ibvi__fail(status, "%s: out of memory", fn);
    for (int32_t i = 0; i < src->layer_count && status >= 0; i++) {
        const ibvi_layer *l = src->layers[i];
        ibvi_layer proto;
        memset(&proto, 0, sizeof proto);
        memcpy((char *)&proto + CONFIG_BEGIN, (const char *)l + CONFIG_BEGIN,
               CONFIG_END - CONFIG_BEGIN);
        status = ibvi__net_add_layer(net, fn, l->kind, &proto, 0);
        /* A residual counts itself among its source's readers, as
         * ibvi_net_add_residual does. */
        if (status >= 0 && l->kind == IBVI__KIND_RESIDUAL &&
            l->residual.from >= 0)
            net->layers[l->residual.from]->skip_readers++;
    }
    if (status >= 0)
        net->threads = src->threads;
    if (status < 0) {
        ibvi_net_free(net);
        return status;
    }
    *out = net;
    return IBVI_OK;
}

int ibvi__net_copy_means(ibvi_net *dst, const ibvi_net *src, const char *fn)
{
    IBVI_CHECK_NOT_NULL(fn, dst);
    IBVI_CHECK_NOT_NULL(fn, src);
    if (!dst->initialized || !src->initialized)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: both networks must be initialised", fn);
    if (dst->layer_count != src->layer_count)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the networks have %d and %d layers", fn,
                          (int)dst->layer_count, (int)src->layer_count);
    for (int32_t i = 0; i < src->layer_count; i++)
        if (dst->layers[i]->kind != src->layers[i]->kind ||
            dst->layers[i]->params != src->layers[i]->params)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: layer %d differs (%s with %lld parameters "
                              "against %s with %lld)", fn, (int)i,
                              dst->layers[i]->ops->name,
                              (long long)dst->layers[i]->params,
                              src->layers[i]->ops->name,
                              (long long)src->layers[i]->params);
    for (int32_t i = 0; i < src->layer_count; i++)
        if (src->layers[i]->params)
            memcpy(dst->layers[i]->mean, src->layers[i]->mean,
                   (size_t)src->layers[i]->params * sizeof(float));
    dst->param_version++;
    dst->forward_valid = 0;
    dst->presampled = 0;
    return IBVI_OK;
}

int ibvi_net_create_like(ibvi_net **out, const ibvi_net *src)
{
    return ibvi__net_clone_architecture(src, "ibvi_net_create_like", out);
}

/*
 * libibvi - SWAG (include/ibvi/swag.h, docs/swag.md): the moments and the
 * deviation ring of a trained network's SGD iterates, and the network
 * carrying the Gaussian they define (the DIAG_LOWRANK family, gaussian.c).
 *
 * The collector holds, over all layers' means in layer order (P_total
 * entries), the running mean and mean square in double and a ring of
 * `rank` deviation columns in float (column c at dev + c * P_total: one
 * snapshot's column is contiguous). It keeps an uninitialised copy of the
 * architecture (clone.c) to check later networks against and to build the
 * posterior from.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ibvi/swag.h"
#include "network.h"

struct ibvi_swag {
    ibvi_allocator allocator;
    ibvi_net *arch;        /* the architecture, not initialised        */
    int32_t parameterization;
    uint64_t seed;
    int32_t rank;          /* most columns kept                        */
    int64_t entries;       /* P_total: the means of every layer        */
    int64_t count;         /* snapshots collected                      */
    double *mean, *sq;     /* entries each                             */
    float *dev;            /* rank x entries: the ring                 */
    int32_t next;          /* the ring's slot for the next column      */
};

int ibvi_swag_options_init(ibvi_swag_options *opts)
{
    IBVI_CHECK_NOT_NULL("ibvi_swag_options_init", opts);
    *opts = (ibvi_swag_options)IBVI_SWAG_OPTIONS_INIT;
    return IBVI_OK;
}

static int64_t mean_entries(const ibvi_net *net)
{
    int64_t total = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        total += net->layers[i]->params;
    return total;
}

int ibvi_swag_create(ibvi_swag **out, const ibvi_net *net,
                     const ibvi_swag_options *opts)
{
    static const char fn[] = "ibvi_swag_create";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    const ibvi_swag_options o =
        opts ? *opts : (ibvi_swag_options)IBVI_SWAG_OPTIONS_INIT;
    if (o.version != IBVI_SWAG_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->version = %u, expected "
                          "IBVI_SWAG_OPTIONS_VERSION (%d): fill the options "
                          "with ibvi_swag_options_init", fn,
                          (unsigned)o.version, IBVI_SWAG_OPTIONS_VERSION);
    if (o.rank < 2 || o.rank > IBVI_DIAG_LOWRANK_MAX_RANK)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->rank = %d, expected 2..%d (the "
                          "deviation columns kept)", fn, (int)o.rank,
                          IBVI_DIAG_LOWRANK_MAX_RANK);
    for (int32_t i = 0; i < net->layer_count; i++)
        if (net->layers[i]->covariance != IBVI__COV_NONE)
            return ibvi__fail(IBVI_ERR_STATE,
                              "%s: layer %d is not deterministic; SWAG "
                              "collects the iterates of a deterministic "
                              "network", fn, (int)i);
    const int64_t entries = mean_entries(net);
    ibvi_swag *swag = ibvi__calloc(&net->allocator, 1, sizeof *swag);
    double *moments = ibvi__calloc(&net->allocator, 2 * (size_t)entries,
                                   sizeof(double));
    float *dev = ibvi__alloc(&net->allocator,
                             (size_t)o.rank * (size_t)entries, sizeof(float));
    ibvi_net *arch = NULL;
    if (swag && moments && dev)
        status = ibvi__net_clone_architecture(net, fn, &arch);
    if (!swag || !moments || !dev || status < 0) {
        ibvi__free(&net->allocator, swag);
        ibvi__free(&net->allocator, moments);
        ibvi__free(&net->allocator, dev);
        return status < 0 ? status
                          : ibvi__fail(IBVI_ERR_NOMEM,
                                       "%s: out of memory for %lld "
                                       "parameters and rank %d", fn,
                                       (long long)entries, (int)o.rank);
    }
    *swag = (ibvi_swag){.allocator = net->allocator, .arch = arch,
                        .parameterization = net->parameterization,
                        .seed = net->seed, .rank = o.rank,
                        .entries = entries, .mean = moments,
                        .sq = moments + entries, .dev = dev};
    *out = swag;
    return IBVI_OK;
}

void ibvi_swag_free(ibvi_swag *swag)
{
    if (!swag)
        return;
    const ibvi_allocator a = swag->allocator;
    ibvi_net_free(swag->arch);
    ibvi__free(&a, swag->mean); /* the moments' one block */
    ibvi__free(&a, swag->dev);
    ibvi__free(&a, swag);
}

/* IBVI_OK when net is built like the collector's architecture. */
static int check_architecture(const ibvi_swag *swag, const ibvi_net *net,
                              const char *fn)
{
    const ibvi_net *a = swag->arch;
    const ibvi__shape x = net->input_shape, y = a->input_shape;
    if (x.c != y.c || x.h != y.h || x.w != y.w)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: the network's input is (%d, %d, %d), the "
                          "collector's (%d, %d, %d)", fn, (int)x.c, (int)x.h,
                          (int)x.w, (int)y.c, (int)y.h, (int)y.w);
    if (net->layer_count != a->layer_count)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: the network has %d layers, the collector's "
                          "%d", fn, (int)net->layer_count,
                          (int)a->layer_count);
    for (int32_t i = 0; i < a->layer_count; i++) {
        const ibvi_layer *l = net->layers[i], *m = a->layers[i];
        if (l->kind != m->kind || l->params != m->params ||
            l->out_shape.c != m->out_shape.c ||
            l->out_shape.h != m->out_shape.h ||
            l->out_shape.w != m->out_shape.w)
            return ibvi__fail(IBVI_ERR_SHAPE,
                              "%s: layer %d differs from the collector's (%s "
                              "with %lld parameters against %s with %lld)",
                              fn, (int)i, l->ops->name, (long long)l->params,
                              m->ops->name, (long long)m->params);
    }
    return IBVI_OK;
}

int ibvi_swag_collect(ibvi_swag *swag, const ibvi_net *net)
{
    static const char fn[] = "ibvi_swag_collect";
    IBVI_CHECK_NOT_NULL(fn, swag);
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_architecture(swag, net, fn);
    if (status < 0)
        return status;
    for (int32_t i = 0; i < net->layer_count; i++)
        if (!ibvi__all_finite(net->layers[i]->mean, net->layers[i]->params))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: layer %d's mean holds NaN or infinity; "
                              "nothing collected", fn, (int)i);
    /* n-th snapshot: m += (x - m) / n, q += (x^2 - q) / n; the column is
     * x - m after the update (the paper's D_i = theta_i - theta_bar_i). */
    const double n = (double)(swag->count + 1);
    float *col = swag->dev + (int64_t)swag->next * swag->entries;
    int64_t e = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        for (int64_t p = 0; p < l->params; p++, e++) {
            const double x = l->mean[p];
            swag->mean[e] += (x - swag->mean[e]) / n;
            swag->sq[e] += (x * x - swag->sq[e]) / n;
            col[e] = (float)(x - swag->mean[e]);
        }
    }
    swag->count++;
    swag->next = (swag->next + 1) % swag->rank;
    return IBVI_OK;
}

int64_t ibvi_swag_count(const ibvi_swag *swag)
{
    IBVI_CHECK_NOT_NULL("ibvi_swag_count", swag);
    return swag->count;
}

/* Writes layer l's mean, d and S from the collector's entries e0 ..
 * e0 + P - 1 (K columns, the oldest first). */
static void install(const ibvi_swag *swag, ibvi_layer *l, int64_t e0,
                    int32_t K)
{
    const int64_t P = l->params;
    for (int64_t p = 0; p < P; p++)
        l->mean[p] = (float)swag->mean[e0 + p];
    if (l->covariance != IBVI__COV_DIAG_LOWRANK)
        return; /* a residual's projection: the SWA mean only */
    const double half = sqrt(0.5), scale = 1.0 / sqrt(2.0 * (K - 1));
    for (int64_t p = 0; p < P; p++) {
        const double m = swag->mean[e0 + p];
        const double var = swag->sq[e0 + p] - m * m;
        l->diag[p] = (float)(sqrt(var > 0.0 ? var : 0.0) * half);
    }
    /* The oldest kept column: slot `next` once the ring is full, else 0. */
    const int32_t first = swag->count > swag->rank ? swag->next : 0;
    for (int32_t k = 0; k < K; k++) {
        const float *col =
            swag->dev + (int64_t)((first + k) % swag->rank) * swag->entries +
            e0;
        for (int64_t p = 0; p < P; p++)
            l->factor[p * K + k] = (float)(col[p] * scale);
    }
}

int ibvi_swag_build(const ibvi_swag *swag, ibvi_net **out)
{
    static const char fn[] = "ibvi_swag_build";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, swag);
    if (swag->count < 2)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: %lld snapshot%s collected, SWAG needs at "
                          "least 2 (ibvi_swag_collect)", fn,
                          (long long)swag->count,
                          swag->count == 1 ? "" : "s");
    const int32_t K =
        swag->count < swag->rank ? (int32_t)swag->count : swag->rank;
    ibvi_net *net = NULL;
    int status = ibvi__net_clone_architecture(swag->arch, fn, &net);
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    o.family = IBVI_COVARIANCE_DIAG_LOWRANK;
    o.rank = K;
    o.init_sigma = 0.0f;
    for (int32_t i = 0; status >= 0 && i < net->layer_count; i++)
        if (net->layers[i]->params > 0 &&
            net->layers[i]->kind != IBVI__KIND_RESIDUAL)
            status = ibvi_net_set_covariance(net, i, &o);
    if (status >= 0)
        status = ibvi_net_init(net, swag->parameterization, swag->seed);
    if (status < 0) {
        /* The architecture was valid: what is left is memory, or a
         * network too large for the family (noise per sample); the
         * callee's message says which. */
        char detail[256];
        snprintf(detail, sizeof detail, "%s", ibvi_last_error());
        ibvi_net_free(net);
        return ibvi__fail(status, "%s: %s", fn, detail);
    }
    int64_t e = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        install(swag, net->layers[i], e, K);
        e += net->layers[i]->params;
    }
    net->param_version++;
    net->forward_valid = 0;
    *out = net;
    return IBVI_OK;
}

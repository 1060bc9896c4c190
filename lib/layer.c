/*
 * libibvi - the layer handle: shapes, prior, and copies of parameters and
 * gradients in and out (the factor gradient is formed on request from the
 * factors the backward kept).
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "network.h"

int32_t ibvi_layer_get_kind(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_get_kind", layer);
    return layer->kind;
}

int32_t ibvi_layer_get_role(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_get_role", layer);
    return layer->role;
}

int32_t ibvi_layer_has_bias(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_has_bias", layer);
    for (int32_t k = 0; k < layer->group_count; k++)
        if (layer->groups[k].role == IBVI__GROUP_BIAS)
            return 1;
    return 0;
}

int32_t ibvi_layer_get_activation(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_get_activation", layer);
    switch ((ibvi__kind)layer->kind) {
    case IBVI__KIND_ACTIVATION:
        return layer->activation;
    case IBVI__KIND_DENSE:
    case IBVI__KIND_CONV2D:
    case IBVI__KIND_MAXPOOL:
    case IBVI__KIND_AVGPOOL:
    case IBVI__KIND_GLOBAL_AVGPOOL:
    case IBVI__KIND_FLATTEN:
    case IBVI__KIND_GROUPNORM:
    case IBVI__KIND_RESIDUAL:
        break;
    }
    return ibvi__fail(IBVI_ERR_INVALID_ARG,
                      "ibvi_layer_get_activation: not an activation layer "
                      "(a %s layer)", layer->ops->name);
}

int ibvi_layer_shape(const ibvi_layer *layer, int32_t *inputs,
                     int32_t *outputs, int32_t *rank)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_shape", layer);
    if (inputs)
        *inputs = layer->inputs;
    if (outputs)
        *outputs = layer->outputs;
    if (rank)
        *rank = layer->rank;
    return IBVI_OK;
}

int ibvi_layer_output_shape(const ibvi_layer *layer, int32_t *channels,
                            int32_t *height, int32_t *width)
{
    static const char fn[] = "ibvi_layer_output_shape";
    IBVI_CHECK_NOT_NULL(fn, layer);
    IBVI_CHECK_NOT_NULL(fn, channels);
    IBVI_CHECK_NOT_NULL(fn, height);
    IBVI_CHECK_NOT_NULL(fn, width);
    *channels = layer->out_shape.c;
    *height = layer->out_shape.h;
    *width = layer->out_shape.w;
    return IBVI_OK;
}

int64_t ibvi_layer_param_count(const ibvi_layer *layer)
{
    IBVI_CHECK_NOT_NULL("ibvi_layer_param_count", layer);
    return layer->params;
}

/* The family's name in messages. */
static const char *family_name(int32_t covariance)
{
    switch ((ibvi__covariance)covariance) {
    case IBVI__COV_NONE:
        return "deterministic, rank 0";
    case IBVI__COV_LOWRANK:
        return "low rank";
    case IBVI__COV_DIAGONAL:
        return "diagonal";
    case IBVI__COV_DIAG_LOWRANK:
        return "diag-lowrank, SWAG";
    }
    return "unknown";
}

/* Checks an initialised layer with parameters and a buffer of `expected`
 * floats. */
static int check_buffer(const ibvi_layer *layer, const char *fn,
                        const void *buffer, int64_t len, int64_t expected,
                        const char *what)
{
    IBVI_CHECK_NOT_NULL(fn, layer);
    int status = ibvi__net_check_ready(layer->net, fn);
    if (status < 0)
        return status;
    if (layer->params == 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the layer (%s) has no parameters; it has no %s",
                          fn, layer->ops->name, what);
    if (expected == 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the layer's covariance family (%s) has no %s",
                          fn,
                          family_name(layer->covariance), what);
    if (buffer == NULL)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: buffer is NULL", fn);
    if (len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE, "%s: len = %lld, expected %lld", fn,
                          (long long)len, (long long)expected);
    return IBVI_OK;
}

int ibvi_layer_init_std(const ibvi_layer *layer, float *weight_std,
                        float *bias_std)
{
    static const char fn[] = "ibvi_layer_init_std";
    int status = check_buffer(layer, fn, weight_std, 1, 1, "prior");
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, bias_std);
    *weight_std = ibvi__param_weights(layer)->std;
    *bias_std = ibvi__param_biases(layer)->std;
    return IBVI_OK;
}

/* A factor's copies settle the network's deferred factor steps first
 * (network.h, ibvi__net_settle): S is then exactly the per-step value. */
static int copy_out(const ibvi_layer *layer, const char *fn, const float *src,
                    float *dst, int64_t len, int64_t expected, const char *what)
{
    int status = check_buffer(layer, fn, dst, len, expected, what);
    if (status < 0)
        return status;
    if (src == layer->factor)
        ibvi__net_settle(layer->net);
    memcpy(dst, src, (size_t)len * sizeof(float));
    return IBVI_OK;
}

static int copy_in(ibvi_layer *layer, const char *fn, const float *src,
                   float *dst, int64_t len, int64_t expected, const char *what)
{
    int status = check_buffer(layer, fn, src, len, expected, what);
    if (status < 0)
        return status;
    if (!ibvi__all_finite(src, len))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: the values hold NaN or infinity; the layer is "
                          "unchanged", fn);
    if (dst == layer->factor)
        ibvi__net_settle(layer->net);
    memcpy(dst, src, (size_t)len * sizeof(float));
    /* The cached forward used the old parameters, and an optimizer's bounds
     * on them no longer hold. */
    layer->net->forward_valid = 0;
    layer->net->param_version++;
    return IBVI_OK;
}

static int64_t factor_size(const ibvi_layer *layer)
{
    return layer ? layer->params * layer->rank : 0;
}

static int64_t mean_size(const ibvi_layer *layer)
{
    return layer ? layer->params : 0;
}

int ibvi_layer_get_mean(const ibvi_layer *layer, float *theta, int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_mean", layer ? layer->mean : NULL,
                    theta, len, mean_size(layer), "mean");
}

int ibvi_layer_set_mean(ibvi_layer *layer, const float *theta, int64_t len)
{
    return copy_in(layer, "ibvi_layer_set_mean", theta,
                   layer ? layer->mean : NULL, len, mean_size(layer), "mean");
}

int ibvi_layer_get_factor(const ibvi_layer *layer, float *factor, int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_factor",
                    layer ? layer->factor : NULL, factor, len,
                    factor_size(layer), "covariance factor");
}

int ibvi_layer_set_factor(ibvi_layer *layer, const float *factor, int64_t len)
{
    return copy_in(layer, "ibvi_layer_set_factor", factor,
                   layer ? layer->factor : NULL, len, factor_size(layer),
                   "covariance factor");
}

int ibvi_layer_get_grad_mean(const ibvi_layer *layer, float *grad,
                             int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_grad_mean",
                    layer ? layer->grad_mean : NULL, grad, len,
                    mean_size(layer), "mean gradient");
}

int ibvi_layer_get_grad_factor(const ibvi_layer *layer, float *grad,
                               int64_t len)
{
    static const char fn[] = "ibvi_layer_get_grad_factor";
    int status = check_buffer(layer, fn, grad, len, factor_size(layer),
                              "factor gradient");
    if (status < 0)
        return status;
    /* Not stored: formed from the backward's G and Z (gaussian.c). */
    const ibvi__factor_grad fg = ibvi__gaussian_factor_grad(layer);
    ibvi__factor_grad_span(&fg, 0, len, grad);
    return IBVI_OK;
}

static int64_t rho_size(const ibvi_layer *layer)
{
    return layer && layer->covariance == IBVI__COV_DIAGONAL ? layer->params
                                                             : 0;
}

int ibvi_layer_get_rho(const ibvi_layer *layer, float *rho, int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_rho", layer ? layer->rho : NULL,
                    rho, len, rho_size(layer), "rho (diagonal covariance)");
}

int ibvi_layer_set_rho(ibvi_layer *layer, const float *rho, int64_t len)
{
    return copy_in(layer, "ibvi_layer_set_rho", rho,
                   layer ? layer->rho : NULL, len, rho_size(layer),
                   "rho (diagonal covariance)");
}

int ibvi_layer_get_grad_rho(const ibvi_layer *layer, float *grad,
                            int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_grad_rho",
                    layer ? layer->grad_rho : NULL, grad, len,
                    rho_size(layer), "rho gradient");
}

static int64_t diag_size(const ibvi_layer *layer)
{
    return layer && layer->covariance == IBVI__COV_DIAG_LOWRANK
               ? layer->params
               : 0;
}

int ibvi_layer_get_diag(const ibvi_layer *layer, float *diag, int64_t len)
{
    return copy_out(layer, "ibvi_layer_get_diag", layer ? layer->diag : NULL,
                    diag, len, diag_size(layer),
                    "d (diag-lowrank covariance)");
}

int ibvi_layer_set_diag(ibvi_layer *layer, const float *diag, int64_t len)
{
    static const char fn[] = "ibvi_layer_set_diag";
    int status = check_buffer(layer, fn, diag, len, diag_size(layer),
                              "d (diag-lowrank covariance)");
    if (status < 0)
        return status;
    for (int64_t p = 0; p < len && ibvi__all_finite(diag, len); p++)
        if (diag[p] < 0.0f)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: diag[%lld] = %g, expected >= 0 (a "
                              "standard deviation); the layer is unchanged",
                              fn, (long long)p, (double)diag[p]);
    return copy_in(layer, fn, diag, layer->diag, len, len,
                   "d (diag-lowrank covariance)");
}

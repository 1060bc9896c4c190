/*
 * libibvi - optimizers: SGD (momentum, Nesterov) and Adam, with the
 * per-parameter learning-rate multipliers of the parameterization.
 *
 * The optimizer walks each dense layer's parameters as four contiguous
 * ranges, each with its own multiplier: mean weights, mean biases, factor
 * weight rows and factor bias rows (the factor's are the mean's / R).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "ibvi/optimizer.h"
#include "network.h"

struct ibvi_optimizer {
    ibvi_net *net;
    int32_t kind;
    float lr;
    float momentum;
    int32_t nesterov;
    float beta1, beta2, eps;
    int64_t steps;
    int64_t state_floats;
    float *state;   /* SGD: velocity; Adam: first then second moments */
};

/* One contiguous range of parameters with a common multiplier. */
typedef struct param_range {
    float *param;
    const float *grad;
    float mult;
    int64_t count;
} param_range;

/* Fills ranges[0..4) for a dense layer; returns how many are non-empty. */
static int layer_ranges(const ibvi_layer *l, int32_t kind, param_range *ranges)
{
    const int64_t weights = (int64_t)l->outputs * l->inputs;
    const float w = kind == IBVI_OPT_SGD ? l->sgd_weight_mult : l->adam_weight_mult;
    const float b = kind == IBVI_OPT_SGD ? l->sgd_bias_mult : l->adam_bias_mult;
    int count = 0;
    ranges[count++] = (param_range){l->mean, l->grad_mean, w, weights};
    ranges[count++] = (param_range){l->mean + weights, l->grad_mean + weights,
                                    b, l->outputs};
    if (l->rank > 0) {
        const int64_t R = l->rank;
        ranges[count++] = (param_range){l->factor, l->grad_factor,
                                        w / (float)R, weights * R};
        ranges[count++] = (param_range){l->factor + weights * R,
                                        l->grad_factor + weights * R,
                                        b / (float)R, l->outputs * R};
    }
    return count;
}

static int check_optimizer(const ibvi_optimizer *opt, const char *fn)
{
    IBVI_CHECK_NOT_NULL(fn, opt);
    return IBVI_OK;
}

int ibvi_optimizer_create(ibvi_optimizer **out, ibvi_net *net, int32_t kind,
                          float lr)
{
    static const char fn[] = "ibvi_optimizer_create";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (kind != IBVI_OPT_SGD && kind != IBVI_OPT_ADAM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: kind = %d, expected IBVI_OPT_SGD (0) or "
                          "IBVI_OPT_ADAM (1)", fn, (int)kind);
    if (!(lr > 0.0f) || !isfinite(lr))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: lr = %g, expected a finite value > 0", fn,
                          (double)lr);
    const int64_t params = ibvi_net_param_count(net);
    const int64_t state_floats = kind == IBVI_OPT_ADAM ? 2 * params : params;
    ibvi_optimizer *opt = ibvi__calloc(&net->allocator, 1, sizeof *opt);
    float *state = ibvi__calloc(&net->allocator, (size_t)state_floats,
                                sizeof(float));
    if (!opt || !state) {
        ibvi__free(&net->allocator, opt);
        ibvi__free(&net->allocator, state);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    *opt = (ibvi_optimizer){.net = net, .kind = kind, .lr = lr,
                            .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                            .state_floats = state_floats, .state = state};
    *out = opt;
    return IBVI_OK;
}

void ibvi_optimizer_free(ibvi_optimizer *opt)
{
    if (!opt)
        return;
    ibvi_allocator a = opt->net->allocator;
    ibvi__free(&a, opt->state);
    ibvi__free(&a, opt);
}

int ibvi_optimizer_set_lr(ibvi_optimizer *opt, float lr)
{
    int status = check_optimizer(opt, "ibvi_optimizer_set_lr");
    if (status < 0)
        return status;
    if (!(lr > 0.0f) || !isfinite(lr))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "ibvi_optimizer_set_lr: lr = %g, expected a finite "
                          "value > 0", (double)lr);
    opt->lr = lr;
    return IBVI_OK;
}

int ibvi_optimizer_get_lr(const ibvi_optimizer *opt, float *lr)
{
    int status = check_optimizer(opt, "ibvi_optimizer_get_lr");
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL("ibvi_optimizer_get_lr", lr);
    *lr = opt->lr;
    return IBVI_OK;
}

int ibvi_optimizer_set_momentum(ibvi_optimizer *opt, float momentum,
                                int32_t nesterov)
{
    static const char fn[] = "ibvi_optimizer_set_momentum";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    if (opt->kind != IBVI_OPT_SGD)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the optimizer is not SGD", fn);
    if (!(momentum >= 0.0f && momentum < 1.0f))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: momentum = %g, expected 0 <= momentum < 1", fn,
                          (double)momentum);
    if (nesterov != 0 && nesterov != 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: nesterov = %d, expected 0 or 1", fn,
                          (int)nesterov);
    opt->momentum = momentum;
    opt->nesterov = nesterov;
    return IBVI_OK;
}

int ibvi_optimizer_set_adam(ibvi_optimizer *opt, float beta1, float beta2,
                            float eps)
{
    static const char fn[] = "ibvi_optimizer_set_adam";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    if (opt->kind != IBVI_OPT_ADAM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the optimizer is not Adam", fn);
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f) ||
        !(eps > 0.0f) || !isfinite(eps))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: beta1 = %g, beta2 = %g, eps = %g, expected "
                          "betas in [0, 1) and eps > 0", fn, (double)beta1,
                          (double)beta2, (double)eps);
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    return IBVI_OK;
}

static void sgd_update(const ibvi_optimizer *opt, const param_range *r,
                       float *velocity)
{
    const float lr = opt->lr * r->mult, mu = opt->momentum;
    if (mu == 0.0f) {
        for (int64_t i = 0; i < r->count; i++)
            r->param[i] -= lr * r->grad[i];
        return;
    }
    for (int64_t i = 0; i < r->count; i++) {
        const float v = mu * velocity[i] + r->grad[i];
        velocity[i] = v;
        r->param[i] -= lr * (opt->nesterov ? r->grad[i] + mu * v : v);
    }
}

static void adam_update(const ibvi_optimizer *opt, const param_range *r,
                        float *first, float *second)
{
    const float b1 = opt->beta1, b2 = opt->beta2;
    const double t = (double)opt->steps + 1.0;
    const float correction1 = (float)(1.0 - pow(b1, t));
    const float correction2 = (float)(1.0 - pow(b2, t));
    const float lr = opt->lr * r->mult;
    for (int64_t i = 0; i < r->count; i++) {
        const float g = r->grad[i];
        first[i] = b1 * first[i] + (1.0f - b1) * g;
        second[i] = b2 * second[i] + (1.0f - b2) * g * g;
        const float m_hat = first[i] / correction1;
        const float v_hat = second[i] / correction2;
        r->param[i] -= lr * m_hat / (sqrtf(v_hat) + opt->eps);
    }
}

int ibvi_optimizer_step(ibvi_optimizer *opt)
{
    static const char fn[] = "ibvi_optimizer_step";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    ibvi_net *net = opt->net;
    if (!net->has_gradients)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no gradients yet (call ibvi_net_backward "
                          "first)", fn);
    float *state = opt->state;
    const int64_t second_offset = opt->kind == IBVI_OPT_ADAM
                                      ? opt->state_floats / 2 : 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->kind != IBVI_LAYER_DENSE)
            continue;
        param_range ranges[4];
        const int count = layer_ranges(l, opt->kind, ranges);
        for (int k = 0; k < count; k++) {
            if (opt->kind == IBVI_OPT_SGD)
                sgd_update(opt, &ranges[k], state);
            else
                adam_update(opt, &ranges[k], state, state + second_offset);
            state += ranges[k].count;
        }
    }
    opt->steps++;
    /* A pending backward would use weights that no longer exist. */
    net->forward_valid = 0;
    return IBVI_OK;
}

ibvi_net *ibvi__optimizer_net(const ibvi_optimizer *opt) { return opt->net; }

void ibvi__optimizer_get_info(const ibvi_optimizer *opt,
                              ibvi__optimizer_info *out)
{
    *out = (ibvi__optimizer_info){
        .kind = opt->kind, .lr = opt->lr, .momentum = opt->momentum,
        .nesterov = opt->nesterov, .beta1 = opt->beta1, .beta2 = opt->beta2,
        .eps = opt->eps, .steps = opt->steps,
        .state_floats = opt->state_floats, .state = opt->state};
}

void ibvi__optimizer_set_steps(ibvi_optimizer *opt, int64_t steps)
{
    opt->steps = steps;
}

int64_t ibvi_optimizer_step_count(const ibvi_optimizer *opt)
{
    IBVI_CHECK_NOT_NULL("ibvi_optimizer_step_count", opt);
    return opt->steps;
}

int ibvi_optimizer_reset(ibvi_optimizer *opt)
{
    int status = check_optimizer(opt, "ibvi_optimizer_reset");
    if (status < 0)
        return status;
    memset(opt->state, 0, (size_t)opt->state_floats * sizeof(float));
    opt->steps = 0;
    return IBVI_OK;
}

int ibvi_layer_lr_multipliers(const ibvi_layer *layer, int32_t kind,
                              float *weight_mult, float *bias_mult)
{
    static const char fn[] = "ibvi_layer_lr_multipliers";
    IBVI_CHECK_NOT_NULL(fn, layer);
    IBVI_CHECK_NOT_NULL(fn, weight_mult);
    IBVI_CHECK_NOT_NULL(fn, bias_mult);
    int status = ibvi__net_check_ready(layer->net, fn);
    if (status < 0)
        return status;
    if (layer->kind != IBVI_LAYER_DENSE)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the layer is an activation; it has no "
                          "parameters", fn);
    if (kind != IBVI_OPT_SGD && kind != IBVI_OPT_ADAM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: kind = %d, expected IBVI_OPT_SGD (0) or "
                          "IBVI_OPT_ADAM (1)", fn, (int)kind);
    *weight_mult = kind == IBVI_OPT_SGD ? layer->sgd_weight_mult
                                        : layer->adam_weight_mult;
    *bias_mult = kind == IBVI_OPT_SGD ? layer->sgd_bias_mult
                                      : layer->adam_bias_mult;
    return IBVI_OK;
}

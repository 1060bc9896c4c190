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
#include <float.h>
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

/* The new value of one parameter and its state. The finiteness check and
 * the update share these, so the check sees exactly the values the update
 * will store. */
/* Values below FLT_MIN become 0. Momentum and Adam's moments decay
 * geometrically wherever the gradient vanishes (dead ReLU units, the
 * collapsed directions of a covariance factor), and so do collapsing factor
 * entries: without this they turn subnormal after a few epochs, and every
 * arithmetic operation on a subnormal costs a microcode assist. Measured on
 * Fashion-MNIST, an IBVI training step became 6x slower by epoch 3. */
static inline float flush_subnormal(float x)
{
    return fabsf(x) < FLT_MIN ? 0.0f : x;
}

static inline float sgd_value(float param, float grad, float lr, float mu,
                              int32_t nesterov, float *velocity)
{
    if (mu == 0.0f)
        return param - lr * grad;
    const float v = mu * *velocity + grad;
    *velocity = v;
    return param - lr * (nesterov ? grad + mu * v : v);
}

typedef struct adam_consts {
    float b1, b2, correction1, correction2, lr, eps;
} adam_consts;

static adam_consts adam_constants(const ibvi_optimizer *opt, float mult)
{
    const double t = (double)opt->steps + 1.0;
    return (adam_consts){opt->beta1, opt->beta2,
                         (float)(1.0 - pow(opt->beta1, t)),
                         (float)(1.0 - pow(opt->beta2, t)), opt->lr * mult,
                         opt->eps};
}

static inline float adam_value(const adam_consts *k, float param, float g,
                               float *first, float *second)
{
    *first = flush_subnormal(k->b1 * *first + (1.0f - k->b1) * g);
    *second = flush_subnormal(k->b2 * *second + (1.0f - k->b2) * g * g);
    const float m_hat = *first / k->correction1;
    const float v_hat = *second / k->correction2;
    return flush_subnormal(param - k->lr * m_hat / (sqrtf(v_hat) + k->eps));
}

/* 1 when the update of range r keeps every parameter and state value
 * finite. x * 0 is 0 for finite x and NaN for NaN or infinity. */
static int update_is_finite(const ibvi_optimizer *opt, const param_range *r,
                            const float *state, const float *second)
{
    float acc = 0.0f;
    if (opt->kind == IBVI_OPT_SGD) {
        const float lr = opt->lr * r->mult;
        for (int64_t i = 0; i < r->count; i++) {
            float v = state[i];
            const float p = sgd_value(r->param[i], r->grad[i], lr,
                                      opt->momentum, opt->nesterov, &v);
            acc += p * 0.0f + v * 0.0f;
        }
    } else {
        const adam_consts k = adam_constants(opt, r->mult);
        for (int64_t i = 0; i < r->count; i++) {
            float m = state[i], v = second[i];
            const float p = adam_value(&k, r->param[i], r->grad[i], &m, &v);
            acc += p * 0.0f + m * 0.0f + v * 0.0f;
        }
    }
    return acc == 0.0f;
}

static void sgd_update(const ibvi_optimizer *opt, const param_range *r,
                       float *restrict velocity)
{
    /* Three branch-free loops over restrict pointers, so they vectorize. */
    const float lr = opt->lr * r->mult, mu = opt->momentum;
    float *restrict param = r->param;
    const float *restrict grad = r->grad;
    if (mu == 0.0f) {
        for (int64_t i = 0; i < r->count; i++)
            param[i] = flush_subnormal(param[i] - lr * grad[i]);
    } else if (opt->nesterov) {
        for (int64_t i = 0; i < r->count; i++) {
            const float v = flush_subnormal(mu * velocity[i] + grad[i]);
            velocity[i] = v;
            param[i] = flush_subnormal(param[i] - lr * (grad[i] + mu * v));
        }
    } else {
        for (int64_t i = 0; i < r->count; i++) {
            const float v = flush_subnormal(mu * velocity[i] + grad[i]);
            velocity[i] = v;
            param[i] = flush_subnormal(param[i] - lr * v);
        }
    }
}

static void adam_update(const ibvi_optimizer *opt, const param_range *r,
                        float *restrict first, float *restrict second)
{
    const adam_consts k = adam_constants(opt, r->mult);
    for (int64_t i = 0; i < r->count; i++)
        r->param[i] = adam_value(&k, r->param[i], r->grad[i], &first[i],
                                 &second[i]);
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
    const int64_t second_offset = opt->kind == IBVI_OPT_ADAM
                                      ? opt->state_floats / 2 : 0;
    /* Two passes: first check that the update keeps every parameter and
     * state value finite (a learning rate far too large overflows), and
     * change nothing if it does not; then apply it. */
    for (int pass = 0; pass < 2; pass++) {
        float *state = opt->state;
        for (int32_t i = 0; i < net->layer_count; i++) {
            const ibvi_layer *l = net->layers[i];
            if (l->kind != IBVI_LAYER_DENSE)
                continue;
            param_range ranges[4];
            const int count = layer_ranges(l, opt->kind, ranges);
            for (int k = 0; k < count; k++) {
                if (pass == 0) {
                    if (!update_is_finite(opt, &ranges[k], state,
                                          state + second_offset))
                        return ibvi__fail(
                            IBVI_ERR_NONFINITE,
                            "%s: non-finite update: the step would make "
                            "parameters or optimizer state of layer %d NaN "
                            "or infinite (learning rate %g too large?); "
                            "nothing changed", fn, (int)i, (double)opt->lr);
                } else if (opt->kind == IBVI_OPT_SGD) {
                    sgd_update(opt, &ranges[k], state);
                } else {
                    adam_update(opt, &ranges[k], state,
                                state + second_offset);
                }
                state += ranges[k].count;
            }
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

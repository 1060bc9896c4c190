/*
 * libibvi - optimizers: SGD (momentum, Nesterov) and Adam, with the
 * per-parameter learning-rate multipliers of the parameterization.
 *
 * The optimizer walks each layer's parameters as contiguous ranges, each
 * with its own multiplier: one per parameter group of the mean (dense:
 * weights, biases), then, for a low-rank Gaussian theta, one per group of
 * the factor's rows (the factor's multipliers are the mean's / R), or for
 * a diagonal theta one per group of rho (with the mean's multipliers). The
 * groups come from the layer's kind (layer_ops.h), the multipliers from
 * param.c.
 *
 * A step touches each value once: one fused pass reads the parameter and its
 * state, updates both and writes them back. The factor's gradient G^T Z is
 * never stored: the pass forms it a chunk at a time in a small buffer
 * (ibvi__factor_grad_span) just before using it. While a chunk of S is in
 * L1 the pass also draws the next forward's weights from it (network.h,
 * "weights drawn ahead"), so the forward need not read S again. A step
 * from a host's gradients (distributed.c) reads them flat, stored, or
 * factored, each factor chunk formed from several ranks' G and Z the same
 * way, block by block (host_ranges, range_grad); it draws nothing ahead.
 *
 * A step that would make any value NaN or infinite must change nothing.
 * Checking that exactly costs a second pass over everything, so the
 * optimizer keeps, per range, bounds on |parameter| and |state| (exact after
 * a checked step, then carried forward in double precision) and the backward
 * leaves bounds on |gradient| (gaussian.c). When the bounds prove every new
 * value finite, the single pass runs; otherwise (first step, parameters set
 * by hand, a huge learning rate...) the exact check pass runs first, as it
 * always did.
 *
 * The KL term of the ELBO (ibvi_optimizer_set_kl_weight) is one more part
 * of a diagonal layer's ranges' gradient: with a weight > 0 their gradient
 * is formed a chunk at a time, stored gradient + weight * dKL (kl.c), and
 * its bound is the stored one's plus kl.c's bound at the range's parameter
 * bound. With weight 0 nothing of this runs.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "deferred.h"
#include "ibvi/optimizer.h"
#include "network.h"
#include "parallel.h"

/* Bounds on |values| of one parameter range and its state. */
typedef struct range_bound {
    double param, first, second; /* first: SGD velocity or Adam m; second:
                                    Adam v */
} range_bound;

struct ibvi_optimizer {
    ibvi_net *net;
    /* A copy of the network's allocator, so the optimizer can be freed
     * after its network. */
    ibvi_allocator allocator;
    int32_t kind;
    float lr;
    float momentum;
    int32_t nesterov;
    float beta1, beta2, eps;
    int64_t steps;
    float kl_weight;   /* ibvi_optimizer_set_kl_weight, 0 by default */
    int64_t state_floats;
    float *state;   /* SGD: velocity; Adam: first then second moments */
    /* RANGES_PER_LAYER per layer (index RANGES_PER_LAYER * layer + range),
     * valid when bounds_valid and the network's param_version is still
     * bounds_version. */
    range_bound *bounds;
    int32_t bounds_valid;
    uint64_t bounds_version;
    /* During a step: samples to draw ahead (network.h), 0 for none. */
    int32_t presample;
    /* During a step from a host's gradients (ibvi__optimizer_step_host),
     * else NULL. */
    const ibvi__host_grads *host_grads;
    /* Deferred factor updates (deferred.h): window_steps is the window's
     * length asked for (ibvi_optimizer_set_deferred: -1 the cost model's,
     * the default; 0 never defer, the per-step path; 2.. a fixed window),
     * window its storage (NULL until reserved or a step defers). */
    int32_t window_steps;
    ibvi__window *window;
    int32_t window_active; /* this is net->window_owner */
    /* The network's optimizers (net->optimizers), so that ibvi_net_reserve
     * can reserve their windows; net_gone once ibvi_net_free ran. */
    ibvi_optimizer *next_on_net;
    int32_t net_gone;
};

_Static_assert(IBVI_DEFERRED_MAX_STEPS == IBVI__WINDOW_MAX_STEPS,
               "optimizer.h and deferred.h disagree on the longest window");

/* SGD's momentum at creation: the method's recipe (optimizer.h). */
#define SGD_DEFAULT_MOMENTUM 0.9f

/* At most a mean range and a factor range per parameter group. */
#define RANGES_PER_LAYER (2 * IBVI__MAX_GROUPS)

/* Bounds the single pass may reach: far enough below FLT_MAX (~2^128) that
 * the rounding of the few float operations of an update cannot cross it. */
#define BOUND_LIMIT 0x1p120

/* Floats per chunk of a factor range: its gradient is formed in a buffer
 * of this size (on the stack, in L1) right before the update uses it. */
#define CHUNK 2048

/* One contiguous range of parameters with a common multiplier. Its
 * gradient is either stored (grad) or a span of the factored G^T Z (fg,
 * from flat index first). grad_bound bounds |gradient entries|. */
typedef struct param_range {
    const ibvi_layer *layer;
    float *param;
    const float *grad;
    const ibvi__factor_grad *fg;
    int64_t first;
    float mult;
    int64_t count;
    double grad_bound;
    /* A factor range of a host's factored gradients: its layer's G in
     * block 0 (the next blocks follow at hb->len), else NULL. */
    const ibvi__host_grads *hb;
    const float *hb_g;
    /* A diagonal layer's range with a KL weight > 0: part 0 (mean) or 1
     * (rho) of group kl_group, else kl_part = -1. */
    int32_t kl_part, kl_group;
    float kl_weight;
} param_range;

/* Fills ranges (at most RANGES_PER_LAYER) for a layer with parameters:
 * the mean's groups, then the factor's; returns how many. Range k's
 * gradient bound is l->grad_bound[k] (network.h). */
static int layer_ranges(const ibvi_layer *l, int32_t kind, float kl_weight,
                        const ibvi__factor_grad *fg, param_range *ranges)
{
    const int32_t G = l->group_count;
    const int kl = kl_weight > 0.0f && l->covariance == IBVI__COV_DIAGONAL;
    int count = 0;
    for (int32_t g = 0; g < G; g++) {
        const ibvi__param_group *grp = &l->groups[g];
        const float mult = kind == IBVI_OPT_SGD ? grp->sgd_mult : grp->adam_mult;
        ranges[count++] = (param_range){l, l->mean + grp->offset,
                                        l->grad_mean + grp->offset, NULL, 0,
                                        mult, grp->count, l->grad_bound[g],
                                        NULL, NULL, kl ? 0 : -1, g,
                                        kl_weight};
    }
    switch ((ibvi__covariance)l->covariance) {
    case IBVI__COV_NONE:
    case IBVI__COV_DIAG_LOWRANK: /* refused by ibvi_optimizer_create */
        break;
    case IBVI__COV_DIAGONAL:
        for (int32_t g = 0; g < G; g++) {
            const ibvi__param_group *grp = &l->groups[g];
            const float mult = kind == IBVI_OPT_SGD ? grp->sgd_mult
                                                    : grp->adam_mult;
            ranges[count++] = (param_range){l, l->rho + grp->offset,
                                            l->grad_rho + grp->offset, NULL,
                                            0, mult, grp->count,
                                            l->grad_bound[G + g], NULL, NULL,
                                            kl ? 1 : -1, g, kl_weight};
        }
        break;
    case IBVI__COV_LOWRANK: {
        const int64_t R = l->rank;
        for (int32_t g = 0; g < G; g++) {
            const ibvi__param_group *grp = &l->groups[g];
            const float mult = kind == IBVI_OPT_SGD ? grp->sgd_mult
                                                    : grp->adam_mult;
            ranges[count++] = (param_range){l, l->factor + grp->offset * R,
                                            NULL, fg, grp->offset * R,
                                            mult / (float)R, grp->count * R,
                                            l->grad_bound[G + g], NULL, NULL,
                                            -1, g, 0.0f};
        }
        break;
    }
    }
    return count;
}

/* For a step from a host's gradients: the layer's ranges read their
 * gradients from its slices of the host's buffers, with the bounds
 * distributed.c measured in them (host_grad_bound, indexed like
 * grad_bound). Flat: the mean's P floats, then the factor's P x R, stored.
 * Factored: the means' summed gradients (mean), stored; the factor's
 * formed from the blocks' G and Z (range_grad). */
static void host_ranges(const ibvi_layer *l, const ibvi__host_grads *h,
                        const float *flat, const float *mean,
                        const float *block, param_range *ranges, int count)
{
    const int32_t G = l->group_count;
    for (int k = 0; k < count; k++) {
        const ibvi__param_group *grp = &l->groups[k % G];
        if (h->flat)
            ranges[k].grad = k < G ? flat + grp->offset
                                   : flat + l->params + grp->offset * l->rank;
        else if (k < G)
            ranges[k].grad = mean + grp->offset;
        else {
            ranges[k].grad = NULL;
            ranges[k].hb = h;
            ranges[k].hb_g = block;
        }
        ranges[k].fg = NULL;
        ranges[k].grad_bound = l->host_grad_bound[k];
    }
}

/* Entries first .. first + n - 1 of scale * sum over the host's blocks of
 * G^T Z for range r, into buf; tmp holds a chunk. */
static void host_factor_span(const param_range *r, int64_t first, int64_t n,
                             float *buf, float *tmp)
{
    const ibvi__host_grads *h = r->hb;
    const ibvi_layer *l = r->layer;
    const int64_t P = l->params;
    for (int32_t b = 0; b < h->count; b++) {
        const float *g = r->hb_g + b * h->len;
        const ibvi__factor_grad fg = {g, g + h->samples * P, P, l->rank,
                                      h->samples, l->rank};
        ibvi__factor_grad_span(&fg, first, n, b ? tmp : buf);
        if (b)
            for (int64_t k = 0; k < n; k++)
                buf[k] += tmp[k];
    }
    for (int64_t k = 0; k < n; k++)
        buf[k] *= h->scale;
}

/* The gradient of range r's entries i .. i + len - 1: stored, or formed in
 * buf (len <= CHUNK). */
static const float *range_grad(const param_range *r, int64_t i, int64_t len,
                               float *buf)
{
    if (r->kl_part >= 0) {
        ibvi__kl_grad_span(r->layer, r->kl_group, r->kl_part, r->kl_weight,
                           r->grad + i, i, len, buf);
        return buf;
    }
    if (r->grad)
        return r->grad + i;
    if (r->hb) {
        float tmp[CHUNK];
        host_factor_span(r, r->first + i, len, buf, tmp);
        return buf;
    }
    ibvi__factor_grad_span(r->fg, r->first + i, len, buf);
    return buf;
}

/* How many entries range r hands to a kernel at once: a factor range whole
 * rows of S (R <= CHUNK), so each chunk can draw its rows' weights ahead. */
static int64_t range_chunk(const param_range *r)
{
    if (r->kl_part >= 0)
        return CHUNK;
    if (r->grad)
        return r->count;
    const int64_t R = r->layer->rank;
    return R <= CHUNK ? CHUNK / R * R : CHUNK;
}

static int check_optimizer(const ibvi_optimizer *opt, const char *fn)
{
    IBVI_CHECK_NOT_NULL(fn, opt);
    return IBVI_OK;
}

static int reserve_window(ibvi_optimizer *opt, int32_t max_samples,
                          const char *fn);

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
    for (int32_t i = 0; i < net->layer_count; i++)
        if (net->layers[i]->covariance == IBVI__COV_DIAG_LOWRANK)
            return ibvi__fail(IBVI_ERR_UNSUPPORTED,
                              "%s: layer %d carries SWAG's diag-lowrank "
                              "covariance, whose moments are collected "
                              "(ibvi_swag_collect), not trained; train the "
                              "deterministic network and build the SWAG "
                              "posterior from it (ibvi_swag_build)", fn,
                              (int)i);
    const int64_t params = ibvi_net_param_count(net);
    const int64_t state_floats = kind == IBVI_OPT_ADAM ? 2 * params : params;
    ibvi_optimizer *opt = ibvi__calloc(&net->allocator, 1, sizeof *opt);
    float *state = ibvi__calloc(&net->allocator, (size_t)state_floats,
                                sizeof(float));
    range_bound *bounds = ibvi__calloc(&net->allocator,
                                       RANGES_PER_LAYER *
                                           (size_t)net->layer_count,
                                       sizeof *bounds);
    if (!opt || !state || !bounds) {
        ibvi__free(&net->allocator, opt);
        ibvi__free(&net->allocator, state);
        ibvi__free(&net->allocator, bounds);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    /* bounds_valid = 0: the first step checks exactly (and so does the
     * first after serialize.c restores a saved state into this one). */
    *opt = (ibvi_optimizer){.net = net, .allocator = net->allocator,
                            .kind = kind, .lr = lr,
                            .momentum = kind == IBVI_OPT_SGD
                                            ? SGD_DEFAULT_MOMENTUM
                                            : 0.0f,
                            .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                            .state_floats = state_floats, .state = state,
                            .bounds = bounds, .window_steps = -1};
    /* A network with a workspace (ibvi_net_reserve) gets the window its
     * training will use now, so that train steps allocate nothing. */
    status = reserve_window(opt, net->ws_samples, fn);
    if (status < 0) {
        ibvi__free(&net->allocator, opt);
        ibvi__free(&net->allocator, state);
        ibvi__free(&net->allocator, bounds);
        return status;
    }
    opt->next_on_net = net->optimizers;
    net->optimizers = opt;
    *out = opt;
    return IBVI_OK;
}

void ibvi_optimizer_free(ibvi_optimizer *opt)
{
    if (!opt)
        return;
    /* Never opt->net once the network is gone (net_gone: ibvi_net_free
     * dropped the window, ibvi__net_drop_window, and the list). */
    ibvi_allocator a = opt->allocator;
    if (opt->window_active)
        ibvi__net_settle(opt->net);
    if (!opt->net_gone) {
        ibvi_optimizer **p = &opt->net->optimizers;
        while (*p != opt)
            p = &(*p)->next_on_net;
        *p = opt->next_on_net;
    }
    ibvi__window_free(&a, opt->window);
    ibvi__free(&a, opt->state);
    ibvi__free(&a, opt->bounds);
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
    /* The window's coefficients assume one momentum for its steps. */
    if (opt->window_active &&
        (momentum != opt->momentum || nesterov != opt->nesterov))
        ibvi__net_settle(opt->net);
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

/* The SGD update of one value: the one formula, used by the exact check
 * (update_is_finite) and by the update pass (sgd_update), so the check sees
 * exactly the values the update stores. mu = 0 leaves the velocity alone
 * (it stays 0: no state is kept without momentum). */
static inline float sgd_value(float param, float grad, float lr, float mu,
                              int32_t nesterov, float *velocity)
{
    if (mu == 0.0f)
        return flush_subnormal(param - lr * grad);
    const float v = flush_subnormal(mu * *velocity + grad);
    *velocity = v;
    return flush_subnormal(param - lr * (nesterov ? grad + mu * v : v));
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

/* ---- kernels: n entries of one range -------------------------------------
 * Each takes the range's gradient for these entries (stored or formed in a
 * chunk buffer) and its state at the same offset. */

/* 1 when the update keeps every parameter and state value finite.
 * x * 0 is 0 for finite x and NaN for NaN or infinity. */
static int update_is_finite(const ibvi_optimizer *opt, float mult,
                            const float *param, const float *grad,
                            const float *state, const float *second, int64_t n)
{
    float acc = 0.0f;
    if (opt->kind == IBVI_OPT_SGD) {
        const float lr = opt->lr * mult;
        for (int64_t i = 0; i < n; i++) {
            float v = state[i];
            const float p = sgd_value(param[i], grad[i], lr, opt->momentum,
                                      opt->nesterov, &v);
            acc += p * 0.0f + v * 0.0f;
        }
    } else {
        const adam_consts k = adam_constants(opt, mult);
        for (int64_t i = 0; i < n; i++) {
            float m = state[i], v = second[i];
            const float p = adam_value(&k, param[i], grad[i], &m, &v);
            acc += p * 0.0f + m * 0.0f + v * 0.0f;
        }
    }
    return acc == 0.0f;
}

/* Three loops over restrict pointers, each calling sgd_value with constant
 * mu == 0 / nesterov, so the branches fold away and the loops vectorize. */
static void sgd_update(const ibvi_optimizer *opt, float mult,
                       float *restrict param, const float *restrict grad,
                       float *restrict velocity, int64_t n)
{
    const float lr = opt->lr * mult, mu = opt->momentum;
    if (mu == 0.0f) {
        for (int64_t i = 0; i < n; i++)
            param[i] = sgd_value(param[i], grad[i], lr, 0.0f, 0, &velocity[i]);
    } else if (opt->nesterov) {
        for (int64_t i = 0; i < n; i++)
            param[i] = sgd_value(param[i], grad[i], lr, mu, 1, &velocity[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            param[i] = sgd_value(param[i], grad[i], lr, mu, 0, &velocity[i]);
    }
}

static void adam_update(const ibvi_optimizer *opt, float mult,
                        float *restrict param, const float *restrict grad,
                        float *restrict first, float *restrict second,
                        int64_t n)
{
    const adam_consts k = adam_constants(opt, mult);
    for (int64_t i = 0; i < n; i++)
        param[i] = adam_value(&k, param[i], grad[i], &first[i], &second[i]);
}

/* ---- walking the ranges ------------------------------------------------- */

/* Calls visit(opt, layer index, range index, range, state, second) for every
 * range of every layer with parameters, state pointing at its optimizer state; stops
 * at the first visit returning 0 and returns that layer's index then, -1
 * when every visit returned 1. */
typedef int (*range_visitor)(ibvi_optimizer *opt, int32_t layer, int k,
                             const param_range *r, float *state,
                             float *second);

static int walk_ranges(ibvi_optimizer *opt, range_visitor visit)
{
    const ibvi_net *net = opt->net;
    const int64_t second_offset = opt->kind == IBVI_OPT_ADAM
                                      ? opt->state_floats / 2 : 0;
    float *state = opt->state;
    const ibvi__host_grads *host = opt->host_grads;
    const float *flat = host ? host->flat : NULL;
    const float *mean = host ? host->mean : NULL;
    const float *block = host ? host->blocks : NULL;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->params == 0)
            continue;
        const ibvi__factor_grad fg = ibvi__gaussian_factor_grad(l);
        param_range ranges[RANGES_PER_LAYER];
        const int count = layer_ranges(l, opt->kind,
                                       host ? 0.0f : opt->kl_weight, &fg,
                                       ranges);
        if (host) {
            const int64_t P = l->params, R = l->rank;
            host_ranges(l, host, flat, mean, block, ranges, count);
            if (flat)
                flat += P * (1 + R);
            else {
                mean += P;
                block += R > 0 ? host->samples * (P + R) : P;
            }
        }
        for (int k = 0; k < count; k++) {
            if (!visit(opt, i, k, &ranges[k], state, state + second_offset))
                return i;
            state += ranges[k].count;
        }
    }
    return -1;
}

/* ---- the passes over one range, split across the network's threads ------
 * A range is cut into blocks of pass_block entries (whole rows of S for a
 * factor range); ibvi__parallel_for hands each thread a contiguous run of
 * blocks (parallel.h), and every block is processed exactly as a single
 * thread would, so the values do not depend on the thread count. */

typedef struct range_pass {
    ibvi_optimizer *opt;
    const param_range *r;
    float *state, *second;
    int64_t chunk;
    atomic_int finite; /* check_range: 0 once a block is not finite */
} range_pass;

/* Entries per block: range_chunk's for a factor range; a stored gradient
 * could go whole to one kernel call, but is cut into CHUNK blocks too so
 * that threads can share it. */
static int64_t pass_block(const param_range *r)
{
    return r->grad ? CHUNK : range_chunk(r);
}

static int64_t range_blocks(const param_range *r, int64_t chunk)
{
    return (r->count + chunk - 1) / chunk;
}

/* The smallest share of a thread: 8 blocks (16k entries) take several
 * microseconds, more than handing them to a worker costs. */
#define BLOCK_GRAIN 8

static int32_t pass_threads(const ibvi_optimizer *opt)
{
    return ibvi__threads_in_effect(opt->net->threads);
}

static void check_blocks(void *arg, int64_t b0, int64_t b1)
{
    range_pass *p = arg;
    const param_range *r = p->r;
    float buf[CHUNK];
    for (int64_t b = b0; b < b1; b++) {
        if (!atomic_load_explicit(&p->finite, memory_order_relaxed))
            return;
        const int64_t i = b * p->chunk;
        const int64_t n = r->count - i < p->chunk ? r->count - i : p->chunk;
        if (!update_is_finite(p->opt, r->mult, r->param + i,
                              range_grad(r, i, n, buf), p->state + i,
                              p->second + i, n)) {
            atomic_store_explicit(&p->finite, 0, memory_order_relaxed);
            return;
        }
    }
}

/* The exact check of one range: 0 when its update is not finite. */
static int check_range(ibvi_optimizer *opt, int32_t layer, int k,
                       const param_range *r, float *state, float *second)
{
    (void)layer, (void)k;
    range_pass p = {.opt = opt, .r = r, .state = state, .second = second,
                    .chunk = pass_block(r)};
    atomic_init(&p.finite, 1);
    ibvi__parallel_for(pass_threads(opt), range_blocks(r, p.chunk),
                       BLOCK_GRAIN, check_blocks, &p);
    return atomic_load_explicit(&p.finite, memory_order_relaxed);
}

/* The single update pass over one range. For a factor range, with
 * opt->presample samples, each chunk's rows of S are in L1 right after
 * their update: draw the next forward's weights for those rows there (the
 * layer's mean was updated before its factor). */
static void update_blocks(void *arg, int64_t b0, int64_t b1)
{
    const range_pass *p = arg;
    const ibvi_optimizer *opt = p->opt;
    const param_range *r = p->r;
    float *state = p->state, *second = p->second;
    float buf[CHUNK];
    const int64_t chunk = p->chunk;
    const ibvi_net *net = opt->net;
    const ibvi_layer *l = r->layer;
    const int64_t end = b1 * chunk < r->count ? b1 * chunk : r->count;
    for (int64_t i = b0 * chunk; i < end; i += chunk) {
        const int64_t n = r->count - i < chunk ? r->count - i : chunk;
        const float *grad = range_grad(r, i, n, buf);
        if (opt->kind == IBVI_OPT_SGD)
            sgd_update(opt, r->mult, r->param + i, grad, state + i, n);
        else
            adam_update(opt, r->mult, r->param + i, grad, state + i,
                        second + i, n);
        if (r->fg && opt->presample > 0)
            ibvi__gaussian_sample_rows(l, (r->first + i) / l->rank,
                                       n / l->rank,
                                       net->presample_noise + l->noise_offset,
                                       net->noise_size, opt->presample,
                                       l->sampled);
    }
}

static int update_range(ibvi_optimizer *opt, int32_t layer, int k,
                        const param_range *r, float *state, float *second)
{
    (void)layer, (void)k;
    range_pass p = {.opt = opt, .r = r, .state = state, .second = second,
                    .chunk = pass_block(r)};
    ibvi__parallel_for(pass_threads(opt), range_blocks(r, p.chunk),
                       BLOCK_GRAIN, update_blocks, &p);
    return 1;
}

/* Samples to draw ahead in this step: the last forward's, when it drew
 * from the network's generator (training; the next forward likely does
 * the same) and every factor range is chunked by whole rows. Draws their
 * noise from a copy of the generator, which the forward will then draw
 * again. */
static int32_t plan_presample(ibvi_net *net)
{
    if (!net->noise_from_rng || net->noise_samples < 1 ||
        net->noise_size == 0 || net->noise_samples > net->ws_samples)
        return 0;
    int lowrank = 0; /* only low-rank layers draw ahead (diagonal ones
                        sample in the forward's one element-wise pass) */
    for (int32_t i = 0; i < net->layer_count; i++) {
        if (net->layers[i]->rank > CHUNK)
            return 0;
        lowrank |= net->layers[i]->covariance == IBVI__COV_LOWRANK;
    }
    if (!lowrank)
        return 0;
    ibvi_rng ahead = net->noise_rng;
    ibvi__rng_normal(&ahead, net->presample_noise,
                     (int64_t)net->noise_samples * net->noise_size, 1.0f);
    return net->noise_samples;
}

/* ---- bounds ---------------------------------------------------------------- */

/* Bounds after one update of range r from bounds b, in double. 1 when they
 * prove every new value, and every intermediate of the float update, finite
 * (all below BOUND_LIMIT; a NaN or infinite bound fails the comparisons). */
static int next_bound(const ibvi_optimizer *opt, const param_range *r,
                      const range_bound *b, range_bound *out)
{
    const double g = r->grad_bound +
                     (r->kl_part >= 0
                          ? ibvi__kl_grad_bound(r->layer, r->kl_group,
                                                r->kl_part, r->kl_weight,
                                                b->param)
                          : 0.0);
    *out = *b;
    if (opt->kind == IBVI_OPT_SGD) {
        const double lr = opt->lr * r->mult, mu = opt->momentum;
        if (mu == 0.0) {
            out->param = b->param + lr * g;
        } else {
            out->first = mu * b->first + g;
            out->param = b->param +
                         lr * (opt->nesterov ? g + mu * out->first : out->first);
        }
        return out->param <= BOUND_LIMIT && out->first <= BOUND_LIMIT;
    }
    const adam_consts k = adam_constants(opt, r->mult);
    out->first = k.b1 * b->first + (1.0 - k.b1) * g;
    out->second = k.b2 * b->second + (1.0 - k.b2) * g * g;
    /* lr * m_hat / (sqrt(v_hat) + eps) <= lr * m_hat / eps */
    const double step = k.lr * (out->first / k.correction1);
    out->param = b->param + step / k.eps;
    return g * g <= BOUND_LIMIT && out->second / k.correction2 <= BOUND_LIMIT &&
           step <= BOUND_LIMIT && out->param <= BOUND_LIMIT &&
           out->first <= BOUND_LIMIT;
}

static range_bound *bound_of(ibvi_optimizer *opt, int32_t layer, int k)
{
    return &opt->bounds[RANGES_PER_LAYER * (int64_t)layer + k];
}

/* 1 when the stored bounds are current and prove the whole step finite. */
static int bounds_prove_finite(ibvi_optimizer *opt, int32_t layer, int k,
                               const param_range *r, float *state,
                               float *second)
{
    (void)state, (void)second;
    range_bound next;
    return next_bound(opt, r, bound_of(opt, layer, k), &next);
}

/* The single pass, carrying the bounds forward. */
static int update_with_bounds(ibvi_optimizer *opt, int32_t layer, int k,
                              const param_range *r, float *state,
                              float *second)
{
    range_bound *b = bound_of(opt, layer, k), next;
    next_bound(opt, r, b, &next);
    *b = next;
    return update_range(opt, layer, k, r, state, second);
}

/* After an exactly checked step: the bounds become the values' maxima. */
static int measure_bounds(ibvi_optimizer *opt, int32_t layer, int k,
                          const param_range *r, float *state, float *second)
{
    range_bound *b = bound_of(opt, layer, k);
    const int32_t threads = pass_threads(opt);
    b->param = ibvi__parallel_max_abs(threads, r->param, r->count);
    b->first = ibvi__parallel_max_abs(threads, state, r->count);
    b->second = opt->kind == IBVI_OPT_ADAM
                    ? ibvi__parallel_max_abs(threads, second, r->count)
                    : 0.0;
    return 1;
}

/* ---- deferred factor updates (deferred.h) -------------------------------- */

/* The cost model of a window of B steps with M samples per step, in floats
 * moved per step per row of a factor of rank R (v = 1 with momentum: V is
 * kept). The per-step path reads and writes S (and V) and, drawing ahead,
 * reads the mean and writes theta: 2R(1 + v) + 1 + M. A window of B steps:
 * its flush reads and writes S (and V) once, 2R(1 + v) / B; every step
 * copies G into it (2M), its forward reads S_0 zhat (and V_0 zhat), the
 * mean, on average (B - 1) / 2 earlier steps' G, and writes theta:
 * M (4 + 2v) + (B - 1) M / 2 + 1 in all; the flush's GEMMs write S_0 zhat
 * and V_0 zhat, counted in the forward's reads. The window's memory
 * (ibvi__window_floats, about 3 B M P floats) is capped at the network's
 * parameter floats: the model's gradient of the factor (R / (R + 1) of
 * them) is never stored, so peak memory stays below what the model's
 * parameters, gradients and velocity would take (bench point 4). Returns
 * the B >= 2 of least cost, or 0 when the per-step path costs less. */
static double window_cost(const ibvi_net *net, int32_t B, int32_t M, int v)
{
    double cost = 0.0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->covariance != IBVI__COV_LOWRANK)
            continue;
        const double R = l->rank;
        cost += (double)l->params *
                (B == 0 ? 2.0 * R * (1 + v) + 1 + M
                        : 2.0 * R * (1 + v) / B + M * (4.0 + 2 * v) +
                              (B - 1) * M / 2.0 + 1);
    }
    return cost;
}

static int32_t window_choice(const ibvi_optimizer *opt, int32_t M, int v)
{
    if (opt->window_steps >= 0)
        return opt->window_steps;
    const ibvi_net *net = opt->net;
    int32_t best = 0;
    double best_cost = window_cost(net, 0, M, v);
    for (int32_t B = 2; B <= IBVI__WINDOW_MAX_STEPS; B++) {
        if (ibvi__window_floats(net, B, M) > net->param_floats)
            break;
        const double cost = window_cost(net, B, M, v);
        if (cost < best_cost)
            best = B, best_cost = cost;
    }
    return best;
}

static int32_t window_length(const ibvi_optimizer *opt, int32_t M)
{
    return window_choice(opt, M, opt->momentum != 0.0f);
}

/* 1 when some layer is low rank and none has a rank above the window's. */
static int has_lowrank(const ibvi_net *net)
{
    int lowrank = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        if (net->layers[i]->covariance == IBVI__COV_LOWRANK) {
            if (net->layers[i]->rank > IBVI__WINDOW_MAX_RANK)
                return 0;
            lowrank = 1;
        }
    return lowrank;
}

/* The next forwards will likely draw M samples from the network's
 * generator, as the last one did (plan_presample's test). */
static int can_draw_ahead(const ibvi_net *net, int32_t M)
{
    return net->noise_from_rng && net->noise_samples == M &&
           M <= net->ws_samples && net->noise_size > 0;
}

static void window_release(ibvi_net *net)
{
    if (net->window_owner)
        net->window_owner->window_active = 0;
    net->window_owner = NULL;
    net->window = NULL;
}

/* Leaves the network and the owner exactly as a copy saved and loaded now
 * would be (include/ibvi/io.h: resumed training is bit for bit the saving
 * run's): the pending steps applied to S and V, the noise drawn ahead and
 * the products S_0 zhat, V_0 zhat formed for it discarded (the generator's
 * position was never moved by drawing ahead: that drew from a copy, so the
 * next forward draws the first sample no forward has used), and the
 * owner's bounds invalid, as a loaded optimizer's are: its next step is
 * the exactly checked per-step one, the loaded copy's first, and a window
 * starts afresh after it in both. */
void ibvi__net_settle(ibvi_net *net)
{
    if (!net->window_owner)
        return;
    ibvi_optimizer *owner = net->window_owner;
    ibvi__window_flush(net->window, net, 0);
    window_release(net);
    owner->bounds_valid = 0;
}

void ibvi__net_drop_window(ibvi_net *net)
{
    for (ibvi_optimizer *o = net->optimizers; o; o = o->next_on_net)
        o->net_gone = 1;
    net->optimizers = NULL;
    if (!net->window_owner)
        return;
    net->window->pending = 0;
    net->window->ahead = 0;
    window_release(net);
}

/* The floats of the window storage opt needs for steps of 1..max_samples
 * samples: the largest ibvi__window_floats of the windows window_length
 * may choose (the cost model's for either momentum setting, whose choice
 * depends on it), 0 when it never defers. */
static int64_t window_need(const ibvi_optimizer *opt, int32_t max_samples)
{
    const ibvi_net *net = opt->net;
    if (opt->kind != IBVI_OPT_SGD || opt->window_steps == 0 ||
        !has_lowrank(net))
        return 0;
    if (max_samples > IBVI__WINDOW_MAX_SAMPLES)
        max_samples = IBVI__WINDOW_MAX_SAMPLES;
    int64_t need = 0;
    for (int32_t M = 1; M <= max_samples; M++)
        for (int v = 0; v < 2; v++) {
            const int32_t B = window_choice(opt, M, v);
            const int64_t f = B > 0 ? ibvi__window_floats(net, B, M) : 0;
            need = f > need ? f : need;
        }
    return need;
}

/* Makes opt's window storage hold the windows of steps of up to
 * max_samples samples (none: max_samples 0), settling and replacing a
 * smaller one; IBVI_ERR_NOMEM, and nothing changed, when out of memory. */
static int reserve_window(ibvi_optimizer *opt, int32_t max_samples,
                          const char *fn)
{
    const int64_t need = window_need(opt, max_samples);
    if (need == 0 || (opt->window && opt->window->block_floats >= need))
        return IBVI_OK;
    ibvi__window *w = ibvi__window_create(opt->net, need);
    if (!w)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for the window of deferred "
                          "factor updates (%lld floats)", fn,
                          (long long)need);
    if (opt->window_active)
        ibvi__net_settle(opt->net);
    ibvi__window_free(&opt->allocator, opt->window);
    opt->window = w;
    return IBVI_OK;
}

int ibvi__net_reserve_windows(ibvi_net *net, int32_t max_samples,
                              const char *fn)
{
    for (ibvi_optimizer *o = net->optimizers; o; o = o->next_on_net) {
        const int status = reserve_window(o, max_samples, fn);
        if (status < 0)
            return status;
    }
    return IBVI_OK;
}

int ibvi__net_window_forward(ibvi_net *net, int32_t samples,
                             const float *noise)
{
    if (!net->window_owner)
        return 0;
    if (ibvi__window_matches(net->window, net, samples, noise))
        return 1;
    ibvi__net_settle(net);
    return 0;
}

/* A deferred step's visit: the means update now (with their bounds), a
 * factor range only carries its bounds (the window applies its update). */
static int update_deferred(ibvi_optimizer *opt, int32_t layer, int k,
                           const param_range *r, float *state, float *second)
{
    if (r->fg) {
        range_bound *b = bound_of(opt, layer, k), next;
        next_bound(opt, r, b, &next);
        *b = next;
        return 1;
    }
    return update_with_bounds(opt, layer, k, r, state, second);
}

/* Takes the step through the window when it can (the bounds already prove
 * it finite): 1 when done, 0 to take the per-step path (the caller
 * settles a window still holding steps, and then checks the step
 * exactly, as a copy saved and loaded before it would). */
static int defer_step(ibvi_optimizer *opt)
{
    ibvi_net *net = opt->net;
    const int32_t M = net->grad_samples;
    if (opt->kind != IBVI_OPT_SGD || opt->host_grads || M < 1 ||
        M > IBVI__WINDOW_MAX_SAMPLES || !has_lowrank(net))
        return 0;
    /* Nothing deferred and no noise to draw ahead: the per-step path,
     * which draws the next weights itself, costs less. */
    if (!opt->window_active && !can_draw_ahead(net, M))
        return 0;
    const int32_t B = window_length(opt, M);
    if (B < 1)
        return 0;
    ibvi__window *w = opt->window;
    if (!w || w->capacity != B || w->samples != M ||
        w->mu != opt->momentum || w->nesterov != opt->nesterov) {
        /* A window holding steps settles, and this step, as a loaded
         * copy's first, takes the checked per-step path. */
        if (opt->window_active)
            return 0;
        const int64_t floats = ibvi__window_floats(net, B, M);
        if (!w || w->block_floats < floats) {
            /* Not reserved for this (ibvi_net_reserve): grow it now. */
            ibvi__window *grown = ibvi__window_create(net, floats);
            if (!grown) /* no memory for it: the per-step path needs none */
                return 0;
            ibvi__window_free(&opt->allocator, w);
            w = opt->window = grown;
        }
        ibvi__window_layout(w, net, B, M, opt->state, opt->momentum,
                            opt->nesterov);
    }
    opt->presample = 0;
    walk_ranges(opt, update_deferred);
    ibvi__window_append(w, net, opt->lr);
    net->window_owner = opt;
    net->window = w;
    opt->window_active = 1;
    if (w->pending == w->capacity || w->ahead <= w->pending)
        ibvi__window_flush(w, net, can_draw_ahead(net, M));
    if (w->pending == 0 && w->ahead == 0)
        window_release(net);
    return 1;
}

int ibvi__optimizer_check_step(const struct ibvi_optimizer *opt,
                               const char *fn)
{
    /* The step count would overflow (and Adam's bias correction with it):
     * refuse rather than wrap or saturate, so a count never lies. */
    if (opt->steps >= IBVI__MAX_STEPS)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the optimizer has taken 2^53 steps, the most "
                          "a model file can hold; reset it "
                          "(ibvi_optimizer_reset) to go on", fn);
    return IBVI_OK;
}

int ibvi_optimizer_step(ibvi_optimizer *opt)
{
    return ibvi__optimizer_step(opt, "ibvi_optimizer_step");
}

int ibvi__optimizer_step(struct ibvi_optimizer *opt, const char *fn)
{
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    status = ibvi__optimizer_check_step(opt, fn);
    if (status < 0)
        return status;
    ibvi_net *net = opt->net;
    if (!net->has_gradients && !opt->host_grads)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: no gradients yet (call ibvi_net_backward "
                          "first)", fn);
    /* Another optimizer's deferred steps come first. */
    if (net->window_owner && net->window_owner != opt)
        ibvi__net_settle(net);
    int fast = opt->bounds_valid && opt->bounds_version == net->param_version &&
               walk_ranges(opt, bounds_prove_finite) < 0;
    const int deferred = fast && defer_step(opt);
    if (!deferred && net->window_owner) {
        /* The per-step path reads every factor: settled, the step is the
         * one a copy saved now and loaded would take, checked exactly
         * (ibvi__net_settle). */
        ibvi__net_settle(net);
        fast = 0;
    }
    if (deferred) {
        /* done: the means stepped, the factors' steps are in the window */
    } else if (fast) {
        opt->presample = opt->host_grads ? 0 : plan_presample(net);
        walk_ranges(opt, update_with_bounds);
    } else {
        /* Check that the update keeps every parameter and state value
         * finite (a learning rate far too large overflows), and change
         * nothing if it does not; then apply it. */
        const int32_t bad = walk_ranges(opt, check_range);
        if (bad >= 0)
            return ibvi__fail(
                IBVI_ERR_NONFINITE,
                "%s: non-finite update: the step would make parameters or "
                "optimizer state of layer %d NaN or infinite (learning rate "
                "%g too large?); nothing changed", fn, (int)bad,
                (double)opt->lr);
        opt->presample = opt->host_grads ? 0 : plan_presample(net);
        walk_ranges(opt, update_range);
        walk_ranges(opt, measure_bounds);
        opt->bounds_valid = 1;
    }
    opt->steps++;
    /* Other optimizers of this network must not trust their bounds. */
    net->param_version++;
    opt->bounds_version = net->param_version;
    net->presampled = opt->presample;
    net->presampled_version = net->param_version;
    opt->presample = 0;
    /* A pending backward would use weights that no longer exist. */
    net->forward_valid = 0;
    return IBVI_OK;
}

/* A host's gradients: the ranges read the host's buffers (host_ranges),
 * and a step draws no weights ahead. */
int ibvi__optimizer_step_host(ibvi_optimizer *opt, const char *fn,
                              const ibvi__host_grads *grads)
{
    const ibvi_net *net = opt->net;
    for (int32_t i = 0; i < net->layer_count; i++)
        if (net->layers[i]->covariance == IBVI__COV_DIAGONAL)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: layer %d is mean-field (diagonal); the "
                              "host-gradient steps cover deterministic and "
                              "low-rank layers only", fn, (int)i);
    opt->host_grads = grads;
    const int status = ibvi__optimizer_step(opt, fn);
    opt->host_grads = NULL;
    return status;
}

ibvi_net *ibvi__optimizer_net(const ibvi_optimizer *opt) { return opt->net; }

void ibvi__optimizer_get_info(const ibvi_optimizer *opt,
                              ibvi__optimizer_info *out)
{
    /* The state is read or written next (serialize.c): it must be the
     * per-step one, and so must the factors. */
    if (opt->window_active)
        ibvi__net_settle(opt->net);
    *out = (ibvi__optimizer_info){
        .kind = opt->kind, .lr = opt->lr, .momentum = opt->momentum,
        .nesterov = opt->nesterov, .beta1 = opt->beta1, .beta2 = opt->beta2,
        .eps = opt->eps, .steps = opt->steps,
        .state_floats = opt->state_floats, .state = opt->state,
        .kl_weight = opt->kl_weight};
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
    if (opt->window_active) /* the factors take the deferred steps */
        ibvi__net_settle(opt->net);
    memset(opt->state, 0, (size_t)opt->state_floats * sizeof(float));
    opt->steps = 0;
    opt->bounds_valid = 0;
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
    if (layer->params == 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the layer (%s) has no parameters", fn,
                          layer->ops->name);
    if (kind != IBVI_OPT_SGD && kind != IBVI_OPT_ADAM)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: kind = %d, expected IBVI_OPT_SGD (0) or "
                          "IBVI_OPT_ADAM (1)", fn, (int)kind);
    const ibvi__param_group *w = ibvi__param_weights(layer);
    const ibvi__param_group *b = ibvi__param_biases(layer);
    *weight_mult = kind == IBVI_OPT_SGD ? w->sgd_mult : w->adam_mult;
    *bias_mult = kind == IBVI_OPT_SGD ? b->sgd_mult : b->adam_mult;
    return IBVI_OK;
}

int ibvi_optimizer_set_kl_weight(ibvi_optimizer *opt, float weight)
{
    static const char fn[] = "ibvi_optimizer_set_kl_weight";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    if (!(weight >= 0.0f) || !isfinite(weight))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: weight = %g, expected a finite value >= 0", fn,
                          (double)weight);
    opt->kl_weight = weight;
    return IBVI_OK;
}

int ibvi_optimizer_get_kl_weight(const ibvi_optimizer *opt, float *weight)
{
    static const char fn[] = "ibvi_optimizer_get_kl_weight";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, weight);
    *weight = opt->kl_weight;
    return IBVI_OK;
}

int ibvi_optimizer_set_deferred(ibvi_optimizer *opt, int32_t steps)
{
    static const char fn[] = "ibvi_optimizer_set_deferred";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    if (steps != IBVI_DEFERRED_AUTO && steps != 0 &&
        !(steps >= 2 && steps <= IBVI_DEFERRED_MAX_STEPS))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: steps = %d, expected -1 (the cost model's "
                          "window), 0 (the per-step path) or a window of 2..%d "
                          "steps", fn, (int)steps, IBVI_DEFERRED_MAX_STEPS);
    const int32_t old = opt->window_steps;
    opt->window_steps = steps;
    if (opt->net_gone)
        return IBVI_OK;
    if (steps == 0) { /* the window's memory goes back */
        if (opt->window_active)
            ibvi__net_settle(opt->net);
        ibvi__window_free(&opt->allocator, opt->window);
        opt->window = NULL;
        return IBVI_OK;
    }
    /* A reserved network keeps its no-allocation promise. */
    status = reserve_window(opt, opt->net->ws_samples, fn);
    if (status < 0)
        opt->window_steps = old;
    return status;
}

int ibvi_optimizer_get_deferred(const ibvi_optimizer *opt, int32_t *steps)
{
    static const char fn[] = "ibvi_optimizer_get_deferred";
    int status = check_optimizer(opt, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, steps);
    *steps = opt->window_steps;
    return IBVI_OK;
}
